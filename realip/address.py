"""Addresses: parsing, normalising, matching against trusted networks.

Everything here is a pure function over ``str`` on top of the standard
:mod:`ipaddress` module. The rules (see ``docs/security.md``):

* An IPv4-mapped IPv6 address (``::ffff:203.0.113.5``) *is* the IPv4 address
  ``203.0.113.5``: a dual-stack ``[::]`` listener reports IPv4 clients that way.
* A zone id (``fe80::1%eth0``) is split off; it names an interface of this host,
  not a property of the client.
* Text that is not an address raises :class:`AddressError`, never passes through.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Final, TypeAlias

from .errors import ConfigError
from .ranges import RangesError, UnknownRangeError, networks

__all__ = [
    "AddressError",
    "IPAddress",
    "IPNetwork",
    "TrustedNetworks",
    "canonical_host",
    "ip_text",
    "is_local",
    "parse_host_port",
    "parse_ip",
    "parse_ip_text",
    "parse_networks",
    "unmap",
]

IPAddress: TypeAlias = "IPv4Address | IPv6Address"
IPNetwork: TypeAlias = "IPv4Network | IPv6Network"

#: Longest text worth handing to :mod:`ipaddress`: a full IPv6 address with an
#: embedded IPv4 part is 45 characters; a zone id adds a little.
MAX_ADDRESS_LENGTH: Final = 64
#: ``[`` + address + ``]:`` + 5 digits.
MAX_HOST_PORT_LENGTH: Final = MAX_ADDRESS_LENGTH + 8

_MAPPED_PREFIX: Final = "::ffff:"


class AddressError(ValueError):
    """Text that should have been an IP address (or network) is not one.

    ``text`` is the offending input, cut to 80 characters so that a hostile
    header cannot flood the log that reports it.
    """

    def __init__(self, text: object, why: str = "not an IP address") -> None:
        shown = text if isinstance(text, str) else repr(text)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        self.text = shown
        self.why = why
        super().__init__(f"{why}: {shown!r}")


def unmap(ip: IPAddress) -> IPAddress:
    """Return the IPv4 address inside an IPv4-mapped IPv6 address, else ``ip``."""
    if ip.version == 6:
        mapped = ip.ipv4_mapped
        if mapped is not None:
            return mapped
    return ip


def parse_ip(text: str) -> IPAddress:
    """Parse one IP address, unmapped and without a zone id.

    >>> parse_ip("::ffff:203.0.113.5")
    IPv4Address('203.0.113.5')
    >>> parse_ip("fe80::1%eth0")
    IPv6Address('fe80::1')

    Raises :class:`AddressError` for anything else: ports, brackets, host
    names, empty or over-long text, non-ASCII characters.
    """
    if not isinstance(text, str):
        raise AddressError(text, "not a string")
    if not text or len(text) > MAX_ADDRESS_LENGTH or not text.isascii():
        raise AddressError(text)
    address, sep, zone = text.partition("%")
    if sep and (not zone or ":" not in address):
        raise AddressError(text, "bad zone id")
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise AddressError(text) from None
    return unmap(ip)


_inet_pton = socket.inet_pton
_inet_ntop = socket.inet_ntop
_inet_ntoa = socket.inet_ntoa
_AF_INET: Final = socket.AF_INET
_AF_INET6: Final = socket.AF_INET6
_MAPPED_BYTES: Final = b"\x00" * 10 + b"\xff\xff"
_from_bytes = int.from_bytes


def ip_text(ip: IPAddress) -> str:
    """``str(ip)``, several times faster: the C library formats it.

    ``inet_ntop`` writes IPv6 the way :mod:`ipaddress` does (RFC 5952: lower case,
    no leading zeros, the first longest run of two or more zero groups compressed)
    except for addresses whose first 96 bits are zero or mapped, which it writes with
    a dotted IPv4 tail; those (rare, and never a mapped one: realip unmaps them) go
    through ``str()``, as does anything else. ``tests/test_fast_paths.py`` checks
    that the two agree.
    """
    kind = type(ip)
    if kind is IPv4Address:
        return _inet_ntoa(ip.packed)
    if kind is IPv6Address and ip.scope_id is None:  # type: ignore[union-attr]
        text = _inet_ntop(_AF_INET6, ip.packed)
        if "." not in text:
            return text
    return str(ip)  # a dotted tail, a zone id, or not one of ipaddress's own classes


def parse_ip_text(text: str) -> tuple[str, int, int] | None:
    """``(canonical text, version, integer)`` of an address, through ``inet_pton``.

    The fast path of :func:`parse_ip` for per-request use: the same answer as
    ``parse_ip(text)`` (canonical text ``str(parse_ip(text))``, unmapped), or
    ``None`` whenever ``inet_pton`` refuses the text or it holds a zone id; the
    caller then asks :func:`parse_ip`, which decides and says why. ``inet_pton``
    accepts exactly what :mod:`ipaddress` accepts apart from zone ids
    (``tests/test_forwarding.py`` checks it).
    """
    try:
        if ":" in text:
            if "%" in text:
                return None
            packed = _inet_pton(_AF_INET6, text)
            if packed[:12] == _MAPPED_BYTES:
                packed = packed[12:]
                return _inet_ntoa(packed), 4, _from_bytes(packed, "big")
            formatted = _inet_ntop(_AF_INET6, packed)
            if "." in formatted:
                formatted = str(IPv6Address(packed))
            return formatted, 6, _from_bytes(packed, "big")
        packed = _inet_pton(_AF_INET, text)
        return _inet_ntoa(packed), 4, _from_bytes(packed, "big")
    except (OSError, ValueError, TypeError):
        return None


def parse_host_port(text: str) -> tuple[IPAddress, int | None]:
    """Parse an address that may carry a port, as proxies write them.

    Accepted forms: ``1.2.3.4``, ``1.2.3.4:5678``, ``[2001:db8::1]``,
    ``[2001:db8::1]:443``, and a bare IPv6 address without brackets
    (``2001:db8::1``, where every colon belongs to the address).
    """
    if not isinstance(text, str) or len(text) > MAX_HOST_PORT_LENGTH:
        raise AddressError(text)
    port: int | None = None
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise AddressError(text, "bad bracketed address")
        if rest:
            port = _parse_port(rest[1:], text)
        if ":" not in host:
            raise AddressError(text, "brackets around a non-IPv6 address")
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
        port = _parse_port(port_text, text)
    else:
        host = text
    return parse_ip(host), port


def _parse_port(text: str, whole: str) -> int:
    # int() would accept "+80", " 80", "8_0" and non-ASCII digits: be strict.
    if not (1 <= len(text) <= 5 and text.isascii() and text.isdigit()):
        raise AddressError(whole, "bad port")
    port = int(text)
    if port > 65535:
        raise AddressError(whole, "bad port")
    return port


#: Where a reverse proxy or a container runtime's gateway usually is: loopback,
#: RFC 1918, RFC 4193 and link-local space (not the documentation ranges that
#: :attr:`ipaddress.IPv4Address.is_private` also counts).
LOCAL_NETWORKS: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16",
              "::1/128", "fc00::/7", "fe80::/10")
)  # fmt: skip


def is_local(text: str) -> bool:
    """Whether the address ``text`` is in ``LOCAL_NETWORKS``; ``False`` for non-addresses."""
    try:
        ip = parse_ip(text)
    except AddressError:
        return False
    return any(ip in network for network in LOCAL_NETWORKS)


def canonical_host(text: str) -> str:
    """The canonical text of an address: unmapped, zone split off, compressed."""
    return str(parse_ip(text))


_NAME_PROXIES: Final = (
    "name your proxies' addresses (IPs or CIDR networks), or set trust_all_peers_unsafe=True "
    "(REALIP_TRUST_ALL_PEERS_UNSAFE=on) if nothing but the proxy can reach this server"
)

#: Prefixes shorter than these trust a large part of the internet: allowed, with a warning.
WIDE_PREFIX: Final = {4: 8, 6: 32}


def parse_networks(
    value: str | Iterable[str | IPAddress | IPNetwork] | None, *, option: str, allow_everyone: bool = False
) -> tuple[IPNetwork, ...]:
    """Parse a list of IPs and CIDR networks from configuration.

    ``value`` is an iterable or one comma-separated string; ``None`` means none.
    A network written in IPv4-mapped IPv6 form (``::ffff:10.0.0.0/104``) is
    turned into its IPv4 network so that it matches the way peers are
    normalised. Host bits set (``10.0.0.1/8``) are an error: that is almost
    always a typo.

    A network that covers a whole address family (``0.0.0.0/0``, ``::/0``,
    ``::ffff:0:0/96``) and ``"*"`` trust every client to say who it is: they
    are refused unless ``allow_everyone`` (``trust_all_peers_unsafe``). A very
    wide network (shorter than /8 for IPv4, /32 for IPv6) is allowed with a
    warning, once.

    Raises :class:`~realip.ConfigError` naming ``option`` and the bad value,
    and what to write instead.
    """
    if value is None:
        return ()
    if isinstance(value, (bytes, bytearray)):
        raise ConfigError(option, value, "expected a string or a list of strings, not bytes")
    items: Iterable[object] = value.split(",") if isinstance(value, str) else value
    networks: list[IPNetwork] = []
    for item in items:
        if isinstance(item, (IPv4Network, IPv6Network)):
            network = item
        elif isinstance(item, (IPv4Address, IPv6Address)):
            network = ipaddress.ip_network(item)
        elif isinstance(item, str):
            text = item.strip()
            if not text:
                if isinstance(value, str):
                    continue  # "a, b," or an empty environment variable
                raise ConfigError(option, item, "empty entry")
            if text[0].isalpha() and ":" not in text:
                networks.extend(_named_range(text, option))  # "cloudflare", "private": checked lists
                continue
            network = _parse_network_text(text, option)
        else:
            raise ConfigError(option, item, "expected an IP address or CIDR network")
        network = _unmap_network(network)
        if network.prefixlen == 0:
            if not allow_everyone:
                raise ConfigError(
                    option, str(item), f"it covers every IPv{network.version} address, so any client could choose its "
                    f"own address; {_NAME_PROXIES}"
                )  # fmt: skip
        elif network.prefixlen < WIDE_PREFIX[network.version]:
            _wide.warn(option, network)
        networks.append(network)
    return tuple(networks)


def _named_range(name: str, option: str) -> tuple[IPNetwork, ...]:
    """The networks of a named range (:mod:`realip.ranges`), or a ConfigError listing the names."""
    try:
        return tuple(_unmap_network(n) for n in networks(name))  # checked lists: no width warning
    except UnknownRangeError as exc:
        why = f"not an address, a network or a known range name ({exc.args[0] if exc.args else exc}); "
        why += "hostnames are not resolved: write the proxy's IP address or network (e.g. '10.0.0.5')"
        raise ConfigError(option, name, why) from None
    except RangesError as exc:
        raise ConfigError(option, name, str(exc)) from None


def _parse_network_text(text: str, option: str) -> IPNetwork:
    if text == "*":
        raise ConfigError(option, text, f"realip has no wildcard; {_NAME_PROXIES}")
    try:
        return ipaddress.ip_network(text.partition("%")[0] if "/" not in text else text)
    except ValueError as exc:
        why = str(exc)
    if any(c.isspace() for c in text):
        why = "separate entries with commas, e.g. '10.0.0.1,10.0.0.2'"
    elif any(c.isalpha() for c in text.replace(":", "")) and not all(c in "0123456789abcdefABCDEF:./" for c in text):
        why = "hostnames are not resolved: write the proxy's IP address or network (e.g. '10.0.0.5' or '10.0.0.0/24')"
    raise ConfigError(option, text, why)


class _WideNetworks:
    """Warns once per (option, network) that a trusted network is very wide."""

    def __init__(self) -> None:
        self._said: set[tuple[str, str]] = set()

    def warn(self, option: str, network: IPNetwork) -> None:
        key = (option, str(network))
        if key in self._said:
            return
        self._said.add(key)
        logging.getLogger("realip").warning(
            "realip: %s: %s is very wide (shorter than /%d): every client in it may choose its own address; "
            "name the proxies' own addresses if you can",
            option, network, WIDE_PREFIX[network.version],
        )  # fmt: skip


_wide: Final = _WideNetworks()


def _unmap_network(network: IPNetwork) -> IPNetwork:
    if network.version == 6 and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return IPv4Network((mapped, network.prefixlen - 96))
    return network


class TrustedNetworks:
    """A set of IPs and networks, matched against normalised addresses.

    Matching a peer reported as ``::ffff:10.0.0.1`` against ``10.0.0.0/8``
    works because addresses are unmapped before they get here (and mapped
    networks are unmapped by :func:`parse_networks`).
    """

    __slots__ = ("_v4", "_v6", "networks")

    def __init__(self, networks: Iterable[IPNetwork]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(networks)
        # (network, mask) integer pairs: `ip in network` is `ip & mask == network`
        # (what ipaddress does), without a generator and two method calls per network.
        self._v4 = tuple((int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 4)
        self._v6 = tuple((int(n.network_address), int(n.netmask)) for n in self.networks if n.version == 6)

    @classmethod
    def parse(
        cls, value: str | Iterable[str | IPAddress | IPNetwork] | None, *, option: str, allow_everyone: bool = False
    ) -> TrustedNetworks:
        return cls(parse_networks(value, option=option, allow_everyone=allow_everyone))

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, IPv4Address):
            pairs = self._v4
        elif isinstance(ip, IPv6Address):
            pairs = self._v6
        else:
            return False
        value = int(ip)
        for network, mask in pairs:  # noqa: SIM110 - a loop, not any(generator): per request, and faster
            if value & mask == network:
                return True
        return False

    def contains_int(self, version: int, value: int) -> bool:
        """``ip in self`` for an address given as its version and integer (see :func:`parse_ip_text`)."""
        for network, mask in self._v4 if version == 4 else self._v6:  # noqa: SIM110 - as above
            if value & mask == network:
                return True
        return False

    def contains_text(self, text: str) -> bool:
        """Whether the address ``text`` is in these networks; ``False`` for anything that is not an address."""
        fast = parse_ip_text(text)
        if fast is not None:
            return self.contains_int(fast[1], fast[2])
        try:
            return parse_ip(text) in self
        except AddressError:
            return False

    def __bool__(self) -> bool:
        return bool(self.networks)

    def __repr__(self) -> str:
        return f"TrustedNetworks({[str(n) for n in self.networks]!r})"
