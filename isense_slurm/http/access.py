"""Who may call a route: the bearer token of a request, and the local-only rule.

The daemon's port faces API clients too, so views meant for the operator (the
registry, the controller's plan, /metrics) are served to loopback only unless told
otherwise; IPv4-mapped IPv6 addresses count as their IPv4 address.
"""

import ipaddress
from collections.abc import Iterable

LOOPBACK = ("127.0.0.0/8", "::1/128")


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, else None."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    # Keys and worker tokens are ASCII. Other bytes (aiohttp hands them over
    # surrogate-escaped) match no key, and must not reach str.encode() (a 500).
    return token if token and token.isascii() else None


class Networks:
    """`remote in Networks(cidrs)`: whether a request's remote address is in one of them."""

    def __init__(self, cidrs: Iterable[str]):
        self.networks = [ipaddress.ip_network(n, strict=False) for n in cidrs]

    def __contains__(self, remote: str | None) -> bool:
        try:
            address = ipaddress.ip_address(remote or "")
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self.networks if net.version == address.version)


LOCAL = Networks(LOOPBACK)


def is_local(remote: str | None) -> bool:
    """The local-only rule: a loopback address (IPv4, IPv6 or IPv4-mapped)."""
    return remote in LOCAL
