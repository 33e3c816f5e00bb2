"""The named lists: what each one is, where it is published, and the file format.

Nothing here touches the network. Two kinds of list:

* **Built in** (``loopback``, ``private``): fixed by RFCs, written here, never
  read from a file and never refreshed.
* **Provider lists** (``cloudflare``, ``cloudfront``, ``fastly``,
  ``google-cloud-lb``, ``huawei-elb``): the addresses a provider's proxies or
  load balancers connect from. Each ships as a dated file in ``data/``; the
  refreshable ones can be fetched again with ``realip ranges update``.

A provider list, shipped or fetched, is only accepted if :func:`check_networks`
passes: it may not trust a whole address family, very wide networks, or address
space that cannot belong to a provider's public proxies (loopback, RFC 1918,
link-local, multicast, IPv4 embedded in IPv6, ...). That check is what stands
between a bad download (or a hostile mirror) and ``trusted_proxies``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from ipaddress import IPv4Network, IPv6Network
from typing import Final, Literal, TypeAlias

Network: TypeAlias = "IPv4Network | IPv6Network"
Format = Literal["text", "aws", "fastly"]


class RangesError(ValueError):
    """A named list cannot be used: a file that does not parse, or networks that fail :func:`check_networks`."""


class UnknownRangeError(KeyError):
    """No list has this name. ``str()`` names the known ones.

    A :class:`KeyError` (and so a :class:`LookupError`): ``except KeyError`` works.
    """

    def __init__(self, name: object) -> None:
        self.name = name
        shown = repr(name) if not isinstance(name, str) or len(name) <= 64 else repr(name[:61] + "...")
        self.message = f"no named range {shown}; known names: {', '.join(known_names())}"
        super().__init__(self.message)

    def __str__(self) -> str:  # KeyError's own __str__ would repr() the message
        return self.message


#: Entry count bounds of one list (all of its sources together).
MIN_ENTRIES: Final = 1
MAX_ENTRIES: Final = 10_000
#: The shortest prefix a provider list may hold, per IP version: /8 is 1/256 of
#: IPv4; no provider publishes IPv6 proxy ranges wider than a /24 allocation.
MIN_PREFIX: Final = {4: 8, 6: 24}

#: Address space no provider's public proxy connects from. A provider list that
#: overlaps one of these is refused whole.
_FORBIDDEN: Final[tuple[tuple[str, str], ...]] = (
    ("0.0.0.0/8", "'this network' (RFC 1122)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("224.0.0.0/3", "multicast and reserved"),
    ("::/8", "reserved IPv6, with ::1, ::ffff:0:0/96 (IPv4-mapped) and 64:ff9b::/96 (NAT64)"),
    ("2001::/32", "Teredo (embeds IPv4 addresses)"),
    ("2002::/16", "6to4 (embeds IPv4 addresses)"),
    ("fc00::/7", "unique local (RFC 4193)"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
)
FORBIDDEN: Final[tuple[tuple[Network, str], ...]] = tuple((ipaddress.ip_network(n), why) for n, why in _FORBIDDEN)


@dataclass(frozen=True)
class Source:
    """One published document a provider list is fetched from.

    ``key`` names it for ``--url KEY=URL`` and ``REALIP_RANGES_URL_<KEY>``
    (upper case, ``-`` as ``_``); ``format`` says how to read it; ``version``
    (4, 6 or ``None`` for both) is the only IP version it may contain.
    """

    key: str
    url: str
    format: Format
    version: int | None = None

    @property
    def variable(self) -> str:
        return "REALIP_RANGES_URL_" + self.key.upper().replace("-", "_")


@dataclass(frozen=True)
class Provider:
    """A provider list: its name, what it is, where it comes from, and how old it may get.

    ``sources`` is empty for a list with no machine-readable publication
    (``google-cloud-lb``, ``huawei-elb``): those are kept by hand from the
    ``documentation`` URLs, ship with realip and cannot be refreshed.
    ``max_age_days`` is the age past which :func:`realip.ranges.report` warns.
    """

    name: str
    title: str
    sources: tuple[Source, ...]
    documentation: tuple[str, ...]
    max_age_days: int

    @property
    def refreshable(self) -> bool:
        return bool(self.sources)


#: CDN lists change every few months: warn when a copy is older than this.
CDN_MAX_AGE_DAYS: Final = 30
#: Documented load-balancer ranges change rarely: warn past a year.
DOCUMENTED_MAX_AGE_DAYS: Final = 365

PROVIDERS: Final[dict[str, Provider]] = {
    p.name: p
    for p in (
        Provider(
            "cloudflare",
            "Cloudflare",
            (
                Source("cloudflare-v4", "https://www.cloudflare.com/ips-v4", "text", 4),
                Source("cloudflare-v6", "https://www.cloudflare.com/ips-v6", "text", 6),
            ),
            ("https://www.cloudflare.com/ips/",),
            CDN_MAX_AGE_DAYS,
        ),
        Provider(
            "cloudfront",
            "Amazon CloudFront (origin-facing)",
            (Source("cloudfront", "https://ip-ranges.amazonaws.com/ip-ranges.json", "aws"),),
            ("https://docs.aws.amazon.com/vpc/latest/userguide/aws-ip-ranges.html",),
            CDN_MAX_AGE_DAYS,
        ),
        Provider(
            "fastly",
            "Fastly",
            (Source("fastly", "https://api.fastly.com/public-ip-list", "fastly"),),
            ("https://www.fastly.com/documentation/reference/api/utils/public-ip-list/",),
            CDN_MAX_AGE_DAYS,
        ),
        Provider(
            "google-cloud-lb",
            "Google Cloud load balancers (Google Front Ends)",
            (),
            (
                "https://cloud.google.com/load-balancing/docs/firewall-rules",
                "https://cloud.google.com/load-balancing/docs/health-check-concepts#ip-ranges",
            ),
            DOCUMENTED_MAX_AGE_DAYS,
        ),
        Provider(
            "huawei-elb",
            "Huawei Cloud ELB (shared load balancers)",
            (),
            ("https://support.huaweicloud.com/intl/en-us/usermanual-elb/",),
            DOCUMENTED_MAX_AGE_DAYS,
        ),
    )
}

#: The AWS ``service`` whose prefixes make the ``cloudfront`` list: the addresses
#: CloudFront connects to origins from (the ``com.amazonaws.global.cloudfront.origin-facing``
#: managed prefix list). The wider ``CLOUDFRONT`` service also holds the edge
#: addresses viewers connect to, which never connect to an origin.
AWS_SERVICE: Final = "CLOUDFRONT_ORIGIN_FACING"

#: The built-in local sets: (networks, what they are). Never implied by any other name.
BUILTIN: Final[dict[str, tuple[tuple[Network, ...], str]]] = {
    "loopback": (
        (IPv4Network("127.0.0.0/8"), IPv6Network("::1/128")),
        "RFC 1122 127.0.0.0/8 and RFC 4291 ::1/128",
    ),
    "private": (
        (
            IPv4Network("10.0.0.0/8"),
            IPv4Network("172.16.0.0/12"),
            IPv4Network("192.168.0.0/16"),
            IPv6Network("fc00::/7"),
        ),
        "RFC 1918 10/8, 172.16/12, 192.168/16 and RFC 4193 fc00::/7",
    ),
}


def known_names() -> tuple[str, ...]:
    """Every name :func:`realip.ranges.networks` knows: the providers, then the built-in local sets."""
    return (*PROVIDERS, *BUILTIN)


def normalise_name(name: object) -> str:
    """The canonical spelling of a list name (stripped, lower case); :class:`UnknownRangeError` if none."""
    if isinstance(name, str):
        text = name.strip().lower()
        if text in PROVIDERS or text in BUILTIN:
            return text
    raise UnknownRangeError(name)


# ---- checking networks ---------------------------------------------------------------


def parse_network(text: str, *, version: int | None = None) -> Network:
    """One entry of a provider list: a CIDR network with no host bits set (``strict=True``).

    A bare address is a /32 or /128. ``version`` (4 or 6) refuses the other family.
    Raises :class:`RangesError`.
    """
    shown = text if len(text) <= 60 else text[:57] + "..."
    if not text.isascii() or "%" in text or any(c.isspace() for c in text):
        raise RangesError(f"not a network: {shown!r}")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise RangesError(f"not a network: {shown!r} ({exc})") from None
    if version is not None and network.version != version:
        raise RangesError(f"{network} is IPv{network.version} in a list of IPv{version} networks")
    return network


def check_network(network: Network) -> None:
    """Refuse a network no provider list may hold (see the module docstring). Raises :class:`RangesError`."""
    if network.prefixlen == 0:
        raise RangesError(f"{network} covers the whole IPv{network.version} address space")
    if network.prefixlen < MIN_PREFIX[network.version]:
        raise RangesError(
            f"{network} is wider than /{MIN_PREFIX[network.version]}, the widest a provider list may hold"
        )
    for forbidden, why in FORBIDDEN:
        if forbidden.version == network.version and network.overlaps(forbidden):
            raise RangesError(f"{network} overlaps {forbidden}, {why}")


def check_networks(networks: Iterable[Network]) -> tuple[Network, ...]:
    """Check every network and the count; return them without duplicates, in order.

    Raises :class:`RangesError` saying what is wrong with the first bad one.
    """
    seen: dict[Network, None] = {}
    for network in networks:
        check_network(network)
        seen.setdefault(network, None)
        if len(seen) > MAX_ENTRIES:
            raise RangesError(f"more than {MAX_ENTRIES} networks")
    if len(seen) < MIN_ENTRIES:
        raise RangesError("no networks")
    return tuple(seen)


# ---- the file format ------------------------------------------------------------------
#
#   # realip named range: cloudflare
#   # source: https://www.cloudflare.com/ips-v4
#   # source: https://www.cloudflare.com/ips-v6
#   # fetched: 2025-01-01T00:00:00Z
#   # (any other comment lines)
#   173.245.48.0/20
#   ...
#
# Header keys are read from comment lines anywhere in the file; blank lines are
# ignored; every other line is one network.


@dataclass(frozen=True)
class ParsedFile:
    name: str
    sources: tuple[str, ...]
    fetched: datetime
    networks: tuple[Network, ...]


def parse_timestamp(text: str) -> datetime:
    """``2025-01-01``, ``2025-01-01T12:00:00Z`` or with an offset; naive times are UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise RangesError(f"bad time {text!r}: expected ISO 8601, e.g. 2025-01-01T00:00:00Z") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when.astimezone(timezone.utc)


