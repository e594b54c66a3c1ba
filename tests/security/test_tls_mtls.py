"""mTLS: client certificates at the handshake, ``require: {mtls: true}`` rules, and
certificate-bound tokens (RFC 8705 ``cnf."x5t#S256"``).

The handshake tests need nothing but ``sidecar.tls``. The rule and binding tests go through
the whole pipeline and so need the lead's integration: ``app.py`` building the
authenticator (skipped with "INTEGRATION PENDING: auth" until then) and ``pipeline.py``
taking the certificate from ``sidecar.tls.client_cert_of`` (``needs_client_cert_wiring``).
"""

from __future__ import annotations

import datetime
import json
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.fixtures.proxy import Backend, base_config, problem
from tests.fixtures.tls import (
    ClientIdentity,
    RunningTLSSidecar,
    StartTLSSidecar,
    TLSMaterial,
    handshake,
    https_get,
    needs_client_cert_wiring,
)
from tests.fixtures.tokens import ISSUER, MakeToken, SigningKeyPair, jwt_issuer_config

HANDSHAKE_REFUSED = (ssl.SSLError, ConnectionError)


async def _mtls_sidecar(backend: Backend, tls_material: TLSMaterial,
                        start_tls_sidecar: StartTLSSidecar, client_cert: str,
                        **sections: Any) -> RunningTLSSidecar:
    tls = tls_material.tls_section(client_ca_file=str(tls_material.ca_file),
                                   client_cert=client_cert)
    return await start_tls_sidecar(base_config(backend.url, server={"tls": tls}, **sections))


# --- at the handshake -------------------------------------------------------------------

async def test_required_client_cert_missing_fails_the_handshake(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await _mtls_sidecar(backend, tls_material, start_tls_sidecar, "required")

    with pytest.raises(HANDSHAKE_REFUSED):
        await handshake(sidecar.host, sidecar.port, tls_material.client_context())
    with pytest.raises(HANDSHAKE_REFUSED):
        await https_get(sidecar.host, sidecar.port, tls_material.client_context())
    assert backend.requests == []


async def test_required_client_cert_present_is_served(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await _mtls_sidecar(backend, tls_material, start_tls_sidecar, "required")

    status, _, _ = await https_get(sidecar.host, sidecar.port,
                                   tls_material.client_context(tls_material.client_a))

    assert status == 200


def _leaf(tls_material: TLSMaterial, tmp_path: Path, *, eku: list[x509.ObjectIdentifier],
          expired: bool = False) -> ClientIdentity:
    """A client certificate of the test CA with a chosen EKU / validity, key included."""
    ca_key = serialization.load_pem_private_key(tls_material.ca.private_key_pem.bytes(), None)
    ca_cert = x509.load_pem_x509_certificate(tls_material.ca.cert_pem.bytes())
    assert isinstance(ca_key, rsa.RSAPrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    start = now - datetime.timedelta(days=30 if expired else 1)
    builder = (x509.CertificateBuilder()
               .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "odd")]))
               .issuer_name(ca_cert.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number())
               .not_valid_before(start).not_valid_after(start + datetime.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.ExtendedKeyUsage(eku), critical=False))
    cert = builder.sign(ca_key, hashes.SHA256())
    pem = tmp_path / "odd.pem"
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
                    + cert.public_bytes(serialization.Encoding.PEM))
    return ClientIdentity("odd", pem, cert.public_bytes(serialization.Encoding.DER))


@pytest.mark.parametrize("mode", ["required", "optional"])
@pytest.mark.parametrize("kind", ["another_ca", "expired", "server_auth_only"])
async def test_unacceptable_client_cert_fails_the_handshake_even_when_optional(
        kind: str, mode: str, backend: Backend, tls_material: TLSMaterial,
        start_tls_sidecar: StartTLSSidecar, tmp_path: Path) -> None:
    # With CERT_OPTIONAL OpenSSL still aborts on a certificate that does not verify
    # (chain, validity dates, clientAuth purpose): a connection carries no client
    # certificate or a verified one, never an unverified one.
    if kind == "another_ca":
        client = tls_material.rogue_client
    elif kind == "expired":
        client = _leaf(tls_material, tmp_path, eku=[ExtendedKeyUsageOID.CLIENT_AUTH],
                       expired=True)
    else:
        client = _leaf(tls_material, tmp_path, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    sidecar = await _mtls_sidecar(backend, tls_material, start_tls_sidecar, mode)

    with pytest.raises(HANDSHAKE_REFUSED):
        await https_get(sidecar.host, sidecar.port, tls_material.client_context(client))
    assert backend.requests == []


async def test_a_fresh_client_auth_cert_of_the_ca_is_accepted(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar,
        tmp_path: Path) -> None:
    # The positive control for the certificates built by _leaf above.
    client = _leaf(tls_material, tmp_path, eku=[ExtendedKeyUsageOID.CLIENT_AUTH])
    sidecar = await _mtls_sidecar(backend, tls_material, start_tls_sidecar, "required")

    status, _, _ = await https_get(sidecar.host, sidecar.port,
                                   tls_material.client_context(client))

    assert status == 200


async def test_optional_client_cert_absent_is_served(
        backend: Backend, tls_material: TLSMaterial, start_tls_sidecar: StartTLSSidecar) -> None:
    sidecar = await _mtls_sidecar(backend, tls_material, start_tls_sidecar, "optional")

    status, _, _ = await https_get(sidecar.host, sidecar.port, tls_material.client_context())

    assert status == 200


# --- through the pipeline ---------------------------------------------------------------

RULES: dict[str, Any] = {"rules": [
    {"name": "health", "path": "/v1/health", "methods": ["GET"], "public": True},
    {"name": "mtls-only", "path": "/v1/settlements/**", "methods": ["GET"],
     "require": {"all_scopes": ["payments:read"], "mtls": True}},
    {"name": "payments", "path": "/v1/payments/**", "methods": ["GET"],
     "require": {"all_scopes": ["payments:read"]}},
]}


@pytest.fixture
def jwks_file(tmp_path: Path, rsa_signing_key: SigningKeyPair) -> Path:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [rsa_signing_key.public_jwk]}))
    return path


