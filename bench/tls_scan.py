"""External TLS scan of the sidecar's listener with sslyze, at ``min_version`` 1.3 and 1.2.

    python -m bench.tls_scan [--sslyze-python PY] [--min 1.3 --min 1.2] [--json-dir DIR]

For each minimum version a sidecar (``python -m sidecar run``) is started on loopback
with a fresh openssl-made certificate (RSA by default, so that RSA key exchange *could*
be negotiated if the policy allowed it; ``--server-key ec`` for P-256), scanned, and
stopped. sslyze runs as a subprocess of
``--sslyze-python`` (default ``$SSLYZE_PYTHON``, else this interpreter): sslyze pins an
older ``cryptography`` than the sidecar, so it usually lives in its own virtualenv.

Printed per version: accepted protocols and suites (with the ECDHE group), the checks
sslyze makes (compression, Heartbleed, CCS injection, ROBOT, renegotiation, fallback SCSV,
EMS, early data, resumption, curves, HSTS), Mozilla's profile compliance, and a verdict on
the sidecar's own promises: nothing below the configured minimum, only forward-secret
AEAD suites. Exit status 1 when a promise is broken. Each scan is bounded (``--timeout``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROTOCOLS = (("ssl_2_0", "SSL 2.0"), ("ssl_3_0", "SSL 3.0"), ("tls_1_0", "TLS 1.0"),
             ("tls_1_1", "TLS 1.1"), ("tls_1_2", "TLS 1.2"), ("tls_1_3", "TLS 1.3"))
SCAN_COMMANDS = ("--certinfo", "--sslv2", "--sslv3", "--tlsv1", "--tlsv1_1", "--tlsv1_2",
                 "--tlsv1_3", "--compression", "--reneg", "--heartbleed", "--robot",
                 "--openssl_ccs", "--fallback", "--elliptic_curves", "--resum",
                 "--early_data", "--http_headers", "--ems")
AEAD_MARKERS = ("_GCM_", "_CHACHA20_POLY1305", "_CCM")


@dataclass
class Findings:
    """What one sslyze scan found, reduced to what the sidecar promises and a few extras."""

    accepted_protocols: list[str] = field(default_factory=list)
    suites: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    """protocol -> [(IANA suite name, "ECDH X25519")]"""
    checks: dict[str, str] = field(default_factory=dict)
    mozilla: str = ""

    def problems(self, min_version: str) -> list[str]:
        """Broken promises: a protocol below ``min_version``, a suite that is not
        (EC)DHE + AEAD, compression, client renegotiation, Heartbleed, CCS, ROBOT."""
        out: list[str] = []
        allowed = {"TLS 1.3"} | ({"TLS 1.2"} if min_version == "1.2" else set())
        for proto in self.accepted_protocols:
            if proto not in allowed:
                out.append(f"{proto} accepted with min_version {min_version}")
        for proto, suites in self.suites.items():
            for name, kex in suites:
                if proto == "TLS 1.3":
                    aead, forward_secret = True, kex.startswith("ECDH")
                else:
                    aead = any(m in name for m in AEAD_MARKERS)
                    forward_secret = name.startswith("TLS_ECDHE_") and kex.startswith("ECDH")
                if not (aead and forward_secret):
                    out.append(f"{proto} suite {name} ({kex}) is not ECDHE + AEAD")
        for check, bad in (("compression", "supported"), ("client renegotiation", "allowed"),
                           ("heartbleed", "VULNERABLE"), ("ccs injection", "VULNERABLE")):
            if self.checks.get(check) == bad:
                out.append(f"{check}: {bad}")
        if self.checks.get("robot", "").startswith("VULNERABLE"):
            out.append(f"robot: {self.checks['robot']}")
        return out


def run_sslyze(python: str, host: str, port: int, ca_file: Path, workdir: Path,
               mozilla: str | None = None, timeout: float = 240.0) -> tuple[dict[str, Any], str]:
    """Run sslyze against ``host:port``; return its JSON result and its console text."""
    out = workdir / f"sslyze-{port}.json"
    argv = [python, "-m", "sslyze", f"{host}:{port}", f"--json_out={out}",
            f"--certinfo_ca_file={ca_file}", *SCAN_COMMANDS,
            f"--mozilla_config={mozilla or 'disable'}"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if not out.exists():
        raise RuntimeError(f"sslyze wrote no result (exit {proc.returncode}):\n"
                           f"{proc.stdout}\n{proc.stderr}")
    return json.loads(out.read_text()), proc.stdout


def _result(scan: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    entry = scan.get(name) or {}
    if entry.get("status") != "COMPLETED":
        return {}
    result = entry.get("result")
    return result if isinstance(result, dict) else {}


def findings(document: Mapping[str, Any], console: str = "") -> Findings:
    """Reduce sslyze's JSON (``--json_out``) for one server to :class:`Findings`.

    Raises:
        RuntimeError: sslyze could not connect to the server.
    """
    server = document["server_scan_results"][0]
    if server.get("scan_status") != "COMPLETED":
        raise RuntimeError(f"scan failed: {server.get('connectivity_error_trace')}")
    scan = server["scan_result"]
    found = Findings()
    for key, label in PROTOCOLS:
        result = _result(scan, f"{key}_cipher_suites")
        accepted = result.get("accepted_cipher_suites") or []
        if accepted:
            found.accepted_protocols.append(label)
            found.suites[label] = [(a["cipher_suite"]["name"], _kex(a.get("ephemeral_key")))
                                   for a in accepted]
    checks = found.checks
    checks["compression"] = ("supported" if _result(scan, "tls_compression").get(
        "supports_compression") else "off")
    checks["heartbleed"] = ("VULNERABLE" if _result(scan, "heartbleed").get(
        "is_vulnerable_to_heartbleed") else "not vulnerable")
    checks["ccs injection"] = ("VULNERABLE" if _result(scan, "openssl_ccs_injection").get(
        "is_vulnerable_to_ccs_injection") else "not vulnerable")
    checks["robot"] = str(_result(scan, "robot").get("robot_result", "?"))
    reneg = _result(scan, "session_renegotiation")
    checks["client renegotiation"] = (
        "allowed" if reneg.get("is_vulnerable_to_client_renegotiation_dos") else "refused")
    checks["secure renegotiation ext"] = str(reneg.get("supports_secure_renegotiation"))
    checks["fallback SCSV"] = str(_result(scan, "tls_fallback_scsv").get(
        "supports_fallback_scsv"))
    checks["extended master secret"] = str(_result(scan, "tls_extended_master_secret").get(
        "supports_ems_extension"))
    checks["TLS 1.3 early data"] = str(_result(scan, "tls_1_3_early_data").get(
        "supports_early_data"))
    resum = _result(scan, "session_resumption")
    if resum:
        checks["TLS 1.2 resumption: session IDs"] = (
            f"{resum['session_id_resumption_result']} "
            f"({resum['session_id_successful_resumptions_count']}/"
            f"{resum['session_id_attempted_resumptions_count']})")
        checks["TLS 1.2 resumption: tickets"] = (
            f"{resum['tls_ticket_resumption_result']} "
            f"({resum['tls_ticket_successful_resumptions_count']}/"
            f"{resum['tls_ticket_attempted_resumptions_count']})")
    curves = _result(scan, "elliptic_curves").get("supported_curves") or []
    checks["ECDH groups"] = ", ".join(c["name"] for c in curves)
    hsts = _result(scan, "http_headers").get("strict_transport_security_header")
    checks["HSTS"] = (f"max-age={hsts['max_age']} includeSubDomains={hsts['include_subdomains']}"
                      if hsts else "absent")
    cert = _result(scan, "certificate_info").get("certificate_deployments") or []
    if cert:
        trusted = [r for r in cert[0].get("path_validation_results", [])
                   if r.get("trust_store", {}).get("name", "").startswith("Supplied")]
        checks["certificate chain (supplied CA)"] = (
            "valid" if trusted and trusted[0].get("was_validation_successful") else "INVALID")
    marker = console.find("COMPLIANCE AGAINST")
    if marker >= 0:
        found.mozilla = "\n".join(line.rstrip() for line in console[marker:].splitlines()[2:]
                                  if line.strip())
    return found


def _kex(key: Mapping[str, Any] | None) -> str:
    if not key:
        return "none"
    curve = key.get("curve_name")
    return f"{key.get('type_name')} {curve or key.get('size')}"


def report(min_version: str, found: Findings) -> str:
    lines = [f"== server.tls.min_version: \"{min_version}\" ==",
             "protocols accepted: " + (", ".join(found.accepted_protocols) or "none"),
             "protocols refused:  " + ", ".join(
                 label for _, label in PROTOCOLS if label not in found.accepted_protocols)]
    for proto, suites in found.suites.items():
        lines.append(f"{proto} suites:")
        lines.extend(f"    {name:<48} {kex}" for name, kex in suites)
    lines.extend(f"{name + ':':<34}{value}" for name, value in found.checks.items())
    if found.mozilla:
        lines.append("Mozilla profile:")
        lines.extend(f"    {line.strip()}" for line in found.mozilla.splitlines())
    problems = found.problems(min_version)
    lines.append("VERDICT: " + ("PASS - nothing below the minimum, only ECDHE + AEAD suites"
                                if not problems else "FAIL\n    " + "\n    ".join(problems)))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from bench.tls_pki import make_pki, running_sidecar, sidecar_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sslyze-python", default=os.environ.get("SSLYZE_PYTHON",
                                                                  sys.executable))
    parser.add_argument("--min", action="append", choices=["1.2", "1.3"], dest="mins")
    parser.add_argument("--timeout", type=float, default=240.0, help="per scan, seconds")
    parser.add_argument("--json-dir", type=Path, help="also keep sslyze's JSON here")
    parser.add_argument("--server-key", choices=["rsa", "ec"], default="rsa",
                        help="server key type: rsa (default: RSA key exchange would be "
                             "negotiable, so its refusal is tested) or ec (P-256, what "
                             "Mozilla's modern profile asks for)")
    args = parser.parse_args(argv)
    failed = False
    with tempfile.TemporaryDirectory(prefix="sidecar-tls-scan-") as tmp:
        workdir = Path(tmp)
        pki = make_pki(workdir / "pki", server_key=args.server_key)
        tls = {"cert_file": str(pki.server_cert), "key_file": str(pki.server_key)}
        for min_version in args.mins or ["1.3", "1.2"]:
            config = sidecar_config("http://127.0.0.1:9", {**tls, "min_version": min_version})
            with running_sidecar(config, workdir, f"scan-{min_version}") as sidecar:
                document, console = run_sslyze(
                    args.sslyze_python, sidecar.host, sidecar.port, pki.ca, workdir,
                    mozilla="modern" if min_version == "1.3" else "intermediate",
                    timeout=args.timeout)
            if args.json_dir:
                args.json_dir.mkdir(parents=True, exist_ok=True)
                (args.json_dir / f"sslyze-min-{min_version}.json").write_text(
                    json.dumps(document, indent=1))
            found = findings(document, console)
            print(report(min_version, found), end="\n\n", flush=True)
            failed = failed or bool(found.problems(min_version))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
