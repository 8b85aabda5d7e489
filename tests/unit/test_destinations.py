"""Webhook destinations: host names by IDNA rules, public addresses only, loopback only by explicit choice."""

from __future__ import annotations

import ipaddress

import pytest
from pydantic import ValidationError

from infiniteflow_common.destinations import (
    DestinationRefused,
    WebhookHostInvalid,
    address_allowed,
    check_host,
    check_literal,
)
from services.ingest.config import IngestSettings
from services.notifier.config import NotifierSettings


@pytest.mark.parametrize(
    "host",
    [
        "hooks.example.com",
        "example.com.",
        "xn--nxasmq6b.com",
        "a-b.example",
        "a" * 63 + ".example",
        "1.2.3.4",
        "::1",
    ],
)
def test_valid_host_names_and_addresses_pass(host: str) -> None:
    check_host(host)


@pytest.mark.parametrize(
    "host",
    [
        "a..example.com",  # empty label: getaddrinfo raised UnicodeError on these
        "a" * 64 + ".example.com",  # label over 63
        ".example.com",
        "-a.example.com",
        "a-.example.com",
        "ab--cd.example.com",  # hyphens in 3rd and 4th place are reserved
        "xn--.example.com",
        "xn--zz-.example",
        "under_score.example.com",
        ("a" * 60 + ".") * 5 + "com",  # over 253 characters
        "2130706433",  # a number resolvers read as 127.0.0.1
        "0x7f.1",
        "10.1",
    ],
)
def test_malformed_hosts_are_refused_with_a_code(host: str) -> None:
    with pytest.raises(WebhookHostInvalid) as error:
        check_host(host)
    assert error.value.code == "E_WEBHOOK_URL_INVALID"


@pytest.mark.parametrize(
    "literal",
    ["100.100.100.200", "100.64.0.1", "10.0.0.1", "172.16.0.1", "192.168.0.1", "169.254.169.254", "0.0.0.0",
     "fd00:ec2::254", "fe80::1", "::ffff:10.0.0.1", "224.0.0.1", "127.0.0.1"],
)  # fmt: skip
def test_a_non_global_address_written_in_the_url_is_refused(literal: str) -> None:
    with pytest.raises(DestinationRefused) as error:
        check_literal(literal, [])
    assert error.value.code == "E_WEBHOOK_DESTINATION_REFUSED"


def test_loopback_may_be_allowed_for_local_development_but_no_other_range() -> None:
    check_literal("127.0.0.1", ["127.0.0.1"])
    check_literal("::1", ["::1"])
    check_literal("93.184.216.34", [])
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), "x", ["127.0.0.0/8"])
    assert not address_allowed(
        ipaddress.ip_address("100.100.100.200"), "100.100.100.200", ["100.100.100.200"]
    )
    with pytest.raises(DestinationRefused):
        check_literal("127.0.0.2", ["127.0.0.1"])


@pytest.mark.parametrize("entry", ["10.0.0.0/8", "100.64.0.0/10", "192.168.1.5", "0.0.0.0/0", "a..b"])
def test_the_allowlist_setting_refuses_anything_but_loopback(entry: str) -> None:
    for settings in (IngestSettings, NotifierSettings):
        with pytest.raises(ValidationError, match="WEBHOOK_ALLOWED_DESTINATIONS"):
            settings(webhook_allowed_destinations=(entry,))


def test_the_allowlist_setting_takes_loopback_addresses_networks_and_names() -> None:
    settings = IngestSettings(webhook_allowed_destinations=("127.0.0.1", "::1", "127.0.0.0/8", "localhost"))
    assert settings.webhook_allowed_destinations == ("127.0.0.1", "::1", "127.0.0.0/8", "localhost")


@pytest.mark.parametrize(
    ("literal", "inner"),
    [
        ("64:ff9b::a00:1", "10.0.0.1"),  # NAT64 well-known prefix (RFC 6052)
        ("64:ff9b::10.0.0.1", "10.0.0.1"),
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # instance metadata through a NAT64 gateway
        ("64:ff9b::7f00:1", "127.0.0.1"),
        ("::ffff:0:a00:1", "10.0.0.1"),  # SIIT IPv4-translated (RFC 7915)
        ("::ffff:0:192.168.0.1", "192.168.0.1"),
        ("::ffff:10.0.0.1", "10.0.0.1"),  # IPv4-mapped
        ("::ffff:100.64.0.1", "100.64.0.1"),
        ("2002:a00:1::1", "10.0.0.1"),  # 6to4
        ("2002:c0a8:1::1", "192.168.0.1"),
        ("::10.0.0.1", "10.0.0.1"),  # IPv4-compatible (deprecated)
    ],
)
def test_an_ipv6_address_that_embeds_a_non_global_ipv4_is_refused(literal: str, inner: str) -> None:
    with pytest.raises(DestinationRefused) as error:
        check_literal(literal, [])
    assert error.value.code == "E_WEBHOOK_DESTINATION_REFUSED"
    assert inner in error.value.message, "the refusal names the IPv4 address inside"
    assert not address_allowed(ipaddress.ip_address(literal), literal, ["127.0.0.0/8", "::1"])


@pytest.mark.parametrize("literal", ["64:ff9b:1::a00:1", "64:ff9b:1::808:808", "64:ff9b:1:ab00::1"])
def test_a_local_use_nat64_address_is_refused_whatever_it_embeds(literal: str) -> None:
    # RFC 8215: 64:ff9b:1::/48 is for local translators only, with any prefix length inside it
    with pytest.raises(DestinationRefused):
        check_literal(literal, [])


@pytest.mark.parametrize(
    "literal", ["64:ff9b::808:808", "64:ff9b::93.184.216.34", "2002:808:808::1", "2606:4700::1111"]
)
def test_an_ipv6_address_that_embeds_a_public_ipv4_or_none_is_allowed(literal: str) -> None:
    check_literal(literal, [])
