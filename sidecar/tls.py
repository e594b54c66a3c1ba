"""The public listener's TLS: the server context, its hot reload, and the client certificate.

* :func:`build_server_context` turns ``server.tls`` into a hardened ``ssl.SSLContext``:
  TLS 1.3 only by default; with ``min_version: "1.2"`` TLS 1.2 is added with ECDHE key
  exchange and AEAD ciphers only. No compression, no renegotiation, no session tickets
  (see "Session resumption" below), ALPN ``http/1.1``, client certificates verified
  against ``client_ca_file`` when it is set.
* :class:`ServerTLS` owns the live context. The listening socket is given
  :attr:`ServerTLS.listener`, which wraps every *new* connection with the current context;
  :meth:`ServerTLS.reload` builds a complete new context from the files and swaps it in
  with one assignment. A certificate/key/CA that does not load is rejected and logged and
  the running context stays. Connections already open keep the context they started with.
  :meth:`ServerTLS.start` runs a cheap poll of the files' ``stat`` so a rotated
  certificate (cert-manager, a Kubernetes Secret volume) is picked up without a signal.
* :func:`client_cert_of` gives the pipeline the verified client certificate of a
  connection as a :class:`ClientCert` (subject, SANs, RFC 8705 ``x5t#S256``), computed
  once per connection.

Session resumption: no session tickets at all. TLS 1.2 tickets are off
(``OP_NO_TICKET``): a ticket is the session's master secret encrypted under a key that
lives as long as the TLS context, and it crosses the wire, so whoever later obtains that
one key decrypts every recorded session that used a ticket: forward secrecy would end at
the ticket key. TLS 1.3 tickets are off too (``num_tickets = 0``), so TLS 1.3 never
resumes: a client may resume in ``psk_ke`` mode, which has no ECDHE, and with
``--workers N`` each process has its own ticket key, so most resumptions would miss
anyway. What remains is TLS 1.2 session-ID resumption from OpenSSL's in-memory,
per-context cache (entries live up to OpenSSL's default 2 hours). The stdlib can neither
turn it off nor shorten it; nothing of it crosses the wire, no key outlives the entries
it holds, and every reload builds a new context with an empty cache, so a session from
before a client-CA change is never resumed after it. The cost of no tickets is a full
handshake for each new connection (one signature, one ECDHE); clients of a payments API
keep connections alive, and ``bench/tls_bench.py`` measures the handshake rate.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import hashlib
import ipaddress
import logging
import os
import ssl
import weakref
from dataclasses import dataclass
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from sidecar.config.loader import ConfigError, ConfigIssue
from sidecar.config.server import TLSConfig
from sidecar.context import ClientCert

log = logging.getLogger("sidecar.tls")

TLS12_CIPHERS: Final = ":".join((
    # Mozilla "intermediate" TLS 1.2 list: ECDHE key exchange (forward secrecy) with AEAD
    # ciphers only. No CBC (Lucky13, POODLE-style padding oracles), no static-RSA key
    # exchange (no forward secrecy, ROBOT), no DHE (weak/custom groups, Raccoon).
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
))
"""TLS 1.2 suites offered with ``min_version: "1.2"``. TLS 1.3 suites are OpenSSL's
defaults (AES-256-GCM, CHACHA20-POLY1305, AES-128-GCM): all AEAD, all (EC)DHE."""

ALPN: Final = ("http/1.1",)
WATCH_INTERVAL: Final = 5.0
"""Seconds between two ``stat`` polls of the certificate, key and client-CA files."""

_PREFIX = "server.tls"


class TLSSetupError(ConfigError):
    """A ``server.tls`` file cannot be read or loaded (issues name the field and cause)."""


@dataclass(frozen=True, slots=True)
class CertInfo:
    """What is logged about a loaded server certificate (never key material)."""

    subject: str
    not_after: datetime.datetime | None
    sha256: str
    """Hex SHA-256 of the leaf DER, as ``openssl x509 -fingerprint -sha256`` prints it."""

    def __str__(self) -> str:
        after = self.not_after.isoformat() if self.not_after is not None else "?"
        return f"subject={self.subject!r} not_after={after} sha256={self.sha256}"


def build_server_context(cfg: TLSConfig) -> ssl.SSLContext:
    """A server ``SSLContext`` for ``cfg`` (see the module docstring for the policy).

    Raises:
        TLSSetupError: a file is missing/unreadable, the certificate chain or key does not
            load, the key does not match the certificate, or the client CA has no
            certificate. Each issue is located at ``server.tls.<field>``.
    """
    return _build(cfg)[0]


def _build(cfg: TLSConfig) -> tuple[ssl.SSLContext, CertInfo]:
    for name, path in (("cert_file", cfg.cert_file), ("key_file", cfg.key_file),
                       ("client_ca_file", cfg.client_ca_file)):
        if path is not None and not os.access(path, os.R_OK):
            raise _error(name, f"cannot read {path!r}")
    try:
        with open(cfg.cert_file, "rb") as f:
            cert_pem = f.read()  # described in the logs once loaded
    except OSError as exc:
        raise _error("cert_file", f"cannot read {cfg.cert_file!r}: {_why(exc)}") from exc
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = (ssl.TLSVersion.TLSv1_2 if cfg.min_version == "1.2"
                           else ssl.TLSVersion.TLSv1_3)
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= (
        ssl.OP_NO_COMPRESSION            # SECURITY: CRIME
        | ssl.OP_NO_RENEGOTIATION        # SECURITY: renegotiation DoS / CVE-2009-3555 class
        | ssl.OP_CIPHER_SERVER_PREFERENCE
        | ssl.OP_SINGLE_ECDH_USE
        | ssl.OP_NO_TICKET               # SECURITY: forward secrecy (module docstring)
    )
    ctx.num_tickets = 0
    ctx.set_alpn_protocols(list(ALPN))
    # ECDHE groups: the stdlib can set only one (set_ecdh_curve); OpenSSL 3's default list
    # (X25519, P-256, X448, P-521, P-384) is all strong, so it is kept. See docs/tls.md.
    try:
        ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise _error("cert_file", f"cannot load the certificate chain {cfg.cert_file!r} with "
                     f"key {cfg.key_file!r} (is the key the certificate's?): {_why(exc)}"
                     ) from exc
    if cfg.client_ca_file is not None:
        try:
            ctx.load_verify_locations(cafile=cfg.client_ca_file)
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise _error("client_ca_file", f"cannot load CA certificates from "
                         f"{cfg.client_ca_file!r}: {_why(exc)}") from exc
        ctx.verify_mode = (ssl.CERT_REQUIRED if cfg.client_cert == "required"
                           else ssl.CERT_OPTIONAL)
    else:
        ctx.verify_mode = ssl.CERT_NONE
    return ctx, _cert_info(cert_pem)


def _error(field: str, message: str) -> TLSSetupError:
    return TLSSetupError([ConfigIssue(f"{_PREFIX}.{field}", message)])


def _why(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    return type(exc).__name__ if not str(exc) else str(exc)


def _cert_info(pem: bytes) -> CertInfo:
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
    except (ValueError, IndexError):  # OpenSSL loaded it; only the description is lost
        return CertInfo("?", None, "?")
    der = leaf.public_bytes(Encoding.DER)
    return CertInfo(leaf.subject.rfc4514_string(), leaf.not_valid_after_utc,
                    hashlib.sha256(der).hexdigest())


class _ListenerContext(ssl.SSLContext):
    """Handed to ``loop.create_server``: wraps each new connection with the live context.

    asyncio's and uvloop's SSL transports both call ``wrap_bio`` on the context they were
    given, once per accepted connection. This object's own OpenSSL context is never
    configured, so any code path that bypassed ``wrap_bio`` would fail the handshake
    (no certificate) rather than serve a weaker one.
    """

    holder: ServerTLS

    def wrap_bio(self, incoming: ssl.MemoryBIO, outgoing: ssl.MemoryBIO,
                 server_side: bool = False, server_hostname: str | bytes | None = None,
                 session: ssl.SSLSession | None = None) -> ssl.SSLObject:
        return self.holder.context.wrap_bio(
            incoming, outgoing, server_side=server_side, server_hostname=server_hostname,
            session=session)


class ServerTLS:
    """The live server ``SSLContext``, reloadable in place (SIGHUP or file change).

    Args:
        cfg: the ``server.tls`` section.
        watch_interval: seconds between file polls once :meth:`start` ran (0: no watcher).

    Raises:
        TLSSetupError: the initial files do not load (the sidecar must not start).
    """

    def __init__(self, cfg: TLSConfig, *, watch_interval: float = WATCH_INTERVAL) -> None:
        self._cfg = cfg
        self._stamp = _stamp(cfg)
        self._context, self.cert = _build(cfg)
        self._warn_validity(self.cert)
        self.listener: ssl.SSLContext = _listener(self)
        """Pass this to ``loop.create_server(ssl=...)``; it follows every reload."""
        self.watch_interval = watch_interval
        self.reloads = 0
        """Successful reloads since start."""
        self.failures = 0
        """Rejected reloads since start."""
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    @property
    def context(self) -> ssl.SSLContext:
        """The context new connections get now."""
        return self._context

    @property
    def config(self) -> TLSConfig:
        """The ``server.tls`` section in force (the last one asked for, even if rejected)."""
        return self._cfg

    async def reload(self, cfg: TLSConfig | None = None) -> bool:
        """Build a context from ``cfg`` (default: the current section, files re-read) and
        swap it in for new connections. On any error log it, count it, keep the running
        context and return False; never raises for a bad file."""
        async with self._lock:
            cfg = cfg if cfg is not None else self._cfg
            self._cfg = cfg  # watch the files the live config names, even after a failure
            self._stamp = _stamp(cfg)
            loop = asyncio.get_running_loop()
            try:
                context, info = await loop.run_in_executor(None, _build, cfg)
            except TLSSetupError as exc:
                self.failures += 1
                log.error("TLS reload rejected, keeping the running certificate (%s): %s",
                          self.cert, "; ".join(str(i) for i in exc.issues))
                return False
            self._context, self.cert = context, info
            self.reloads += 1
            log.info("TLS reloaded: %s", info)
            self._warn_validity(info)
            return True

    async def check_files(self) -> bool | None:
        """Reload if a watched file changed since the last (attempted) load.

        Returns None when nothing changed, else the result of :meth:`reload`.
        """
        if _stamp(self._cfg) == self._stamp:
            return None
        return await self.reload()

    async def start(self) -> None:
        """Start the file watcher (no-op when ``watch_interval`` is 0)."""
        if self.watch_interval > 0 and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval)
            try:
                await self.check_files()
            except Exception:  # the watcher must outlive any surprise; the old cert stays
                log.exception("TLS file watcher: unexpected error")

    @staticmethod
    def _warn_validity(info: CertInfo) -> None:
        if info.not_after is not None and info.not_after <= datetime.datetime.now(datetime.UTC):
            log.warning("TLS server certificate has expired: %s", info)


def _listener(holder: ServerTLS) -> _ListenerContext:
    listener = _ListenerContext(ssl.PROTOCOL_TLS_SERVER)
    listener.holder = holder
    return listener


FileStamp = tuple[tuple[int, int, int, int] | None, ...]


def _stamp(cfg: TLSConfig) -> FileStamp:
    """(inode, device, size, mtime) of each file, following symlinks (Kubernetes swaps a
    ``..data`` symlink); None for a missing file."""
    stamps: list[tuple[int, int, int, int] | None] = []
    for path in (cfg.cert_file, cfg.key_file, cfg.client_ca_file):
        if path is None:
            continue
        try:
            st = os.stat(path)
        except OSError:
            stamps.append(None)
            continue
        stamps.append((st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns))
    return tuple(stamps)


# --- the client certificate of a connection ---------------------------------------------

_NO_CERT: Final = ClientCert(subject="", sans=(), sha256_thumbprint="")
_by_connection: weakref.WeakKeyDictionary[ssl.SSLObject, ClientCert] = (
    weakref.WeakKeyDictionary())
"""Per-connection memo: an entry lives exactly as long as the connection's SSLObject."""


