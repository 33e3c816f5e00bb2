"""Apps that echo what realip decided and which forwarding headers reached them.

Configured entirely from ``REALIP_*`` environment variables, as a deployment
that cannot edit code would be.
"""

from __future__ import annotations

from typing import Any

from realip import RealIPMiddleware, RealIPWSGIMiddleware, Resolution

FORWARDING = ("x-forwarded-for", "x-real-ip", "forwarded", "x-forwarded-proto", "x-forwarded-host")


def describe(realip: Resolution, client: Any, scheme: str, host: str | None, headers: dict[str, str]) -> dict:
    return {
        "client": list(client) if client else None,
        "peer": list(realip.peer or ()),
        "source": realip.source,
        "hops": list(realip.hops),
        "error": realip.error,
        "scheme": scheme,
        "host": host,
        "headers": {name: value for name, value in headers.items() if name in FORWARDING},
        "proxy_protocol": _proxy_protocol(realip),
    }


def _proxy_protocol(realip: Resolution) -> dict | None:
    header = realip.proxy_protocol
    if header is None:
        return None
    return {
        "version": header.version,
        "command": header.command,
        "family": header.family,
        "source": [str(header.source[0]), header.source[1]] if header.source else None,
        "destination": [str(header.destination[0]), header.destination[1]] if header.destination else None,
        "unique_id": header.unique_id.decode("ascii", "replace") if header.unique_id else None,
        "crc32c_verified": header.crc32c_verified,
        "tlv_types": [kind for kind, _ in header.tlvs],
    }


async def _asgi(scope: dict, receive: Any, send: Any) -> None:
    import json

    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            await send({"type": message["type"] + ".complete"})
            if message["type"] == "lifespan.shutdown":
                return
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    body = describe(scope["extensions"]["realip"], scope["client"], scope["scheme"], headers.get("host"), headers)
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.send", "text": json.dumps(body)})
        await send({"type": "websocket.close"})
        return
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})


def _wsgi(environ: dict, start_response: Any) -> list[bytes]:
    import json

    headers = {k[5:].lower().replace("_", "-"): v for k, v in environ.items() if k.startswith("HTTP_")}
    client = (environ["REMOTE_ADDR"], int(environ.get("REMOTE_PORT") or 0))
    body = describe(environ["realip"], client, environ["wsgi.url_scheme"], environ.get("HTTP_HOST"), headers)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(body).encode()]


asgi_app = RealIPMiddleware(_asgi)
wsgi_app = RealIPWSGIMiddleware(_wsgi)
