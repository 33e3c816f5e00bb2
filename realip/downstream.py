"""Forwarding headers that other libraries can safely read (``downstream_headers``).

Much code does not read ``scope["client"]`` / ``REMOTE_ADDR``: django-ipware,
slowapi's ``get_ipaddr``, Flask's ``request.access_route`` and many apps read
``X-Forwarded-For`` themselves, usually its *leftmost* entry, which the client
wrote. With ``downstream_headers=True`` (off by default) realip rewrites, after
it has decided, the header it reads to hold only what it believed, and sets
``X-Real-IP`` to the client:

* ``X-Forwarded-For`` (or a single-address header such as ``X-Real-IP``): the
  client, then the trusted proxies that appear in the header, in order, as the
  nearest proxy would have written it. With one proxy in front that is the
  client alone, so a library gets the client from either end of the list.
* ``Forwarded`` (RFC 7239): one ``for=`` element per address, the same list.
* ``X-Real-IP``: the client.

From a peer that is not a trusted proxy realip has removed every forwarding
header (``strip_untrusted_headers``); with this option the app then gets the
same headers, holding the peer. A request without a client address (a
Unix-socket peer nothing vouched for) keeps none of them.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from .result import Resolution

__all__ = ["chain", "forwarded_value", "rewrite_asgi", "rewrite_wsgi"]


def chain(resolution: Resolution) -> list[str]:
    """The client and the trusted proxies a header would list, in order (nearest last).

    ``Resolution.hops`` ends with the socket peer (and the load balancer, for a
    TOA or PROXY protocol answer), which no proxy writes into its own header:
    the last hop is left out.
    """
    client = resolution.client
    if client is None:
        return []
    return [client[0], *resolution.hops[:-1]]


def forwarded_value(addresses: list[str]) -> str:
    """An RFC 7239 ``Forwarded`` value with one ``for=`` element per address."""
    return ", ".join(f'for="[{ip}]"' if ":" in ip else f"for={ip}" for ip in addresses)


def _value(header: str, addresses: list[str]) -> str:
    if header == "forwarded":
        return forwarded_value(addresses)
    if header == "x-forwarded-for":
        return ", ".join(addresses)
    return addresses[0]  # a single-address header: the client


def rewrite_asgi(scope: MutableMapping[str, Any], resolution: Resolution, header: str | None) -> None:
    """Rewrite the ASGI scope's ``header`` (lower case; ``None``: only ``X-Real-IP``) and ``X-Real-IP``."""
    names = {b"x-real-ip", *([header.encode("latin-1")] if header else [])}
    kept = [(k, v) for k, v in scope.get("headers", ()) if k not in names]
    addresses = chain(resolution)
    if addresses:
        if header and header != "x-real-ip":
            kept.append((header.encode("latin-1"), _value(header, addresses).encode("latin-1")))
        kept.append((b"x-real-ip", addresses[0].encode("latin-1")))
    scope["headers"] = kept


def rewrite_wsgi(environ: MutableMapping[str, Any], resolution: Resolution, header: str | None) -> None:
    """Rewrite the WSGI environ's ``header`` (lower case; ``None``: only ``X-Real-IP``) and ``X-Real-IP``."""
    key = "HTTP_" + header.upper().replace("-", "_") if header else None
    addresses = chain(resolution)
    if not addresses:
        environ.pop("HTTP_X_REAL_IP", None)
        if key is not None:
            environ.pop(key, None)
        return
    if key is not None:
        environ[key] = _value(header, addresses)  # type: ignore[arg-type]
    environ["HTTP_X_REAL_IP"] = addresses[0]
