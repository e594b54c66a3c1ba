"""``sidecar sign`` as a subprocess; its output, sent as headers, passes the stage."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.fixtures.sigkeys import FrozenClock, SigKeys

pytestmark = pytest.mark.slow  # one CLI subprocess per call

BODY = b'{"amount": 1200, "currency": "EUR"}'


def sign(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sidecar", "sign", *args],
                          capture_output=True, text=stdin is None, input=stdin, timeout=60,
                          check=False)


def headers_of(output: str) -> dict[str, str]:
    headers = {}
    for line in output.splitlines():
        name, _, value = line.partition(": ")
        headers[name] = value
    return headers


@pytest.fixture
async def rig(make_sig_rig: Any) -> Any:
    return await make_sig_rig(clock=FrozenClock(time.time() + 1))


async def test_signed_post_with_data_file_is_accepted(rig: Any, sigkeys: SigKeys,
                                                      tmp_path: Path) -> None:
    body_file = tmp_path / "refund.json"
    body_file.write_bytes(BODY)
    url = rig.url("/v1/payments/p-1/refunds?reason=duplicate")
    result = sign("--key", str(sigkeys.make("a-ed", "ed25519").private_pem), "--keyid", "a-ed",
                  "-H", "Content-Type: application/json", "-H", "Authorization: Bearer tok",
                  "--data", f"@{body_file}", "POST", url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["Content-Digest", "Signature-Input",
                                                      "Signature"]
    headers = headers_of(result.stdout)
    assert ";nonce=" in headers["Signature-Input"]
    headers.update({"Content-Type": "application/json", "Authorization": "Bearer tok"})
    status, answer = await rig.send("POST", "/v1/payments/p-1/refunds?reason=duplicate",
                                    headers, BODY)
    assert (status, answer) == (200, {"keyid": "a-ed"})
    # The same output twice is a replay.
    assert (await rig.send("POST", "/v1/payments/p-1/refunds?reason=duplicate", headers,
                           BODY))[1]["code"] == "signature_replayed"


async def test_get_without_body_prints_no_digest(rig: Any, sigkeys: SigKeys) -> None:
    result = sign("--key", str(sigkeys.make("a-p256", "ecdsa-p256-sha256").private_pem),
                  "--keyid", "a-p256", "GET", rig.url("/v1/payments/p-1"))
    assert result.returncode == 0, result.stderr
    headers = headers_of(result.stdout)
    assert list(headers) == ["Signature-Input", "Signature"]
    assert 'alg="ecdsa-p256-sha256"' in headers["Signature-Input"]
    assert await rig.send("GET", "/v1/payments/p-1", headers) == (200, {"keyid": "a-p256"})


async def test_hmac_key_file_stdin_body_and_no_nonce(make_sig_rig: Any, sigkeys: SigKeys) -> None:
    rig = await make_sig_rig(clock=FrozenClock(time.time() + 1), require_nonce=False)
    result = sign("--key", str(sigkeys.hmac_file()), "--keyid", "b-hmac", "--no-nonce",
                  "-H", "Content-Type: text/plain", "--data", "@-", "PUT", rig.url("/v1/n"),
                  stdin=b"plain body")
    assert result.returncode == 0, result.stderr
    headers = headers_of(result.stdout.decode())
    assert "nonce" not in headers["Signature-Input"]
    assert 'alg="hmac-sha256"' in headers["Signature-Input"]
    headers["Content-Type"] = "text/plain"
    assert await rig.send("PUT", "/v1/n", headers, b"plain body", client_id="merchant-b") == (
        200, {"keyid": "b-hmac"})


async def test_explicit_covered_list(make_sig_rig: Any, sigkeys: SigKeys) -> None:
    rig = await make_sig_rig(clock=FrozenClock(time.time() + 1),
                             covered=["@method", "@authority", "@path"])
    result = sign("--key", str(sigkeys.make("a-ed", "ed25519").private_pem), "--keyid", "a-ed",
                  "--covered", '@method, @authority, @path, "@query-param";name="id"',
                  "--label", "mine", "DELETE", rig.url("/v1/x?id=7"))
    assert result.returncode == 0, result.stderr
    headers = headers_of(result.stdout)
    assert headers["Signature-Input"].startswith(
        'mine=("@method" "@authority" "@path" "@query-param";name="id")')
    assert await rig.send("DELETE", "/v1/x?id=7", headers) == (200, {"keyid": "a-ed"})


@pytest.mark.parametrize(("args", "message"), [
    (["--covered", "@method,@target-uri,content-type"], "covered header 'content-type'"),
    (["-H", "no colon"], "must be 'Name: value'"),
    (["-H", "A: 1", "-H", "a: 2"], "given twice"),
    (["--data", "@/nonexistent/body"], "No such file"),
], ids=["covered header not given", "bad header", "header twice", "missing data file"])
def test_user_errors_exit_1(args: list[str], message: str, sigkeys: SigKeys) -> None:
    result = sign("--key", str(sigkeys.make("a-ed", "ed25519").private_pem), "--keyid", "a-ed",
                  *args, "POST", "http://127.0.0.1:1/x")
    assert result.returncode == 1
    assert message in result.stderr and result.stdout == ""


def test_bad_key_and_url_exit_1(sigkeys: SigKeys, tmp_path: Path) -> None:
    (tmp_path / "junk").write_text("nope")
    assert sign("--key", str(tmp_path / "junk"), "--keyid", "k", "GET",
                "http://h/").returncode == 1
    ed = str(sigkeys.make("a-ed", "ed25519").private_pem)
    result = sign("--key", ed, "--keyid", "k", "--alg", "rsa-pss-sha512", "GET", "http://h/")
    assert result.returncode == 1 and "does not fit alg rsa-pss-sha512" in result.stderr
    assert sign("--key", ed, "--keyid", "k", "GET", "/relative").returncode == 1


def test_usage_errors_exit_2_and_help_exits_0(sigkeys: SigKeys) -> None:
    assert sign("GET", "http://h/").returncode == 2
    result = sign("--help")
    assert result.returncode == 0 and "--no-nonce" in result.stdout
