"""Which network addresses outbound requests (imports, callbacks) may reach: the SSRF guard."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Instance metadata and credential services, refused even inside an allowed network: AWS, GCP,
# Azure, OpenStack, Oracle, DigitalOcean (169.254.169.254), AWS over IPv6 (fd00:ec2::254), ECS
# task credentials (169.254.170.2), EKS Pod Identity (169.254.170.23, fd00:ec2::23), Azure
# wireserver (168.63.129.16), Alibaba (100.100.100.200), Tencent (169.254.0.23), Oracle Cloud
# Classic (192.0.0.192).
METADATA = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",
        "fd00:ec2::254",
        "169.254.170.2",
        "169.254.170.23",
        "fd00:ec2::23",
        "168.63.129.16",
        "100.100.100.200",
        "169.254.0.23",
        "192.0.0.192",
    )
)
METADATA_PROBLEM = "a cloud metadata address"

_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use, any prefix length >= /48
_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")  # RFC 2765 IPv4-translated
_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291 IPv4-compatible (deprecated)
_LOW32 = 0xFFFFFFFF


def parse_networks(values: Iterable[str]) -> list[IPNetwork]:
    return [ipaddress.ip_network(v, strict=False) for v in values]


def _nat64_local(value: int, prefix: int) -> ipaddress.IPv4Address:
    """The IPv4 address at the RFC 6052 place for a /prefix; bits 64-71 (the u octet) are skipped."""
    if prefix == 96:
        return ipaddress.IPv4Address(value & _LOW32)
    before = 64 - prefix  # IPv4 bits in front of the u octet
    after = 32 - before
    high = (value >> 64) & ((1 << before) - 1)
    low = (value >> (56 - after)) & ((1 << after) - 1)
    return ipaddress.IPv4Address(high << after | low)


def carried_ipv4(ip: IPAddress) -> tuple[str, list[ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 transition form carries, which packets to it end up at, and
    the form's name; ("", []) for every other address."""
    if isinstance(ip, ipaddress.IPv4Address):
        return "", []
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", [ip.ipv4_mapped]
    if ip.sixtofour is not None:
        return "6to4", [ip.sixtofour]
    if ip.teredo is not None:
        return "Teredo", list(ip.teredo)  # the server, and the client (its bits inverted)
    value = int(ip)
    if ip in _NAT64:
        return "NAT64", [ipaddress.IPv4Address(value & _LOW32)]
    if ip in _NAT64_LOCAL:  # the operator picks the prefix length: every place counts
        return "NAT64", [_nat64_local(value, prefix) for prefix in (48, 56, 64, 96)]
    if ip in _TRANSLATED:
        return "IPv4-translated", [ipaddress.IPv4Address(value & _LOW32)]
    if ip in _COMPATIBLE and value > 1:  # :: and ::1 are the unspecified and loopback addresses
        return "IPv4-compatible", [ipaddress.IPv4Address(value)]
    return "", []


def _parse(address: str | IPAddress) -> IPAddress:
    return ipaddress.ip_address(address) if isinstance(address, str) else address


def in_networks(address: str | IPAddress, networks: Iterable[IPNetwork]) -> bool:
    """Whether `address`, or every IPv4 address it carries, lies in one of `networks`."""
    ip = _parse(address)
    networks = list(networks)
    _, carried = carried_ipv4(ip)

    def inside(candidate: IPAddress) -> bool:
        return any(candidate in network for network in networks)

    return inside(ip) or (bool(carried) and all(inside(a) for a in carried))


def address_problem(address: str | IPAddress, allowed: Iterable[IPNetwork] = ()) -> str | None:
    """Why `address` must not be contacted, or None if it may be.

    An address inside an allowed network is fine (operators allowlist, for instance, an
    internal data plane or 127.0.0.1 for tests), except a cloud metadata address. IPv6 forms
    that carry an IPv4 address (6to4, Teredo, NAT64, IPv4-mapped, -compatible, -translated)
    are judged by the IPv4 addresses they carry, all of which must be fine.
    """
    ip = _parse(address)
    allowed = list(allowed)
    form, carried = carried_ipv4(ip)
    if ip in METADATA:
        return METADATA_PROBLEM
    for inner in carried:
        if inner in METADATA:
            return f"{METADATA_PROBLEM} in {form} form ({inner})"
    if any(ip in network for network in allowed):
        return None
    for inner in carried:
        problem = address_problem(inner, allowed)
        if problem is not None:
            return f"{problem} in {form} form ({inner})"
    if carried:
        return None
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_multicast:
        return "a multicast address"
    if ip.is_unspecified or ip.is_reserved:
        return "a reserved address"
    if ip.is_private or ip in _CGNAT:
        return "a private address"
    return None


def destination_problem(
    host: str, address: str | IPAddress, allowed: Iterable[IPNetwork], hosts: Collection[str] | None
) -> str | None:
    """`address_problem`, narrowed by `hosts` when given: then only those host names may
    resolve to addresses outside `allowed` (public ones; the rest still need `allowed`)."""
    allowed = list(allowed)
    problem = address_problem(address, allowed)
    if problem is not None or hosts is None:
        return problem
    if host_key(host) in hosts or in_networks(address, allowed):
        return None
    return "an address outside the allowed networks, under a host name not allowed either"


def host_key(host: str) -> str:
    """A host name as compared with configured ones: lower case, no trailing dot."""
    return host.lower().rstrip(".")


_NUMBER = re.compile(r"(?:[0-9]+|0x[0-9a-f]*)", re.IGNORECASE)


def noncanonical_ipv4(host: str) -> bool:
    """Whether `host` spells an IPv4 address other than as four decimal numbers (2130706433,
    0177.0.0.1, 0x7f.1, 127.1, 127.0.0.1.): as URL parsers do, a host whose last label is a
    number is an address. Resolvers disagree on these spellings, so they are refused."""
    if ":" in host:  # IPv6
        return False
    labels = host.split(".")
    if labels[-1] == "" and len(labels) > 1:
        labels.pop()
    if not _NUMBER.fullmatch(labels[-1]):
        return False
    try:
        return str(ipaddress.IPv4Address(host)) != host
    except ValueError:
        return True
