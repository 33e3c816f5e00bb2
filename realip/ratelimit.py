"""Rate-limit keys from the client realip decided, IPv6 clients grouped by network.

A rate limiter keyed on the full IPv6 address is evaded by a client that
rotates through the addresses of its own network: a home or cloud customer
routinely gets a whole ``/64`` (or a ``/56``, a ``/48``). :func:`key` gives one
key per network instead: IPv6 clients grouped by ``ipv6_prefix`` (``/64`` by
default; ``/128`` is one key per address), IPv4 clients by ``ipv4_prefix``
(``/32``, one key per address, by default). The key is the network in CIDR
text, ``"2001:db8:1:2::/64"`` or ``"203.0.113.5/32"``: stable across
processes and restarts, so it can name a bucket in Redis or memcached.

**What it trusts**: only what realip's middleware decided for this request
(``scope["extensions"]["realip"]``, ``environ["realip"]``, ``request.realip``),
which believed a forwarding header only from a trusted proxy. Without it (the
middleware is missing, or runs after the rate limiter) the key falls back to
the socket peer the server reported (``scope["client"]``, ``REMOTE_ADDR``),
normalised (``::ffff:a.b.c.d`` is ``a.b.c.d``) and logged once as a warning.
It never reads a forwarding header itself. A request with no client address
(a Unix-socket peer that no trusted proxy vouched for, or a value that is not
an address) gets :data:`UNKNOWN`: such requests share one bucket.

Ready-made key functions, with each library's own signature:

* slowapi: ``Limiter(key_func=realip.ratelimit.slowapi_key)``
* Flask-Limiter: ``Limiter(realip.ratelimit.flask_limiter_key, app=app)``
* django-ratelimit: ``@ratelimit(key="realip.ratelimit.django_key", rate="10/m")``

Another prefix: ``functools.partial(realip.ratelimit.slowapi_key, ipv6_prefix=56)``
(each function takes the prefixes as keyword arguments, which the libraries
never pass). The recipes are in ``docs/downstream/ratelimit.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Final

from ._log import Once
from .address import AddressError, parse_ip, parse_ip_text
from .core import CACHE_SIZE
from .errors import ConfigError
from .result import Resolution

__all__ = [
    "UNKNOWN",
    "client_ip",
    "django_key",
    "flask_limiter_key",
    "ip_key",
    "key",
    "slowapi_key",
]

#: The key of a request without a client address (see the module's docstring).
UNKNOWN: Final = "unknown"

#: RFC 6052's well-known NAT64 prefix, ``64:ff9b::/96``, as the top 96 bits. An
#: address in it is one IPv4 client translated to IPv6 (SIIT, 464XLAT): it is
#: keyed as that IPv4 address, not grouped with every other IPv4 client by /64.
_NAT64_WKP: Final = 0x0064FF9B << 64

#: (ipv6_prefix, ipv4_prefix) -> {client text: key}. Each bounded: emptied at CACHE_SIZE entries.
_caches: dict[tuple[int, int], dict[str, str]] = {}
_once: Final = Once()


def _check_prefix(option: str, value: object, bits: int) -> int:
    if type(value) is not int or not 0 <= value <= bits:
        raise ConfigError(option, value, f"expected a prefix length from 0 to {bits}")
    return value


def ip_key(ip: str, *, ipv6_prefix: int = 64, ipv4_prefix: int = 32) -> str:
    """The key of one client address: its network of the given prefix, as CIDR text.

    ``ip`` is an address as text (``"2001:db8:1:2:a:b:c:d"``, ``"::ffff:203.0.113.5"``,
    ``"fe80::1%eth0"``); it is trusted as the client, so pass only what realip
    decided. Text that is not an address gives :data:`UNKNOWN`. Cached per address
    (at most 4096 per pair of prefixes). A prefix out of range (or not an ``int``)
    raises :class:`~realip.ConfigError`.
    """
    cache = _caches.get((ipv6_prefix, ipv4_prefix))
    if cache is None:
        _check_prefix("ipv6_prefix", ipv6_prefix, 128)
        _check_prefix("ipv4_prefix", ipv4_prefix, 32)
        cache = _caches.setdefault((ipv6_prefix, ipv4_prefix), {})
    found = cache.get(ip)
    if found is None:
        found = _network(ip, ipv6_prefix, ipv4_prefix)
        if len(cache) >= CACHE_SIZE:
            cache.clear()
        cache[ip] = found
    return found


def _network(ip: str, ipv6_prefix: int, ipv4_prefix: int) -> str:
    if not isinstance(ip, str):
        return UNKNOWN
    parsed = parse_ip_text(ip)
    if parsed is not None:
        version, value = parsed[1], parsed[2]
    else:  # zone ids, and whatever inet_pton refuses
        try:
            address = parse_ip(ip)
        except AddressError:
            return UNKNOWN
        version, value = address.version, int(address)
    if version == 6 and value >> 32 == _NAT64_WKP:
        version, value = 4, value & 0xFFFFFFFF
    if version == 4:
        host = 32 - ipv4_prefix
        return str(IPv4Network((value >> host << host, ipv4_prefix)))
    host = 128 - ipv6_prefix
    return str(IPv6Network((value >> host << host, ipv6_prefix)))


def client_ip(request: object) -> str | None:
    """The client address realip decided for ``request``, or the socket peer without it.

    ``request`` is an ASGI scope, a WSGI environ, a Starlette / FastAPI
    ``Request``, a Flask / Werkzeug request or a Django ``HttpRequest``. Returns
    the text as found (the fallback may be ``::ffff:``-mapped), or ``None`` when
    there is no address: realip decided there is none (a Unix-socket peer), or
    the server reported none. Raises ``TypeError`` for anything else.
    """
    found = getattr(request, "realip", None)  # Django, with realip's middleware
    if isinstance(found, Resolution):
        return found.ip
    meta = getattr(request, "META", None)  # Django
    if isinstance(meta, Mapping):
        return _from_environ(meta)
    environ = getattr(request, "environ", None)  # Flask, Werkzeug
    if isinstance(environ, Mapping):
        return _from_environ(environ)
    scope = getattr(request, "scope", None)  # Starlette, FastAPI
    if isinstance(scope, Mapping):
        return _from_scope(scope)
    if isinstance(request, Mapping):
        if "REQUEST_METHOD" in request or "wsgi.version" in request:
            return _from_environ(request)
        if "type" in request:
            return _from_scope(request)
    raise TypeError(
        f"realip.ratelimit: not a request: {type(request).__name__} "
        "(expected an ASGI scope, a WSGI environ, or a Starlette, Flask or Django request)"
    )


def _from_scope(scope: Mapping[str, Any]) -> str | None:
    extensions = scope.get("extensions")
    found = extensions.get("realip") if isinstance(extensions, Mapping) else None
    if isinstance(found, Resolution):
        return found.ip
    _no_answer()
    client = scope.get("client")
    if client:
        host = client[0]
        return host if isinstance(host, str) and host else None
    return None


def _from_environ(environ: Mapping[str, Any]) -> str | None:
    found = environ.get("realip")
    if isinstance(found, Resolution):
        return found.ip
    _no_answer()
    host = environ.get("REMOTE_ADDR")
    return host if isinstance(host, str) and host else None


def _no_answer() -> None:
    _once(
        logging.WARNING,
        "realip: a rate-limit key was asked for a request that realip's middleware did not see; keyed by the "
        "socket peer, which behind a proxy is the proxy. Install realip's middleware so that it runs before "
        "the rate limiter (docs/downstream/ratelimit.md). Said once.",
    )


def key(request: object, *, ipv6_prefix: int = 64, ipv4_prefix: int = 32) -> str:
    """The rate-limit key of a request: its client's network as CIDR text.

    ``request`` is anything :func:`client_ip` takes. IPv6 clients are grouped
    by ``ipv6_prefix`` (``/64``; ``128`` for one key per address), IPv4 clients
    by ``ipv4_prefix`` (``/32``). :data:`UNKNOWN` when there is no address. What
    it trusts: the module's docstring.
    """
    ip = client_ip(request)
    if ip is None:
        return UNKNOWN
    return ip_key(ip, ipv6_prefix=ipv6_prefix, ipv4_prefix=ipv4_prefix)


def slowapi_key(request: Any, *, ipv6_prefix: int = 64, ipv4_prefix: int = 32) -> str:
    """slowapi's ``key_func``: ``Limiter(key_func=realip.ratelimit.slowapi_key)``.

    slowapi passes the Starlette ``Request`` to a key function whose parameter
    is named ``request`` (it looks at the name), as this one's is.
    """
    return key(request, ipv6_prefix=ipv6_prefix, ipv4_prefix=ipv4_prefix)


def flask_limiter_key(*, ipv6_prefix: int = 64, ipv4_prefix: int = 32) -> str:
    """Flask-Limiter's ``key_func``: ``Limiter(realip.ratelimit.flask_limiter_key, app=app)``.

    Flask-Limiter calls it with no arguments inside the request; it reads
    ``flask.request.environ``, where :class:`~realip.RealIPWSGIMiddleware`
    (wrapping ``app.wsgi_app``) put its answer.
    """
    from flask import request

    return key(request.environ, ipv6_prefix=ipv6_prefix, ipv4_prefix=ipv4_prefix)


def django_key(group: str | None, request: Any, *, ipv6_prefix: int = 64, ipv4_prefix: int = 32) -> str:
    """django-ratelimit's ``key``: ``@ratelimit(key="realip.ratelimit.django_key", rate="10/m")``.

    django-ratelimit calls a key function given as a dotted path or a callable
    with ``(group, request)``; ``request.realip`` is what realip's Django
    middleware decided. (django-ratelimit's own ``key="ip"`` reads
    ``REMOTE_ADDR``, which realip rewrote, and groups IPv6 by its
    ``RATELIMIT_IPV6_MASK``: that works too; this key is the same one the
    other frameworks get.)
    """
    return key(request, ipv6_prefix=ipv6_prefix, ipv4_prefix=ipv4_prefix)
