"""Where a webhook may go: no loopback, private, link-local or cloud-metadata address unless allowlisted.

The host is resolved once; every address it resolves to is checked, and the request then goes to the
checked address (the Host header and TLS SNI keep the name), so DNS rebinding between the check and
the connection cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from infiniteflow_common.errors import InfiniteFlowError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]
METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class DestinationRefused(InfiniteFlowError):  # noqa: N818 - reads as the outcome it is
    """The webhook URL points somewhere the notifier must not send to."""

    code = "E_WEBHOOK_DESTINATION_REFUSED"


@dataclass(frozen=True)
class Target:
    """A checked destination: the URL to connect to (by address) and the name to present."""

    url: str
    host: str
    address: str


def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise DestinationRefused(f"cannot resolve {host!r}: {exc}") from exc
    return sorted({str(info[4][0]) for info in infos})


def is_internal(address: IPAddress) -> bool:
    """Loopback, private, link-local, multicast, reserved, unspecified or a cloud metadata address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address in METADATA
        or address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _allowed(address: IPAddress, host: str, allowlist: Sequence[str]) -> bool:
    for entry in allowlist:
        if entry.lower() == host.lower():
            return True
        try:
            if address in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def check_destination(url: str, allowlist: Sequence[str], resolve: Resolver = system_resolver) -> Target:
    """Resolve and vet `url`; raises `DestinationRefused` with a reason a person can act on."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise DestinationRefused(f"webhook URLs must be http(s)://host/…, got scheme {parts.scheme!r}")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
    if not addresses:
        raise DestinationRefused(f"{host!r} resolves to no address")
    for address in addresses:
        if is_internal(address) and not _allowed(address, host, allowlist):
            raise DestinationRefused(
                f"{host!r} resolves to {address}, an internal address; an operator can allow it with "
                "WEBHOOK_ALLOWED_DESTINATIONS"
            )
    chosen = addresses[0]
    literal = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{literal}:{parts.port}" if parts.port else literal
    pinned = SplitResult(parts.scheme, netloc, parts.path, parts.query, parts.fragment)
    return Target(url=urlunsplit(pinned), host=parts.netloc.rsplit("@", 1)[-1], address=str(chosen))