def client_cert_of(transport: asyncio.BaseTransport | None) -> ClientCert | None:
    """The verified client certificate of ``transport``'s TLS connection, or None.

    None for plain TCP, for a listener without ``client_ca_file`` and for a client that
    sent no certificate. A certificate that fails verification never gets this far: with
    ``CERT_OPTIONAL`` as with ``CERT_REQUIRED`` OpenSSL aborts the handshake when a
    presented certificate does not verify, so a connection carries either no client
    certificate or a verified one. Computed once per connection (renegotiation is off and
    TLS 1.3 post-handshake authentication is not offered, so it cannot change).
    """
    if transport is None:
        return None
    sslobj = transport.get_extra_info("ssl_object")
    if not isinstance(sslobj, ssl.SSLObject):
        return None
    cached = _by_connection.get(sslobj)
    if cached is None:
        cached = _client_cert(sslobj)
        _by_connection[sslobj] = cached
    return None if cached is _NO_CERT else cached


def _client_cert(sslobj: ssl.SSLObject) -> ClientCert:
    # SECURITY: under CERT_NONE getpeercert(binary_form=True) would return an unverified
    # certificate; only a context that verified client certificates is believed.
    if sslobj.context.verify_mode == ssl.CERT_NONE:
        return _NO_CERT
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return _NO_CERT
    return client_cert_from_der(der)


def client_cert_from_der(der: bytes) -> ClientCert:
    """Subject (RFC 4514), SANs (``DNS:``, ``URI:``, ``email:``, ``IP:``) and the RFC 8705
    ``x5t#S256`` thumbprint (base64url, unpadded, of the SHA-256 of ``der``)."""
    thumbprint = base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode()
    try:
        cert = x509.load_der_x509_certificate(der)
        subject = cert.subject.rfc4514_string()
        sans = _sans(cert)
    except ValueError:
        # OpenSSL verified it; only the descriptive fields are lost. The thumbprint, which
        # is what bindings compare, does not depend on parsing.
        log.warning("client certificate verified but not parseable; x5t#S256=%s", thumbprint)
        subject, sans = "", ()
    return ClientCert(subject=subject, sans=sans, sha256_thumbprint=thumbprint)


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    out: list[str] = []
    for name in names:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        elif isinstance(name, x509.IPAddress) and isinstance(
                name.value, ipaddress.IPv4Address | ipaddress.IPv6Address):
            out.append(f"IP:{name.value}")
    return tuple(out)
