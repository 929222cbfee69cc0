"""Who is on the other end of the connection, and which forwarded headers to believe.

The service is started with uvicorn's own proxy handling switched off
(``proxy_headers=False`` in ``atelier serve``): uvicorn would otherwise believe
``X-Forwarded-For`` from 127.0.0.1 and rewrite the client address, so any local
process could pose as a trusted gateway or dodge the per-address login limit by
sending a new address each time. Here the rule is::

    peer        the TCP peer (``scope["client"]``), never taken from a header
    trusted     the peer is in ``trusted_proxies`` (addresses or CIDRs)
    client      the address limits are counted by: the peer; when the peer is a
                trusted proxy, the right-most ``X-Forwarded-For`` hop that is not
                itself a trusted proxy (hops further left were written by the
                client and prove nothing)

The gateway's user header is believed only when the *peer* is trusted.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.requests import HTTPConnection

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:  # "[::1]:443" as some proxies write it
        text = text[1:text.index("]")]
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


class Peers:
    def __init__(self, trusted: Iterable[str]) -> None:
        self.networks: list[_Network] = [ipaddress.ip_network(t, strict=False)
                                         for t in trusted]

    def trusted(self, addr: str | None) -> bool:
        if not addr or not self.networks:
            return False
        ip = _ip(addr)
        return ip is not None and any(ip in net for net in self.networks)

    @staticmethod
    def peer(conn: HTTPConnection) -> str | None:
        """The TCP peer's address (None on a Unix socket or in-process transport)."""
        return conn.client.host if conn.client else None

    def client(self, conn: HTTPConnection) -> str:
        """The address to count failed logins and share guesses by (see module doc)."""
        peer = self.peer(conn)
        if peer is None:
            return "-"
        if not self.trusted(peer):
            return peer
        hops = [h.strip() for v in conn.headers.getlist("x-forwarded-for")
                for h in v.split(",") if h.strip()]
        addr = peer
        for hop in reversed(hops):
            ip = _ip(hop)
            if ip is None:  # garbage from the client side: stop at the last trusted hop
                break
            addr = str(ip)
            if not self.trusted(addr):
                break
        return addr
