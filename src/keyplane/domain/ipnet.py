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


def _parse_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class TrustedProxies:
    """``KEYPLANE_TRUSTED_PROXIES``: the addresses and CIDR ranges whose forwarding headers are believed.

    ``client_ip`` reads what a trusted peer says: ``X-Real-IP`` if it is an address, else
    ``X-Forwarded-For`` from right to left, skipping trusted proxies; the first address that is not one
    is the client. Each trusted proxy appends the address it received the request from, so everything
    left of the first untrusted hop was written by the client and is never believed. A peer that is not
    trusted is the client, whatever its headers say.
    """

    __slots__ = ("_memo", "_networks")

    MEMO_SIZE = 1024

    def __init__(self, entries: Iterable[str] = ()) -> None:
        networks: list[Network] = []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip(), strict=False))
            except ValueError:
                raise ValueError(
                    f"KEYPLANE_TRUSTED_PROXIES: {entry.strip()!r} is not an IP address or CIDR range"
                ) from None
        self._networks: tuple[Network, ...] = tuple(networks)
        self._memo: dict[str, bool] = {}

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """Comma-separated entries, e.g. ``10.0.0.0/8, 127.0.0.1, fd00::/8``; a bad one raises ValueError."""
        return cls(part for part in text.split(",") if part.strip())

    def __bool__(self) -> bool:
        return bool(self._networks)

    def __repr__(self) -> str:
        return f"TrustedProxies({', '.join(map(str, self._networks))})"

    def trusts(self, ip: str) -> bool:
        known = self._memo.get(ip)
        if known is None:
            addr = _parse_address(ip)
            known = addr is not None and any(addr.version == n.version and addr in n for n in self._networks)
            if len(self._memo) >= self.MEMO_SIZE:
                self._memo.clear()
            self._memo[ip] = known
        return known

    def client_ip(self, peer: str, real_ip: str | None, forwarded_for: str | None) -> str:
        if not self._networks or not self.trusts(peer):
            return peer
        if real_ip:
            addr = _parse_address(real_ip)
            if addr is not None:
                return str(addr)
        client = peer
        for hop in reversed((forwarded_for or "").split(",")):
            addr = _parse_address(hop)
            if addr is None:  # not written by a trusted proxy: stop at the last hop vouched for
                break
            client = str(addr)
            if not self.trusts(client):
                break
        return client
