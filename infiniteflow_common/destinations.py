"""Where a webhook may go (pure): host names by IDNA rules, and only globally routable addresses.

Both ends use these rules: ingest refuses a malformed host, or an address written literally that is not
global, when the job is submitted (the user hears at once); the notifier checks every address a name
resolves to before each attempt (DNS may change). `is_global` leaves out loopback, private, link-local,
carrier-grade NAT (100.64.0.0/10, where some clouds serve instance metadata), documentation, reserved
and unspecified ranges. The one exception is local development: an operator may allow loopback
(`WEBHOOK_ALLOWED_DESTINATIONS`), never any other range.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Annotated

import idna
from pydantic import AfterValidator

from infiniteflow_common.errors import InfiniteFlowError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)


class DestinationRefused(InfiniteFlowError):  # noqa: N818 - reads as the outcome it is
    """The webhook URL points somewhere the notifier must not send to."""

    code = "E_WEBHOOK_DESTINATION_REFUSED"


class WebhookHostInvalid(DestinationRefused):
    """The webhook URL's host is not a valid host name (IDNA) nor an IP address: it can never resolve."""

    code = "E_WEBHOOK_URL_INVALID"


def ip_literal(host: str) -> IPAddress | None:
    """The address when `host` is written as one (IPv6 without brackets, as `urlsplit` gives it)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_host(host: str) -> None:
    """A host name by IDNA 2008 rules (labels 1–63 letters, digits, inner hyphens; A-labels that decode;
    253 characters in all), or an IP address; raises `WebhookHostInvalid` saying what is wrong.

    A name whose last label is a number must be a dotted-quad IPv4 address: resolvers read `2130706433`
    or `0x7f.1` as addresses, and URL parsers disagree on them.
    """
    if ip_literal(host) is not None:
        return
    shown = host[:80]
    if ":" in host or "%" in host:
        raise WebhookHostInvalid(f"the webhook host {shown!r} is neither a host name nor an IP address")
    labels = host.removesuffix(".").split(".")
    if _NUMERIC_LABEL.match(labels[-1]):
        raise WebhookHostInvalid(
            f"the webhook host {shown!r} ends in a number but is not an IPv4 address (a.b.c.d)"
        )
    try:
        idna.encode(host, uts46=False)
    except (idna.IDNAError, UnicodeError) as exc:
        raise WebhookHostInvalid(
            f"the webhook host {shown!r} is not a valid host name ({exc}); use the punycode (xn--) form "
            "of international names"
        ) from exc


# IPv6 ranges whose last 32 bits are an IPv4 address a translator or tunnel delivers to.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # well-known NAT64 prefix (RFC 6052)
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")  # IPv4-translated addresses (RFC 7915)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")  # deprecated IPv4-compatible addresses (RFC 4291)
# Local-use NAT64 (RFC 8215): a site's own translators, with any prefix length inside it, so where the
# IPv4 address sits is the site's choice. Never globally reachable: refused whatever it carries.
_LOCAL_NAT64 = ipaddress.IPv6Network("64:ff9b:1::/48")


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries, if any.

    IPv4-mapped, NAT64 (64:ff9b::/96), SIIT IPv4-translated, IPv4-compatible, 6to4 and Teredo client
    forms: a gateway on the way turns each into a packet to that IPv4 address, so `::ffff:0:a00:1` or
    `64:ff9b::a00:1` reach 10.0.0.1 just as well as `10.0.0.1` does.
    """
    if isinstance(address, ipaddress.IPv4Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in (_NAT64, _SIIT, _IPV4_COMPATIBLE)):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """Globally routable, and so is any IPv4 address it carries inside."""
    if isinstance(address, ipaddress.IPv6Address) and address in _LOCAL_NAT64:
        return False
    inner = embedded_ipv4(address)
    # multicast is not "private", so `is_global` alone lets some of it through
    return address.is_global and not address.is_multicast and (inner is None or is_public(inner))


def is_loopback(address: IPAddress) -> bool:
    """A loopback address (also written IPv4-mapped, `::ffff:127.0.0.1`; tunnelled forms are not)."""
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def address_allowed(address: IPAddress, host: str, allowlist: Sequence[str]) -> bool:
    """Public addresses always; loopback only when the host or address is on the allowlist; nothing else."""
    if is_public(address):
        return True
    if not is_loopback(address):
        return False
    plain = (address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None) or address
    for entry in allowlist:
        if entry.lower() == host.lower():
            return True
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            continue
        if address in network or plain in network:
            return True
    return False


def refusal(address: IPAddress, host: str) -> str:
    """Why `address` (of `host`) is refused, in words a user can act on."""
    kind = "a loopback" if is_loopback(address) else "a private or reserved (not globally routable)"
    inner = embedded_ipv4(address)
    if inner is not None and not is_public(inner):
        inner_kind = "loopback" if inner.is_loopback else "private or reserved"
        kind = f"an IPv6 form of the {inner_kind} IPv4 address {inner}: {kind}"
    elif isinstance(address, ipaddress.IPv6Address) and address in _LOCAL_NAT64:
        kind = "a local-use NAT64 (64:ff9b:1::/48): a private or reserved (not globally routable)"
    return f"{host!r} is {address}, {kind} address; webhooks go only to public addresses" + (
        " (an operator may allow loopback with WEBHOOK_ALLOWED_DESTINATIONS)" if is_loopback(address) else ""
    )


def check_literal(host: str, allowlist: Sequence[str]) -> None:
    """Refuse (`DestinationRefused`) a host written as an address that may not receive webhooks."""
    address = ip_literal(host)
    if address is not None and not address_allowed(address, host, allowlist):
        raise DestinationRefused(refusal(address, host))


def loopback_allowlist(entries: Iterable[str]) -> tuple[str, ...]:
    """Validate `WEBHOOK_ALLOWED_DESTINATIONS`: names, or loopback addresses and networks only.

    A name admits only the loopback addresses it resolves to; a private or shared range is never allowed,
    so an entry such as `10.0.0.0/8` or `100.64.0.0/10` is a configuration error.
    """
    kept = []
    for entry in entries:
        entry = entry.strip()
        try:
            network = ipaddress.ip_network(entry, strict=False)
        except ValueError:
            try:
                check_host(entry)
            except WebhookHostInvalid as exc:
                raise ValueError(f"WEBHOOK_ALLOWED_DESTINATIONS: {exc.message}") from exc
        else:
            if not (network.network_address.is_loopback and network.broadcast_address.is_loopback):
                raise ValueError(
                    f"WEBHOOK_ALLOWED_DESTINATIONS may allow loopback only (local development), not {entry!r}"
                )
        kept.append(entry)
    return tuple(kept)


LoopbackAllowlist = Annotated[tuple[str, ...], AfterValidator(loopback_allowlist)]
"""The type of `WEBHOOK_ALLOWED_DESTINATIONS` in the settings of ingest and the notifier."""
