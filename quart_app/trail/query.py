"""What a reader of the trail asks for: a user, an address or network, a time window."""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from datetime import datetime

from quart_app.records import TEXT_PREFIX, TIME_LABEL, LoginRecord, escape, json_escaped

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def plain_address(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``) as its IPv4 form; others as they are."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> Network:
    """An address or a CIDR network, IPv4 or IPv6, as a network; raises ``ValueError``.

    A network inside ``::ffff:0:0/96`` (IPv4-mapped) becomes the IPv4 network
    it maps, so that ``::ffff:192.0.2.0/120`` matches ``192.0.2.7``.
    """
    network = ipaddress.ip_network(text.strip(), strict=False)
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(mapped):
        base = plain_address(network.network_address)
        return ipaddress.IPv4Network(f"{base}/{network.prefixlen - 96}")
    return network


@dataclass(frozen=True, slots=True)
class Query:
    """Filters that combine: every one given must hold. ``since`` is inclusive, ``until``
    exclusive; both are timezone-aware."""

    user: str | None = None
    network: Network | None = None
    since: datetime | None = None
    until: datetime | None = None

    def matches(self, record: LoginRecord) -> bool:
        """Whether ``record`` passes every filter."""
        if self.user is not None and record.username != self.user:
            return False
        if self.since is not None and record.time < self.since:
            return False
        if self.until is not None and record.time >= self.until:
            return False
        if self.network is not None:
            if record.ip == "-":
                return False
            address = plain_address(ipaddress.ip_address(record.ip))
            if address.version != self.network.version or address not in self.network:
                return False
        return True


def needles(query: Query) -> tuple[bytes, ...] | None:
    """Bytes each line that can match ``query`` holds, in one form or another; ``None``
    when any line can.

    A reader looks for these first and parses only the lines that hold one:
    the username as the text format writes it (escaped, between its labels)
    and as older versions did (raw), and the JSON string of the name as this
    project writes it, raw, and in ASCII with ``\\u`` escapes. A line written
    another way (an ASCII letter as ``\\u0061``) is found by a search
    without ``--user`` only.
    """
    if query.user is None:
        return None
    name = query.user
    forms = {
        f"{TEXT_PREFIX}{escape(name)}{TIME_LABEL}",
        f"{TEXT_PREFIX}{name}{TIME_LABEL}",  # older versions escaped fewer characters
        json_escaped(json.dumps(name, ensure_ascii=False)),
        json.dumps(name, ensure_ascii=False),
        json.dumps(name),  # every non-ASCII character as \\uHHHH, as many JSON writers do
    }
    # A lone surrogate (never written) encodes to bytes no UTF-8 log holds.
    return tuple(form.encode(errors="surrogatepass") for form in sorted(forms))
