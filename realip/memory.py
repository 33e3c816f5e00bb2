"""What realip remembers across requests: one layer, one policy.

Deciding a client is a pure function of what the transport says (the peer, a
connection's TOA or PROXY protocol answer) and of one header's text. Requests
repeat those inputs: a keep-alive connection sends the same peer every time, a
proxy relays the same client on many connections, and the proxies' own entries
come back in every header. So the answers are remembered, and this module is
the only place that does it. Delete the memory and the decision is unchanged,
only slower.

The policy, for every table here:

* **Bounded.** A table holds at most :data:`CACHE_SIZE` entries; when it is
  full it is emptied at once (cheaper per hit than an LRU, and the worst a flood
  of distinct keys can do is make every lookup a miss).
* **Short keys only.** A header text longer than :data:`CACHED_TEXT_LENGTH`
  (no chain of real proxies writes one) is never a key and never hashed for a
  lookup: it is decided every time. So a full table holds at most
  ``CACHE_SIZE`` keys of that size.
* **Keyed by what the server reported**, before any parsing: a hit costs one
  dictionary lookup and no parsing at all.
* **Per peer host, not per connection.** What is decided about a peer depends on
  its host alone; a host's entry (:class:`PeerFacts`) holds its current
  connection's answer and its last header text's, each checked against the
  request's own connection before use. A proxy opening a connection per
  request adds nothing per connection.
* **Per connection, no longer than the connection.** WSGI sockets are weak
  keys (a closed connection's entry goes with its socket); a server
  integration's connection answer is kept in its entry, so that its ``id`` is
  not reused while the entry lives.

:meth:`Memory.stats` reports the size of each table (``make bench`` prints it).
"""

from __future__ import annotations

import weakref
from typing import Any, Final

from .result import Resolution

__all__ = ["CACHED_TEXT_LENGTH", "CACHE_SIZE", "HOSTS", "BoundedCache", "Memory", "PeerFacts"]

#: Entries a table may hold before it is emptied.
CACHE_SIZE: Final = 4096

#: Longest header text (all values of a request together) kept as a key.
CACHED_TEXT_LENGTH: Final = 1024


class BoundedCache(dict):  # type: ignore[type-arg]
    """A dict that empties itself when it reaches ``limit`` entries."""

    __slots__ = ("limit",)

    def __init__(self, limit: int = CACHE_SIZE) -> None:
        super().__init__()
        self.limit = limit

    def put(self, key: object, value: object) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value


class PeerFacts:
    """Everything decided about one peer host (or one connection's answer), once.

    ``read``: it is a trusted proxy, whose header decides. ``strip``: it is
    not, and the forwarding headers it sends are removed. ``remote_addr``: the
    WSGI ``REMOTE_ADDR`` to write (the canonical host), ``None`` when unchanged.

    ``current``: ``(key, resolution, ask)``, the answer from the transport alone
    for the latest connection from this host, with that connection's peer as
    the server reported it (``key``: ``scope["client"]``, or WSGI's
    ``(REMOTE_ADDR, REMOTE_PORT)``), and whether the connection may be asked
    about (TOA; WSGI); a keep-alive request finds its own connection there, a
    new one makes its own (:meth:`connection`). For a connection's answer (TOA,
    PROXY protocol), ``key`` is ``None`` and the answer never changes.

    ``last``: the keep-alive memo, ``(header as last seen, its answer)``, only
    for short texts and answers without an error; it is the current
    connection's when the answer's ``peer`` is the current resolution's.

    Each is one assignment: threads serving connections from the same host see
    an old pair or a new one, and check whose connection it is.
    """

    __slots__ = ("client_host", "current", "last", "read", "remote_addr", "source", "strip")

    def __init__(
        self,
        resolution: Resolution,
        read: bool,
        strip: bool,
        ask: bool = False,
        remote_addr: str | None = None,
        *,
        key: object = None,
        source: str = "peer",
    ) -> None:
        self.current: tuple[object, Resolution, bool] = (key, resolution, ask)
        self.read = read
        self.strip = strip
        self.remote_addr = remote_addr
        self.client_host = resolution.client[0] if resolution.client is not None else None
        self.source = source
        self.last: tuple[object, Resolution] | None = None

    @property
    def resolution(self) -> Resolution:
        """The answer from the transport alone, for the current connection."""
        return self.current[1]

    def connection(self, key: object, peer: tuple[str, int], ask: bool = False) -> tuple[object, Resolution, bool]:
        """The answer for another connection from this host (``peer``, which the
        server reported as ``key``), which becomes the current one: ``current``."""
        client = peer if peer[0] == self.client_host else (self.client_host, peer[1])
        resolution: Resolution = _new_tuple(
            Resolution, (client, peer, self.source, (), None, None, None, None, None, None, None)
        )
        current = self.current = (key, resolution, ask)
        return current

    def remembered(self, header: object, base: Resolution) -> Resolution | None:
        """The answer kept for this header text on this connection (``base``: its answer
        from the transport), or ``None``.

        A keep-alive request finds its connection's own answer. Another connection
        from the same host with the same header gets the same answer but for its
        ``peer``: the header named the client and the proxies it passed, none of
        which depends on the port. (An answer the header did not make, such as a
        trusted proxy's own request without one, names no hops and is not reused.)
        """
        last = self.last
        if last is None or last[0] != header:
            return None
        answer = last[1]
        if answer.peer is base.peer:
            return answer
        if not answer.hops or base.toa is not None or base.proxy_protocol is not None:
            return None
        answer = _new_tuple(Resolution, (answer[0], base.peer, *answer[2:]))
        self.last = (header, answer)
        return answer