def format_timestamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_file(text: str, *, name: str) -> ParsedFile:
    """Read a list file written for ``name`` and check its networks. Raises :class:`RangesError`."""
    sources: list[str] = []
    fetched: datetime | None = None
    declared: str | None = None
    raw: list[Network] = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].partition(":")
            key, value = key.strip().lower(), value.strip()
            if not sep:
                continue
            if key == "source" and value:
                sources.append(value)
            elif key == "fetched":
                fetched = parse_timestamp(value)
            elif key == "realip named range":
                declared = value
            continue
        try:
            raw.append(parse_network(stripped))
        except RangesError as exc:
            raise RangesError(f"line {number}: {exc}") from None
    if declared is not None and declared != name:
        raise RangesError(f"the file is for {declared!r}, not {name!r}")
    if fetched is None:
        raise RangesError("no '# fetched: <time>' line")
    if not sources:
        raise RangesError("no '# source: <url>' line")
    return ParsedFile(name, tuple(sources), fetched, check_networks(raw))


def render_file(
    name: str, networks: Sequence[Network], sources: Sequence[str], fetched: datetime, notes: Sequence[str] = ()
) -> str:
    """The text of a list file, as ``realip ranges update`` writes it (and :func:`parse_file` reads it)."""
    lines = [f"# realip named range: {name}"]
    lines += [f"# source: {url}" for url in sources]
    lines.append(f"# fetched: {format_timestamp(fetched)}")
    lines += [f"# {note}" for note in notes]
    lines += [str(network) for network in networks]
    return "\n".join(lines) + "\n"
