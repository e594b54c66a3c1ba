"""Models of the `server`, `admin`, `upstream` and `redis` sections."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from yarl import URL

from sidecar.config.types import ByteSize, Duration, StrictModel


def _check_listen(value: str) -> str:
    split_listen(value)
    return value


def split_listen(value: str) -> tuple[str, int]:
    """Split ``host:port`` or ``[v6]:port`` into its parts.

    Raises:
        ValueError: not a host and a port in 0..65535.
    """
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"listen must be host:port, got {value!r}")
    port = int(port_text)
    if port > 65535:
        raise ValueError(f"port {port} out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


ListenAddress = Annotated[str, AfterValidator(_check_listen)]


class TLSConfig(StrictModel):
    """Listener TLS. TLS 1.3 only unless ``min_version: "1.2"`` is asked for."""

    cert_file: str
    key_file: str
    min_version: Literal["1.2", "1.3"] = "1.3"
    client_ca_file: str | None = None
    client_cert: Literal["optional", "required"] = "optional"
    hsts_max_age: Duration = 31536000.0
    """`Strict-Transport-Security: max-age` sent on every TLS response (0 disables)."""

    @model_validator(mode="after")
    def _required_needs_ca(self) -> TLSConfig:
        if self.client_cert == "required" and self.client_ca_file is None:
            raise ValueError("client_cert: required needs client_ca_file")
        return self


class ServerConfig(StrictModel):
    """The public listener."""

    listen: ListenAddress = "0.0.0.0:8000"
    tls: TLSConfig | None = None
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: ByteSize = 1024 * 1024
    max_header_bytes: ByteSize = 16 * 1024
    max_url_bytes: ByteSize = 8 * 1024
    """Longest request target accepted; longer gets 414."""
    header_read_timeout: Duration = 10.0
    keepalive_timeout: Duration = 60.0
    shutdown_grace: Duration = 20.0
    trusted_proxies: tuple[str, ...] = ()
    """CIDRs whose `X-Forwarded-For` is believed; everyone else is the client."""

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"{cidr!r} is not an IP network") from exc
        return value


class AdminConfig(StrictModel):
    """The admin listener: /healthz, /readyz, /metrics. Never the public port."""

    listen: ListenAddress = "127.0.0.1:9901"


class UpstreamConfig(StrictModel):
    """The protected backend."""

    url: str = "http://127.0.0.1:8080"
    connect_timeout: Duration = 2.0
    timeout: Duration = 30.0
    idle_timeout: Duration = 60.0
    max_connections: int = Field(default=256, ge=1)
    ca_file: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        url = URL(value)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("must be an http:// or https:// URL with a host")
        if url.path not in ("", "/") or url.query_string or url.fragment:
            raise ValueError("must not have a path, query or fragment (paths are forwarded as-is)")
        return value


class SentinelConfig(StrictModel):
    """Where the Sentinels are and which master they watch (``redis.mode: sentinel``)."""

    master: str = "mymaster"
    nodes: tuple[str, ...] = ("127.0.0.1:26379",)
    """Sentinel addresses as ``host:port``; the master is asked of them on every connect."""
    password: str | None = None
    """Password of the Sentinels themselves, when they require one (``${VAR}`` welcome)."""

    @field_validator("nodes")
    @classmethod
    def _nodes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("list at least one Sentinel as host:port")
        for node in value:
            try:
                split_listen(node)
            except ValueError:
                raise ValueError(f"{node!r} is not host:port") from None
        return value


class RedisConfig(StrictModel):
    """One Redis connection shared by rate limits, nonces and the audit stream."""

    url: str = "redis://127.0.0.1:6379/0"
    mode: Literal["standalone", "cluster", "sentinel"] = "standalone"
    sentinel: SentinelConfig | None = None
    timeout: Duration = 0.05
    """Bound on every Redis call (connect, send, reply); a slower store counts as failed."""
    key_prefix: str = "sidecar:"

    @field_validator("timeout")
    @classmethod
    def _positive_timeout(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("must be greater than zero")
        return value

    @field_validator("key_prefix")
    @classmethod
    def _prefix_without_braces(cls, value: str) -> str:
        # SECURITY: braces would change the cluster hash tag of every key we build.
        if "{" in value or "}" in value:
            raise ValueError("must not contain '{' or '}' (they mark Redis Cluster hash tags)")
        return value

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if URL(value).scheme not in ("redis", "rediss", "unix"):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return value
