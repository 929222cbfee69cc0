"""Addresses a download may never reach, checked on every hop of every redirect chain.

A multi-user service that fetches what users paste would otherwise fetch for them what
only the server can reach: in a cloud GPU container, the instance metadata service
(``169.254.169.254`` on AWS/GCP/Azure, ``100.100.100.200`` on Alibaba Cloud, where PAI
runs) hands out the instance's credentials to any local GET. No model is ever served
from those addresses, so they are refused by default, for the CLI and the API alike;
``ATELIER_FETCH_BLOCKED_NETWORKS`` changes the list (add ``10.0.0.0/8`` and the other
private ranges to keep users off the internal network; ``[]`` turns the guard off).

The host is resolved and every address it resolves to is checked, before the request
goes out. The engine's own connections (:func:`connector`) then connect to exactly the
addresses they checked, resolving the name once per connection: a name that answers a
harmless address to the check and the metadata service to the connect (DNS rebinding)
gets neither; the catalogues' requests session does the same (``sources/remote.py``).
Through a proxy the proxy resolves the name, so only the check before the request
applies there: a deployment that must be sure blocks egress to those networks in its
firewall too.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from ..errors import BlockedAddress

_DEFAULT: Any = socket._GLOBAL_DEFAULT_TIMEOUT  # type: ignore[attr-defined]
DEFAULT_BLOCKED = ("169.254.0.0/16", "fe80::/10", "100.100.100.200/32", "fd00:ec2::254/128")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=16)
def networks(cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(c, strict=False) for c in cidrs)


def resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses ``host`` is (a literal) or resolves to; a failed lookup raises."""
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])  # (an IPv6 scope id)
            for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)]


def addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return resolve(host, port)
    except OSError:
        return []  # the request itself will say the name does not resolve


def check(url: str, blocked: Sequence[str] | Iterable[str]) -> None:
    """Raise :class:`BlockedAddress` if ``url``'s host is or resolves into ``blocked``."""
    cidrs = tuple(blocked)
    if not cidrs:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    _refuse(host, addresses(host, port), networks(cidrs), url)


def _refuse(host: str, ips: Iterable[ipaddress.IPv4Address | ipaddress.IPv6Address],
            nets: tuple[Network, ...], url: str) -> None:
    for ip in ips:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        for candidate in (ip, mapped):
            if candidate is not None and any(candidate in n for n in nets
                                             if n.version == candidate.version):
                raise BlockedAddress(
                    f"{host} ({candidate}) is in a network downloads may not reach "
                    "(ATELIER_FETCH_BLOCKED_NETWORKS)", url=url)


def connector(blocked: Sequence[str] | Iterable[str]) -> Callable[..., socket.socket] | None:
    """A ``socket.create_connection`` for an origin's connections that resolves the name
    once, refuses the lot if any address is blocked, and connects to those very
    addresses, in the resolver's order. None when nothing is blocked."""
    cidrs = tuple(blocked)
    if not cidrs:
        return None
    nets = networks(cidrs)

    def create_connection(address: tuple[str, int], timeout: Any = _DEFAULT,
                          source_address: Any = None) -> socket.socket:
        host, port = address
        ips = resolve(host, port)  # once (a gaierror is raised as it is)
        _refuse(host, ips, nets, f"{host}:{port}")
        last: OSError | None = None
        for ip in dict.fromkeys(ips):
            try:
                return socket.create_connection((str(ip), port), timeout, source_address)
            except OSError as exc:  # the next address, as create_connection does
                last = exc
        raise last if last is not None else OSError(f"{host}: no address to connect to")

    return create_connection
