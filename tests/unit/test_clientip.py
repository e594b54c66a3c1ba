"""X-Forwarded-For is believed only from trusted proxies, walked right to left."""

import pytest

from sidecar.clientip import TrustedProxies

TRUSTED = TrustedProxies(["10.0.0.0/8", "fd00::/8"])


@pytest.mark.parametrize(
    ("peer", "xff", "client", "forwarded"),
    [
        pytest.param("203.0.113.9", ["1.2.3.4"], "203.0.113.9", "203.0.113.9",
                     id="an untrusted peer's X-Forwarded-For is discarded"),
        pytest.param("10.0.0.1", ["198.51.100.7"], "198.51.100.7", "198.51.100.7, 10.0.0.1",
                     id="a trusted peer's last hop is the client"),
        pytest.param("10.0.0.1", ["6.6.6.6, 198.51.100.7, 10.0.0.2"], "198.51.100.7",
                     "198.51.100.7, 10.0.0.2, 10.0.0.1",
                     id="hops left of the first untrusted address are dropped"),
        pytest.param("10.0.0.1", ["6.6.6.6", "198.51.100.7"], "198.51.100.7",
                     "198.51.100.7, 10.0.0.1", id="several header lines form one chain"),
        pytest.param("10.0.0.1", ["garbage, 10.0.0.3"], "10.0.0.3", "10.0.0.3, 10.0.0.1",
                     id="an unparseable hop ends the walk"),
        pytest.param("10.0.0.1", [], "10.0.0.1", "10.0.0.1",
                     id="a trusted peer without a chain is the client"),
        pytest.param("fd00::1", ["2001:db8::5"], "2001:db8::5", "2001:db8::5, fd00::1",
                     id="IPv6 proxies and clients work alike"),
    ],
)
def test_client_address_resolution(peer: str, xff: list[str], client: str, forwarded: str) -> None:
    resolved = TRUSTED.resolve(peer, xff)
    assert resolved.client_ip == client
    assert resolved.forwarded_for == forwarded


def test_without_trusted_proxies_the_peer_is_always_the_client() -> None:
    assert TrustedProxies([]).resolve("10.0.0.1", ["1.1.1.1"]).client_ip == "10.0.0.1"
