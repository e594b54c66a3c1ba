"""What the pipeline learns from a client certificate: RFC 8705 thumbprint, subject, SANs,
and that the per-connection memo does not outlive its connections."""

from __future__ import annotations

import base64
import datetime
import gc
import hashlib
import ipaddress

import aiohttp
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

import sidecar.tls
from sidecar.config.server import TLSConfig
from sidecar.tls import ServerTLS, client_cert_from_der, client_cert_of
from tests.fixtures.tls import TLSMaterial
from tests.support import free_port


def _self_signed(sans: list[x509.GeneralName]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Merchant A, Inc."),
                      x509.NameAttribute(NameOID.COMMON_NAME, "merchant-a")])
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1)))
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_thumbprint_is_base64url_unpadded_sha256_of_the_der() -> None:
    der = _self_signed([])

    cert = client_cert_from_der(der)

    expected = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")
    assert cert.sha256_thumbprint == expected
    assert len(cert.sha256_thumbprint) == 43
    assert not set(cert.sha256_thumbprint) & set("+/=")


def test_subject_is_rfc4514_with_escaping_and_sans_are_typed() -> None:
    der = _self_signed([
        x509.DNSName("merchant-a.example"),
        x509.UniformResourceIdentifier("spiffe://payments.example/merchant-a"),
        x509.RFC822Name("ops@merchant-a.example"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        x509.RegisteredID(x509.ObjectIdentifier("1.2.3.4")),  # not an identity: left out
    ])

    cert = client_cert_from_der(der)

    assert cert.subject == r"CN=merchant-a,O=Merchant A\, Inc."
    assert cert.sans == ("DNS:merchant-a.example", "URI:spiffe://payments.example/merchant-a",
                         "email:ops@merchant-a.example", "IP:2001:db8::1")


def test_certificate_without_san_extension_has_no_sans() -> None:
    assert client_cert_from_der(_self_signed([])).sans == ()


async def test_per_connection_memo_is_released_with_its_connections(
        tls_material: TLSMaterial) -> None:
    holder = ServerTLS(TLSConfig(cert_file=str(tls_material.server_cert),
                                 key_file=str(tls_material.server_key),
                                 client_ca_file=str(tls_material.ca_file)))

    sizes: list[int] = []

    async def handler(request: web.BaseRequest) -> web.StreamResponse:
        cert = client_cert_of(request.transport)
        sizes.append(len(sidecar.tls._by_connection))
        return web.Response(text=cert.sha256_thumbprint if cert else "-")

    port = free_port()
    runner = web.ServerRunner(web.Server(handler, access_log=None))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=holder.listener).start()
    before = len(sidecar.tls._by_connection)
    try:
        ctx = tls_material.client_context(tls_material.client_b)
        for _ in range(20):  # 20 connections, closed after one request each
            connector = aiohttp.TCPConnector(ssl=ctx, force_close=True)
            async with aiohttp.ClientSession(connector=connector) as session, \
                    session.get(f"https://127.0.0.1:{port}/") as response:
                assert await response.text() == tls_material.client_b.thumbprint
    finally:
        await runner.cleanup()
    gc.collect()

    assert min(sizes) > before, "the memo was never used"
    assert len(sidecar.tls._by_connection) <= before
