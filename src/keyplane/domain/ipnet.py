"""IP allowlists: exact IPv4/IPv6 addresses and CIDR ranges, matched fast."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from keyplane.errors import InvalidIp

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def normalize_ip_rule(entry: object) -> str:
    """Returns the canonical text of an address or CIDR range, or raises ``InvalidIp``."""
    if not isinstance(entry, str) or not entry or len(entry) > 64:
        raise InvalidIp("invalid IP address", field="ip")
    try:
        if "/" in entry:
            net = ipaddress.ip_network(entry.strip(), strict=False)
            mapped = net.network_address.ipv4_mapped if isinstance(net, ipaddress.IPv6Network) else None
            if mapped is not None and net.prefixlen >= 96:
                # like a single mapped address: kept as the IPv4 range the client is compared with
                return str(ipaddress.IPv4Network((mapped, net.prefixlen - 96)))
            return str(net)
        # an IPv4-mapped entry is kept as the plain IPv4 that canonical_client_ip compares it with
        return canonical_client_ip(str(ipaddress.ip_address(entry.strip())))
    except ValueError:
        raise InvalidIp(f"invalid IP address {entry!r}", field="ip") from None


def canonical_client_ip(ip: str) -> str:
    """The form an allowlist compares: IPv4-mapped IPv6 addresses become plain IPv4."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return str(addr.ipv4_mapped)
    return str(addr)


class IpAllowlist:
    """An allowlist compiled for the hot path: a set lookup first, ranges only when there are any."""

    __slots__ = ("_exact", "_networks", "empty")

    def __init__(self, entries: Iterable[str]) -> None:
        self._exact: frozenset[str] = frozenset(e for e in entries if "/" not in e)
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(e, strict=False) for e in entries if "/" in e
        )
        self.empty = not self._exact and not self._networks

    def allows(self, client_ip: str) -> bool:
        if client_ip in self._exact:
            return True
        canonical = canonical_client_ip(client_ip)
        if canonical in self._exact:
            return True
        if not self._networks:
            return False
        try:
            addr = ipaddress.ip_address(canonical)
        except ValueError:
            return False
        return any(addr.version == net.version and addr in net for net in self._networks)
