"""realip demo: real servers, real clients, real proxies; one table of what the app saw.

Run it with ``make demo``. It starts, on loopback:

* uvicorn with ``fastapi_app.py`` on a dual-stack ``[::]`` socket (IPv4 clients
  arrive as ``::ffff:a.b.c.d``), trusting one proxy: ``127.0.0.10``;
* nginx in front of it (``tests/proxies/nginx-realip.conf``, connecting from
  ``127.0.0.10`` and appending ``X-Forwarded-For``), when nginx is installed;
* a second uvicorn on an IPv4 socket behind an emulated NAT64 load balancer:
  the TOA kernel module cannot be loaded here, so the test suite's stand-in
  (``tests/toa_emulator``, preloaded) answers the shim's ``getsockopt`` as the
  module would for a connection from ``127.0.0.5``.

Then it sends requests from several loopback addresses, some of them lying in
``X-Forwarded-For``, and prints what the server's socket reported, what the app
saw, and which source realip used.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests import toa_emulator  # noqa: E402 - the repository's own test helpers
from tests.support.proxies import nginx  # noqa: E402
from tests.support.servers import EXAMPLES, serve, uvicorn_argv  # noqa: E402

PROXY = "127.0.0.10"  # where nginx connects from (proxy_bind): the one trusted proxy
LOAD_BALANCER = "127.0.0.5"  # plays the NAT64 load balancer for the TOA rows
NAT64_CLIENT = "nat64:[2001:db8::5]:40000"


def ask(port: int, source: str, headers: dict[str, str] | None = None) -> dict:
    host = "[::1]" if ":" in source else "127.0.0.1"
    transport = httpx.HTTPTransport(local_address=source)
    with httpx.Client(transport=transport, timeout=10) as client:
        return client.get(f"http://{host}:{port}/", headers=headers).json()


def hostport(pair: list) -> str:
    host, port = pair
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def row(family: str, source: str, via: str, seen: dict) -> tuple[str, ...]:
    return (family, source, via, hostport(seen["peer"]), hostport(seen["client"]), seen["source"])


def main() -> None:
    rows = [("client", "connects from", "via", "server socket reported", "app saw", "source")]
    notes = []
    forged = {"X-Forwarded-For": "6.6.6.6"}
    with tempfile.TemporaryDirectory(prefix="realip-demo-") as tmp_name:
        tmp = Path(tmp_name)
        env = {"REALIP_TRUSTED_PROXIES": PROXY}
        with serve("uvicorn", uvicorn_argv("fastapi_app:app"), tmp, env=env, cwd=EXAMPLES) as app:
            for family, source in [("IPv4", "127.0.0.1"), ("IPv4", "127.0.0.2"), ("IPv6", "::1")]:
                rows.append(row(family, source, "direct", ask(app.port, source)))
            rows.append(row("IPv4", "127.0.0.3", "direct, forging XFF", ask(app.port, "127.0.0.3", forged)))
            if shutil.which("nginx") or Path("/usr/sbin/nginx").exists():
                with nginx(tmp, "nginx-realip.conf", UPSTREAM=app.port, BIND=PROXY) as proxy:
                    for family, source in [("IPv4", "127.0.0.2"), ("IPv6", "::1")]:
                        seen = ask(proxy, source, forged)
                        rows.append(row(family, source, "nginx, forging XFF", seen))
            else:
                notes.append("nginx is not installed: no proxied rows (Debian: apt-get install nginx)")

        library = toa_emulator.build(tmp / "toa")
        env = {**toa_emulator.env({LOAD_BALANCER: NAT64_CLIENT}, library=library), "REALIP_TOA_PEERS": LOAD_BALANCER}
        argv = uvicorn_argv("fastapi_app:app", realip="HttpToolsProtocol")
        with serve("uvicorn-toa", argv, tmp, family="v4", env=env, cwd=EXAMPLES) as app:
            rows.append(row("IPv6", "2001:db8::5", "NAT64 LB 127.0.0.5 (TOA)", ask(app.port, LOAD_BALANCER)))

    print("realip demo: uvicorn + FastAPI (examples/fastapi_app.py), trusting the proxy 127.0.0.10\n")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, cells in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))
    print()
    print("direct:  uvicorn on a dual-stack [::] socket; IPv4 peers are ::ffff:a.b.c.d, realip unwraps them,")
    print("         and a forged X-Forwarded-For from a client that is not a trusted proxy is ignored (and removed).")
    print("nginx:   the peer is nginx (127.0.0.10, trusted); the client is the rightmost untrusted XFF entry.")
    print("TOA:     an IPv4 socket; the peer is the load balancer; the kernel TOA module (emulated here, as in")
    print("         the tests) holds the NAT64 client, which realip asks for once per connection.")
    for note in notes:
        print("note:", note)


if __name__ == "__main__":
    main()
