"""Webhooks never reach internal addresses unless an operator allows them, and DNS is checked once."""

from __future__ import annotations

import pytest

from services.notifier.egress import DestinationRefused, check_destination


def resolver(table: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda host, port: table[host]


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fd00:ec2::254",
        "0.0.0.0",
        "::ffff:127.0.0.1",
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    with pytest.raises(DestinationRefused) as error:
        check_destination("https://hooks.example.com/x", [], resolver({"hooks.example.com": [address]}))
    assert error.value.code == "E_WEBHOOK_DESTINATION_REFUSED"


def test_a_name_with_one_internal_address_among_public_ones_is_refused() -> None:
    with pytest.raises(DestinationRefused):
        check_destination(
            "http://mixed.example/x", [], resolver({"mixed.example": ["93.184.216.34", "10.0.0.1"]})
        )


def test_the_request_goes_to_the_checked_address_under_the_original_name() -> None:
    target = check_destination(
        "https://hooks.example.com:8443/in?t=1", [], resolver({"hooks.example.com": ["93.184.216.34"]})
    )
    assert target.url == "https://93.184.216.34:8443/in?t=1"
    assert target.host == "hooks.example.com:8443"


def test_an_operator_allowlist_admits_named_hosts_and_networks() -> None:
    loopback = resolver({"127.0.0.1": ["127.0.0.1"], "ci-receiver": ["10.9.8.7"]})
    assert check_destination("http://127.0.0.1:9/h", ["127.0.0.1"], loopback).address == "127.0.0.1"
    assert check_destination("http://ci-receiver/h", ["10.0.0.0/8"], loopback).address == "10.9.8.7"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x", "http:///nohost"])
def test_only_http_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(DestinationRefused):
        check_destination(url, [], resolver({}))