_new_tuple = tuple.__new__


#: Per process, shared by every middleware: host text as a server reported it ->
#: ``(canonical text, source)``, or ``None`` when it is not an address.
HOSTS: Final = BoundedCache()


class Memory:
    """The tables of one middleware (its trust settings are part of every answer)."""

    __slots__ = ("connections", "decisions", "entries", "peers", "sockets", "trusted_hosts")

    def __init__(self) -> None:
        #: peer host as the server reported it (``scope["client"][0]``; WSGI: REMOTE_ADDR) -> PeerFacts
        self.peers = BoundedCache()
        #: id(connection answer of a server integration) -> (that answer, its PeerFacts)
        self.connections = BoundedCache()
        #: canonical host text -> whether it is a trusted proxy
        self.trusted_hosts = BoundedCache()
        #: X-Forwarded-For entry as written (at most 32 characters) -> its address text if it
        #: is a trusted proxy, "" if another IPv4 address (the proxies' own entries come back
        #: in every header)
        self.entries = BoundedCache()
        #: header text (at most CACHED_TEXT_LENGTH) -> what the strategy made of it, as texts
        self.decisions = BoundedCache()
        #: WSGI: the connection's socket -> the PeerFacts of the connection's own answer
        #: (TOA, or the PROXY header gunicorn parsed on its first request)
        self.sockets: weakref.WeakKeyDictionary[Any, PeerFacts] = weakref.WeakKeyDictionary()

    def stats(self) -> dict[str, dict[str, int]]:
        """Per table: its entries, its limit and its longest text key (``make bench``)."""
        tables: dict[str, Any] = {
            "peers": self.peers,
            "connections": self.connections,
            "trusted_hosts": self.trusted_hosts,
            "decisions": self.decisions,
            "hosts (per process)": HOSTS,
            "entries": self.entries,
        }
        found = {
            name: {"entries": len(table), "limit": table.limit, "longest_key": _longest_key(table)}
            for name, table in tables.items()
        }
        memos = [f.last for f in self.peers.values() if f.last is not None]
        found["keep-alive memos"] = {
            "entries": len(memos),
            "limit": CACHE_SIZE,
            "longest_key": max((len(m[0]) for m in memos if isinstance(m[0], (str, bytes))), default=0),
        }
        found["sockets (weak)"] = {"entries": len(self.sockets), "limit": 0, "longest_key": 0}
        return found


def _longest_key(table: dict[Any, Any]) -> int:
    longest = 0
    for key in list(table):
        for part in key if isinstance(key, tuple) else (key,):
            if isinstance(part, (str, bytes)):
                longest = max(longest, len(part))
    return longest
