"""The SSRF guard's rules, form by form: IPv6 forms carrying an IPv4 address, metadata addresses
inside allowed networks, IPv4 spellings, host-name narrowing, and the connect-time resolver."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from provider.backends.http_source import AllAddressesForbidden, GuardedResolver, check_literal_host
from provider.domain.addresses import (
    address_problem,
    carried_ipv4,
    destination_problem,
    noncanonical_ipv4,
    parse_networks,
)

LOOPBACK_FORMS = [
    ("127.0.0.1", "a loopback address"),
    ("::1", "a loopback address"),
    ("::ffff:127.0.0.1", "a loopback address in IPv4-mapped form (127.0.0.1)"),
    ("::127.0.0.1", "a loopback address in IPv4-compatible form (127.0.0.1)"),
    ("::ffff:0:127.0.0.1", "a loopback address in IPv4-translated form (127.0.0.1)"),
    ("2002:7f00:1::1", "a loopback address in 6to4 form (127.0.0.1)"),
    # Teredo: server in bits 32-63; client in the last 32 bits, inverted (~127.0.0.1 = 80ff:fffe).
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "a loopback address in Teredo form (127.0.0.1)"),
    ("2001:0:7f00:1:8000:63bf:f7f7:f7f7", "a loopback address in Teredo form (127.0.0.1)"),
    ("64:ff9b::127.0.0.1", "a loopback address in NAT64 form (127.0.0.1)"),
    ("64:ff9b:1::7f00:1", "in NAT64 form"),  # local-use: every RFC 6052 place is judged
    ("64:ff9b:1:7f00:0:100::", "a loopback address in NAT64 form (127.0.0.1)"),  # a /48 prefix
]


@pytest.mark.parametrize(("address", "problem"), LOOPBACK_FORMS)
def test_every_form_of_a_loopback_address_is_refused(address: str, problem: str) -> None:
    found = address_problem(address)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    ("address", "problem"),
    [
        ("::ffff:10.1.2.3", "a private address in IPv4-mapped form (10.1.2.3)"),
        ("2002:a01:203::1", "a private address in 6to4 form (10.1.2.3)"),
        ("64:ff9b::192.168.0.1", "a private address in NAT64 form (192.168.0.1)"),
        ("::ffff:169.254.1.1", "a link-local address in IPv4-mapped form (169.254.1.1)"),
        ("2002:e000:1::", "a multicast address in 6to4 form (224.0.0.1)"),
        ("2001:0:4136:e378:8000:63bf:f5fe:fdfc", "a private address in Teredo form (10.1.2.3)"),
    ],
)
def test_carried_addresses_are_judged_like_the_address_itself(address: str, problem: str) -> None:
    assert address_problem(address) == problem


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
        "2002:808:808::1",
        "64:ff9b::8.8.8.8",
        "2001:0:4136:e378:8000:63bf:f7f7:f7f7",  # a public server and client
    ],
)
def test_forms_carrying_a_public_address_pass(address: str) -> None:
    assert address_problem(address) is None


def test_teredo_carries_server_and_client() -> None:
    import ipaddress

    form, carried = carried_ipv4(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:80ff:fffe"))
    assert form == "Teredo" and [str(a) for a in carried] == ["65.54.227.120", "127.0.0.1"]


METADATA = [
    "169.254.169.254",
    "fd00:ec2::254",
    "100.100.100.200",
    "169.254.170.2",
    "169.254.170.23",
    "fd00:ec2::23",
    "168.63.129.16",
    "::ffff:169.254.169.254",
    "::ffff:0:169.254.169.254",
    "::169.254.169.254",
    "2002:a9fe:a9fe::1",
    "64:ff9b::169.254.169.254",
    "64:ff9b:1:a9fe:a9:fe00::",  # local-use /48 place
    "2001:0:a9fe:a9fe::",  # Teredo server
    "2001:0:4136:e378:8000:63bf:5601:5601",  # Teredo client (~169.254.169.254)
]
EVERYTHING_ALLOWED = parse_networks(["0.0.0.0/0", "::/0"])


@pytest.mark.parametrize("address", METADATA)
def test_metadata_is_refused_even_inside_allowed_networks(address: str) -> None:
    problem = address_problem(address, EVERYTHING_ALLOWED)
    assert problem is not None and problem.startswith("a cloud metadata address")


@pytest.mark.parametrize(("address", "_"), LOOPBACK_FORMS)
def test_allowing_the_carried_network_allows_the_form(address: str, _: str) -> None:
    if address.startswith("64:ff9b:1:"):  # local-use: other places carry other addresses
        return
    assert address_problem(address, parse_networks(["127.0.0.0/8", "::1/128", "65.54.227.120/32"])) is None


@pytest.mark.parametrize(
    ("host", "noncanonical"),
    [
        ("2130706433", True),
        ("0177.0.0.1", True),
        ("0x7f.0.0.1", True),
        ("0x7f000001", True),
        ("127.1", True),
        ("0", True),
        ("127.0.0.1.", True),
        ("example.123", True),
        ("127.0.0.1", False),
        ("93.184.215.14", False),
        ("example.org", False),
        ("edc-controlplane", False),
        ("1.2.3.4.nip.example", False),
        ("::1", False),
        ("::ffff:127.0.0.1", False),
    ],
)
def test_ipv4_spellings_other_than_dotted_decimal_are_recognised(host: str, noncanonical: bool) -> None:
    assert noncanonical_ipv4(host) is noncanonical


def test_named_hosts_narrow_the_public_internet() -> None:
    networks = parse_networks(["10.0.0.0/8"])
    hosts = {"edc.partner.example"}
    # A listed name may resolve to a public address, or to a private one inside the networks.
    assert destination_problem("edc.partner.example", "93.184.215.14", networks, hosts) is None
    assert destination_problem("edc.partner.example", "10.1.2.3", networks, hosts) is None
    assert destination_problem("EDC.Partner.Example.", "93.184.215.14", networks, hosts) is None
    # Any name, or a literal, may reach the networks.
    assert destination_problem("edc-controlplane", "10.1.2.3", networks, hosts) is None
    assert destination_problem("::ffff:10.1.2.3", "::ffff:10.1.2.3", networks, hosts) is None
    # Nothing else: unlisted public addresses, private ones outside the networks, metadata.
    assert "under a host name not allowed" in str(
        destination_problem("attacker.example", "93.184.215.14", networks, hosts)
    )
    assert "loopback" in str(destination_problem("edc.partner.example", "127.0.0.1", networks, hosts))
    assert "loopback" in str(destination_problem("edc.partner.example", "2002:7f00:1::1", networks, hosts))
    everything = parse_networks(["0.0.0.0/0", "::/0"])
    assert "metadata" in str(destination_problem("edc.partner.example", "169.254.169.254", everything, hosts))
    # Nothing configured: nowhere.
    assert destination_problem("x.example", "93.184.215.14", [], set()) is not None
    assert destination_problem("x.example", "93.184.215.14", [], None) is None  # imports, webhooks


class Answers:
    """A resolver whose answer the test chooses."""

    def __init__(self, address: str) -> None:
        self.address = address

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        return [
            {"hostname": host, "host": self.address, "port": port, "family": family, "proto": 0, "flags": 0}
        ]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(("address", "problem"), LOOPBACK_FORMS + [(a, "cloud metadata") for a in METADATA])
async def test_the_connect_time_resolver_drops_every_form(address: str, problem: str) -> None:
    resolver = GuardedResolver(parse_networks([]))
    resolver.inner = Answers(address)  # type: ignore[assignment]
    with pytest.raises(AllAddressesForbidden, match="resolves to") as raised:
        await resolver.resolve("rebound.example", 443)
    assert problem in str(raised.value)
    with pytest.raises(AllAddressesForbidden, match=problem.replace("(", r"\(").replace(")", r"\)")):
        check_literal_host(f"https://[{address}]/hook" if ":" in address else f"https://{address}/", [])


async def test_the_connect_time_resolver_applies_named_hosts() -> None:
    resolver = GuardedResolver(parse_networks(["10.0.0.0/8"]), {"edc.partner.example"})
    resolver.inner = Answers("93.184.215.14")  # type: ignore[assignment]
    assert len(await resolver.resolve("edc.partner.example", 443)) == 1
    with pytest.raises(AllAddressesForbidden, match="host name not allowed"):
        await resolver.resolve("attacker.example", 443)
