"""The answer realip gives for one request: small, immutable, published to the app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, NamedTuple

if TYPE_CHECKING:
    from .proxy_protocol import ProxyHeader
    from .toa import TOAAnswer

__all__ = ["CONNECTION_GONE", "NO_PEER", "UNIX_PEER", "Resolution", "Source", "make_resolution"]


class Source:
    """Names of what decided the client address (``Resolution.source``).

    A forwarding header decides under its own lower-case name, for example
    ``"x-forwarded-for"`` or ``"forwarded"``.
    """

    PEER: Final = "peer"
    """The socket peer, as the server reported it (nothing to change)."""
    MAPPED: Final = "mapped"
    """The socket peer, an IPv4-mapped IPv6 address unwrapped to IPv4."""
    TOA: Final = "toa"
    """The kernel TOA module: the NAT64 client behind a trusted load balancer
    (``toa.status`` is ``FOUND``), or a peer address the module itself wrote
    into ``getpeername()`` from a TCP option (``toa.rewritten_by_kernel``):
    then nobody on the wire vouched for it, and it is never trusted as a proxy."""
    UNIX: Final = "unix"
    """A peer on a Unix-socket listener: no address (``client`` is ``None``)."""
    PROXY_PROTOCOL: Final = "proxy-protocol"
    """A PROXY protocol header sent by a trusted load balancer."""


class Resolution(NamedTuple):
    """How realip decided the client address of one request.

    Published as ``scope["extensions"]["realip"]`` (ASGI) and
    ``environ["realip"]`` (WSGI). Immutable: a named tuple, cheap to make on
    the per-request paths and compared field by field.
    """

    client: tuple[str, int] | None
    peer: tuple[str, int] | None
    source: str
    hops: tuple[str, ...] = ()
    error: str | None = None
    toa: TOAAnswer | None = None
    proxy_protocol: ProxyHeader | None = None
    scheme: str | None = None
    host: str | None = None
    server_port: int | None = None
    prefix: str | None = None

    @property
    def rewritten_by_kernel(self) -> bool:
        """The peer address came from a TCP option, written into ``getpeername()``
        by a kernel TOA module: no user-space check saw who sent it."""
        toa = self.toa
        return toa is not None and toa.rewritten_by_kernel

    @property
    def ip(self) -> str | None:
        """The client IP text (``client[0]``), or ``None``."""
        return self.client[0] if self.client else None

    @property
    def port(self) -> int | None:
        """The client port (``client[1]``; 0 means unknown), or ``None``."""
        return self.client[1] if self.client else None


_FIELD_DOCS: Final = {
    "client": """What the app sees: ``(ip, port)``, the ip in canonical form (IPv4 dotted
    quad, IPv6 compressed, no zone id). The port is 0 when the deciding source
    carries none (most forwarding headers). ``None`` for a Unix-socket peer
    that nothing vouched for.""",
    "peer": "The socket peer exactly as the server reported it, before any change.",
    "source": "What decided ``client``: one of :class:`Source` or a header name.",
    "hops": "Trusted proxies between the client and this server, nearest last.",
    "error": "Why a forwarding header was not believed, when it was not.",
    "toa": "The TOA module's answer for this connection, when it was asked.",
    "proxy_protocol": """The PROXY protocol header of this connection (addresses and TLVs:
    ``.authority``, ``.alpn``, ``.unique_id``, ``.ssl``, ...), when one was read.""",
    "scheme": """The scheme the client used (``"https"``...), from ``X-Forwarded-Proto`` or
    ``Forwarded proto=``, when ``forwarded_proto`` is on and a trusted proxy said so.""",
    "host": """The host the client asked for, from ``X-Forwarded-Host`` or ``Forwarded
    host=``, when ``forwarded_host`` is on and a trusted proxy said so.""",
    "server_port": """The port the client connected to (1-65535), from ``X-Forwarded-Port``,
    when ``forwarded_port`` is on and a trusted proxy said so.""",
    "prefix": """The path prefix the proxy serves the application under (``"/api"``, no
    trailing ``/``), from ``X-Forwarded-Prefix``, when ``forwarded_prefix`` is
    on and a trusted proxy said so.""",
}
for _name, _doc in _FIELD_DOCS.items():
    getattr(Resolution, _name).__doc__ = _doc

_new_tuple = tuple.__new__


def make_resolution(
    client: tuple[str, int] | None,
    peer: tuple[str, int] | None,
    source: str,
    hops: tuple[str, ...] = (),
    error: str | None = None,
    toa: TOAAnswer | None = None,
    proxy_protocol: ProxyHeader | None = None,
    scheme: str | None = None,
    host: str | None = None,
    server_port: int | None = None,
    prefix: str | None = None,
) -> Resolution:
    """``Resolution(...)`` without the keyword handling, for the per-request paths.

    Same object, same fields (``tests/test_fast_paths.py`` compares the two).
    """
    return _new_tuple(
        Resolution, (client, peer, source, hops, error, toa, proxy_protocol, scheme, host, server_port, prefix)
    )


#: A peer without an address on a TCP listener (reset before ``getpeername()``):
#: never trusted for anything.
NO_PEER: Final = Resolution(client=None, peer=None, source=Source.PEER)

#: A peer on a Unix-socket listener (no address).
UNIX_PEER: Final = Resolution(client=None, peer=None, source=Source.UNIX)

#: The answer for a connection that was reset before realip could ask about it
#: (the TOA module answers ``ENOTCONN``): the client is gone and cannot read a
#: response, and the only address left is the load balancer's, which must not
#: become the client. Integrations close such a connection without running the app.
CONNECTION_GONE: Final = Resolution(client=None, peer=None, source="gone")