@pytest.fixture
async def authn_sidecar(backend: Backend, tls_material: TLSMaterial,
                        start_tls_sidecar: StartTLSSidecar, jwks_file: Path
                        ) -> RunningTLSSidecar:
    sidecar = await _mtls_sidecar(
        backend, tls_material, start_tls_sidecar, "optional", rbac=RULES,
        auth={"issuers": [jwt_issuer_config(jwks_file=str(jwks_file))]})
    if not sidecar.has_authenticator():
        pytest.skip("INTEGRATION PENDING: auth - sidecar/app.py does not build the "
                    "authenticator from the auth section yet")
    return sidecar


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_mtls_rule_denies_a_request_without_client_cert_with_403(
        authn_sidecar: RunningTLSSidecar, tls_material: TLSMaterial, backend: Backend,
        make_token: MakeToken) -> None:
    status, _, body = await https_get(
        authn_sidecar.host, authn_sidecar.port, tls_material.client_context(),
        "/v1/settlements/s-1", _bearer(make_token()))

    assert status == 403
    assert problem(body)["code"] == "forbidden"
    assert backend.requests == []


@needs_client_cert_wiring
async def test_mtls_rule_allows_the_same_request_with_a_verified_client_cert(
        authn_sidecar: RunningTLSSidecar, tls_material: TLSMaterial, backend: Backend,
        make_token: MakeToken) -> None:
    status, _, _ = await https_get(
        authn_sidecar.host, authn_sidecar.port,
        tls_material.client_context(tls_material.client_a), "/v1/settlements/s-1",
        _bearer(make_token()))

    assert status == 200
    assert len(backend.requests) == 1


def _bound_token(make_token: MakeToken, thumbprint: str) -> str:
    return make_token(iss=ISSUER, cnf={"x5t#S256": thumbprint})


@needs_client_cert_wiring
async def test_bound_token_with_its_certificate_is_accepted(
        authn_sidecar: RunningTLSSidecar, tls_material: TLSMaterial, backend: Backend,
        make_token: MakeToken) -> None:
    token = _bound_token(make_token, tls_material.client_a.thumbprint)

    status, _, _ = await https_get(
        authn_sidecar.host, authn_sidecar.port,
        tls_material.client_context(tls_material.client_a), "/v1/payments/p-1",
        _bearer(token))

    assert status == 200
    assert len(backend.requests) == 1


@needs_client_cert_wiring
async def test_bound_token_with_another_valid_certificate_is_401(
        authn_sidecar: RunningTLSSidecar, tls_material: TLSMaterial, backend: Backend,
        make_token: MakeToken) -> None:
    token = _bound_token(make_token, tls_material.client_a.thumbprint)

    status, headers, body = await https_get(
        authn_sidecar.host, authn_sidecar.port,
        tls_material.client_context(tls_material.client_b), "/v1/payments/p-1",
        _bearer(token))

    assert status == 401
    assert problem(body)["code"] == "token_invalid"
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert backend.requests == []


async def test_bound_token_without_any_certificate_is_401(
        authn_sidecar: RunningTLSSidecar, tls_material: TLSMaterial, backend: Backend,
        make_token: MakeToken) -> None:
    token = _bound_token(make_token, tls_material.client_a.thumbprint)

    status, _, body = await https_get(
        authn_sidecar.host, authn_sidecar.port, tls_material.client_context(),
        "/v1/payments/p-1", _bearer(token))

    assert status == 401
    assert problem(body)["code"] == "token_invalid"
    assert backend.requests == []


@needs_client_cert_wiring
async def test_bound_token_cached_for_one_connection_is_rechecked_on_another(
        authn_sidecar: RunningTLSSidecar, tls_material: TLSMaterial, backend: Backend,
        make_token: MakeToken) -> None:
    # The verified-token cache must not carry a binding over to a different certificate.
    token = _bound_token(make_token, tls_material.client_a.thumbprint)
    host, port = authn_sidecar.host, authn_sidecar.port

    first, _, _ = await https_get(host, port, tls_material.client_context(
        tls_material.client_a), "/v1/payments/p-1", _bearer(token))
    second, _, _ = await https_get(host, port, tls_material.client_context(
        tls_material.client_b), "/v1/payments/p-1", _bearer(token))

    assert (first, second) == (200, 401)
    assert len(backend.requests) == 1
