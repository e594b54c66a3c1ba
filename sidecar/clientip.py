"""Who is the client: the peer, or what trusted proxies say (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ClientAddress:
    client_ip: str
    """The address rate limits and audit attribute the request to."""
    forwarded_for: str
    """The ``X-Forwarded-For`` value the backend receives: kept chain, then the peer."""


class TrustedProxies:
    """Compiled ``server.trusted_proxies``."""

    def __init__(self, cidrs: Iterable[str]) -> None:
        self._networks: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(c, strict=False) for c in cidrs
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    def trusts(self, address: str) -> bool:
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self._networks)

    def resolve(self, peer_ip: str, x_forwarded_for: Iterable[str]) -> ClientAddress:
        """Resolve the client of a request from ``peer_ip`` and its XFF header values.

        From an untrusted peer every client-sent hop is discarded. From a trusted peer the
        chain is walked right to left and the client is the first address not trusted;
        entries left of it are client-controlled and dropped.
        """
        if not self.trusts(peer_ip):
            return ClientAddress(peer_ip, peer_ip)
        hops = [h.strip() for value in x_forwarded_for for h in value.split(",")]
        hops = [h for h in hops if h]
        client = peer_ip
        kept_from = len(hops)
        for index in range(len(hops) - 1, -1, -1):
            hop = hops[index]
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                # An unparseable hop ends the walk: nothing to its left can be believed.
                break
            client = hop
            kept_from = index
            if not self.trusts(hop):
                break
        kept = hops[kept_from:]
        return ClientAddress(client, ", ".join([*kept, peer_ip]))
