"""``sidecar audit verify FILE... [--key-env VAR] [--strict]``: check audit files' hash chain."""

from __future__ import annotations

import argparse
import os
import sys

from sidecar.audit.verify import Report, verify_files


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("audit", help="audit log tools",
                            description="Tools for the audit log.")
    actions = parser.add_subparsers(dest="audit_command", metavar="ACTION",
                                    parser_class=type(parser))
    actions.required = True
    verify = actions.add_parser(
        "verify", help="verify audit files' hash chain; report the first broken link",
        description="Verify one or more audit files in order (rotated backups oldest first, "
                    "then the current file): every chain's hashes, seq/prev continuity across "
                    "the files and checkpoints. Exit 0 when intact, 1 at the first broken "
                    "link (file, line, seq and whether a line was edited, deleted, inserted, "
                    "reordered or the file truncated).")
    verify.add_argument("files", nargs="+", metavar="FILE",
                        help="audit files, oldest first (e.g. audit.jsonl.2 audit.jsonl.1 "
                             "audit.jsonl)")
    verify.add_argument("--key-env", metavar="VAR",
                        help="environment variable holding audit.chain_key (HMAC chains)")
    verify.add_argument("--strict", action="store_true",
                        help="also require every chain to start at seq 1 and end with a "
                             "shutdown checkpoint")
    verify.set_defaults(func=run_verify)


def _key(var: str | None) -> bytes | None:
    if var is None:
        return b""
    value = os.environ.get(var)
    if not value:
        return None
    return value.encode("utf-8")


def summary(report: Report) -> list[str]:
    out = [f"{report.files} file(s), {report.lines} event(s), {len(report.chains)} chain(s)"]
    for st in report.chains.values():
        end = ("ends with a shutdown checkpoint" if st.closed
               else f"last checkpoint at seq {st.last_checkpoint_seq}" if st.checkpoints
               else "no checkpoint")
        out.append(f"chain {st.chain}: seq {st.first_seq}-{st.last_seq}, "
                   f"{st.checkpoints} checkpoint(s), {end}")
    return out


def run_verify(args: argparse.Namespace) -> int:
    key = _key(args.key_env)
    if key is None:
        print(f"sidecar audit verify: environment variable {args.key_env} is not set or empty",
              file=sys.stderr)
        return 1
    try:
        report = verify_files(args.files, key, strict=args.strict)
    except OSError as exc:
        print(f"sidecar audit verify: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return 1
    for warning in report.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if report.broken is not None:
        print(f"FAIL: {report.broken}")
        for line in summary(report)[:1]:
            print(f"  verified before the break: {line}")
        return 1
    print("OK: " + summary(report)[0])
    for line in summary(report)[1:]:
        print(f"  {line}")
    return 0
