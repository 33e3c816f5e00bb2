"""The sans-I/O core: decide the client address from plain inputs.

Nothing here touches a socket, a server or a framework. The adapters
(:mod:`realip.asgi`, :mod:`realip.wsgi`, :mod:`realip.django`) hand over what
the server reported; the resolver returns a :class:`~realip.result.Resolution`.
"""

from __future__ import annotations

from typing import Final

from .address import AddressError, parse_ip
from .result import Resolution, Source

__all__ = ["BoundedCache", "Resolver"]

#: Entries a per-process cache may hold before it is emptied. A hostile client
#: that varies its port or headers costs at most this much memory.
CACHE_SIZE: Final = 4096


class BoundedCache(dict):  # type: ignore[type-arg]
    """A dict that empties itself when it reaches ``limit`` entries.

    Cheaper per hit than an LRU (a plain ``dict.get``), and bounded: the worst
    a flood of distinct keys can do is make every lookup a miss.
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int = CACHE_SIZE) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: object, value: object) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value


class Resolver:
    """Decides the client address. One per middleware, built at start-up."""

    __slots__ = ("_peer_cache",)

    def __init__(self) -> None:
        self._peer_cache = BoundedCache()

    def resolve_peer(self, peer: tuple[str, int] | list[object] | None) -> Resolution:
        """The answer from the socket peer alone (cached per peer)."""
        if peer is None:
            return _NO_PEER
        key = tuple(peer)
        found = self._peer_cache.get(key)
        if found is None:
            found = peer_resolution(key)  # type: ignore[arg-type]
            self._peer_cache.put(key, found)
        return found  # type: ignore[no-any-return]


_NO_PEER: Final = Resolution(client=None, peer=None, source=Source.PEER)


def peer_resolution(peer: tuple[str, int]) -> Resolution:
    """Normalise the socket peer: unwrap ``::ffff:a.b.c.d``, drop a zone id.

    A peer that is not an IP address (a Unix socket path, a server quirk) is
    left alone: ``client`` is ``None`` and the adapters do not touch it.
    """
    try:
        host, port = peer
        # WSGI servers report REMOTE_PORT as text; uWSGI leaves it out (0: unknown).
        port = int(port) if port not in (None, "") else 0
        ip = parse_ip(host)
    except (AddressError, TypeError, ValueError):
        return Resolution(client=None, peer=peer, source=Source.PEER)
    source = Source.MAPPED if ip.version == 4 and ":" in host else Source.PEER
    return Resolution(client=(str(ip), port), peer=(host, port), source=source)
