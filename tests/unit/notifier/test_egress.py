"""Webhooks never reach internal addresses unless an operator allows them, and DNS is checked once."""

from __future__ import annotations

import socket

import pytest

from services.notifier.egress import (
    DestinationRefused,
    ResolutionFailed,
    WebhookHostInvalid,
    check_destination,
)


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


def test_the_local_development_allowlist_admits_loopback_and_nothing_else() -> None:
    table = resolver({"127.0.0.1": ["127.0.0.1"], "localhost": ["::1"], "ci-receiver": ["10.9.8.7"]})
    assert check_destination("http://127.0.0.1:9/h", ["127.0.0.1"], table).address == "127.0.0.1"
    assert check_destination("http://localhost:9/h", ["localhost"], table).address == "::1"
    # a name on the list does not open the ranges it resolves to
    with pytest.raises(DestinationRefused):
        check_destination("http://ci-receiver/h", ["ci-receiver"], table)


@pytest.mark.parametrize(
    "address",
    [
        "100.100.100.200",  # carrier-grade NAT (100.64.0.0/10): a cloud metadata address; not is_private
        "100.64.0.1",
        "192.0.2.10",  # documentation
        "198.18.0.1",  # benchmarking
        "240.0.0.1",  # reserved
        "2002:7f00:1::",  # 6to4 wrapping 127.0.0.1
        "2001:db8::1",
    ],
)
def test_only_globally_routable_addresses_are_allowed(address: str) -> None:
    with pytest.raises(DestinationRefused):
        check_destination(
            "https://hooks.example.com/x", ["127.0.0.1"], resolver({"hooks.example.com": [address]})
        )


@pytest.mark.parametrize(
    "host", ["a..example.com", "a" * 64 + ".example.com", "-x.example.com", "2130706433"]
)
def test_a_malformed_host_is_refused_for_good_without_resolving(host: str) -> None:
    def never(host: str, port: int) -> list[str]:
        raise AssertionError("a malformed host must not reach the resolver")

    with pytest.raises(WebhookHostInvalid) as error:
        check_destination(f"http://{host}/x", [], never)
    assert error.value.code == "E_WEBHOOK_URL_INVALID"


@pytest.mark.parametrize(
    "failure",
    [
        socket.gaierror(-2, "Name or service not known"),
        UnicodeError("label empty or too long"),
        TimeoutError(),
    ],
)
def test_any_resolver_error_is_a_failed_attempt_not_a_crash(failure: Exception) -> None:
    def broken(host: str, port: int) -> list[str]:
        raise failure

    with pytest.raises(ResolutionFailed) as error:
        check_destination("http://hooks.example.com/x", [], broken)
    assert error.value.code == "E_WEBHOOK_DNS"


@pytest.mark.parametrize("url", ["ftp://example.com/x", "file:///etc/passwd", "gopher://x", "http:///nohost"])
def test_only_http_urls_with_a_host_are_accepted(url: str) -> None:
    with pytest.raises(DestinationRefused):
        check_destination(url, [], resolver({}))
