"""Where a webhook may go: public addresses only (loopback when an operator allows it for local work).

The host is checked by IDNA rules and resolved once; every address it resolves to is checked
(`infiniteflow_common.destinations`), and the request then goes to the checked address (the Host header
and TLS SNI keep the name), so DNS rebinding between the check and the connection cannot redirect it.
A host that can never resolve (malformed) is refused for good; a name that does not resolve now is a
failed attempt, retried on the webhook's schedule like a connection error.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from infiniteflow_common.destinations import (
    DestinationRefused,
    WebhookHostInvalid,
    address_allowed,
    check_host,
    refusal,
)
from infiniteflow_common.errors import InfiniteFlowError

__all__ = ["DestinationRefused", "ResolutionFailed", "Target", "WebhookHostInvalid", "check_destination"]

Resolver = Callable[[str, int], list[str]]


class ResolutionFailed(InfiniteFlowError):  # noqa: N818 - reads as the outcome it is
    """The webhook's host did not resolve this time (a failed attempt; the schedule decides on retries)."""

    code = "E_WEBHOOK_DNS"


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL to connect to (by address) and the name to present."""

    url: str
    host: str
    address: str


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def check_destination(url: str, allowlist: Sequence[str], resolve: Resolver = system_resolver) -> Target:
    """Resolve and vet `url`.

    Raises `DestinationRefused` (or its `WebhookHostInvalid`) for a destination no retry can make
    acceptable, and `ResolutionFailed` for any error of the resolver — never anything else, so one bad
    URL cannot wedge the delivery loop.
    """
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise WebhookHostInvalid(f"the webhook URL cannot be parsed ({exc})") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise DestinationRefused(f"webhook URLs must be http(s)://host/…, got scheme {parts.scheme!r}")
    check_host(host)
    try:
        resolved = resolve(host, port or (443 if parts.scheme == "https" else 80))
        addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolved]
    except Exception as exc:  # gaierror, UnicodeError from the idna codec, a resolver timeout, …
        raise ResolutionFailed(f"cannot resolve {host!r}: {type(exc).__name__}: {exc}") from exc
    if not addresses:
        raise ResolutionFailed(f"{host!r} resolves to no address")
    for address in addresses:
        if not address_allowed(address, host, allowlist):
            raise DestinationRefused(refusal(address, host))
    chosen = addresses[0]
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{port}" if port else literal
    pinned = SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment)
    return Target(url=urlunsplit(pinned), host=parts.netloc.rsplit("@", 1)[-1], address=str(chosen))
