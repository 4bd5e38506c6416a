"""Which network addresses outbound requests (imports, callbacks) may reach: the SSRF guard."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata services (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba).
METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}


def parse_networks(values: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def address_problem(address: str | IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why `address` must not be contacted, or None if it may be.

    An address inside an allowed network is always fine: operators allowlist, for instance,
    an internal data plane or 127.0.0.1 for tests.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if any(ip in network for network in allowed):
        return None
    if ip in METADATA:
        return "a cloud metadata address"
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if ip.is_private or (
        isinstance(ip, ipaddress.IPv4Address) and ip in ipaddress.ip_network("100.64.0.0/10")
    ):
        return "a private address"
    return None
