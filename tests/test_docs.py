"""The documentation site builds cleanly, its links resolve, and what it shows is real.

* ``sphinx-build -W --keep-going -n`` (warnings are errors, every
  cross-reference must resolve) builds ``docs/`` into a temporary directory;
  then every internal link and anchor of the HTML is followed.
* Every code and configuration block on the pages is a ``literalinclude`` of a
  file some test runs (``examples/``, ``tests/proxies/``, ``docs/snippets/``,
  ...); only shell commands and program output are typed into pages.
* ``docs/snippets/*`` (the framework examples) are run here.
* The captured output on the pages is re-captured and compared: ``realip
  doctor`` in private network namespaces (``docs/_generated/doctor-*.txt``),
  what each server's own ``[::]`` listener does (``docs/_generated/listeners.md``)
  and ``make demo`` (``docs/_generated/demo.txt``). Refresh them with
  ``REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_docs.py``.

Run as ``python -m tests.test_docs doctor-scenario NAME [LIBRARY]`` inside a new
network namespace, this module is also the scenario runner for the doctor captures.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest

from .support.programs import IN_CI

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
GENERATED = DOCS / "_generated"
SNIPPETS = DOCS / "snippets"
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent
REGENERATE = os.environ.get("REALIP_REGENERATE", "").lower() in ("1", "true", "yes")
REFRESH = "REALIP_REGENERATE=1 make test PYTEST_ARGS=tests/test_docs.py"


def pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md"))


def compare_or_regenerate(path: Path, fresh: str, normalise: Any = lambda text: text) -> None:
    """Fail when the committed ``path`` is not ``fresh`` (after ``normalise``); rewrite it under REALIP_REGENERATE."""
    if REGENERATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(fresh, encoding="utf-8")
        return
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    assert normalise(committed) == normalise(fresh), (
        f"{path.relative_to(ROOT)} is not what runs now. Regenerate it and review the difference:\n    {REFRESH}\n"
        f"--- committed\n{committed}\n--- now\n{fresh}"
    )


# ------------------------------------------------------------------------------ the build


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site") / "html"
    done = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout[-5000:]}\n{done.stderr[-10000:]}"
    return out


def test_site_builds_without_a_single_warning(site: Path) -> None:
    for page in pages():
        assert (site / f"{page.stem}.html").exists(), page.name
    assert (site / "api.html").read_text().count('class="sig sig-object py"') > 50  # the reference is generated


#: What the reference must show for the integrations whose server or framework
#: the docs extra does not install (docs/conf.py mocks them).
INTEGRATION_OBJECTS = (
    "realip.django.RealIPMiddleware",
    "realip.django.RealIPConfig",
    "realip.uvicorn.HttpToolsProtocol",
    "realip.uvicorn.AutoHTTPProtocol",
    "realip.gunicorn.UvicornWorker",
)


def test_the_reference_shows_the_server_and_framework_integrations(site: Path) -> None:
    api = (site / "api.html").read_text(encoding="utf-8")
    for name in INTEGRATION_OBJECTS:
        assert f'id="{name}"' in api, name


#: Modules the docs extra (pyproject.toml) does not install, and that realip's
#: integrations import: hidden from the build below, as on a docs-only machine.
NOT_IN_THE_DOCS_EXTRA = ("asgiref", "django", "gunicorn", "uvicorn", "uvicorn_worker", "starlette", "fastapi", "flask")

BUILD_WITHOUT = """
import importlib.abc, sys
hidden = set(sys.argv[1].split(","))

class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in hidden:
            raise ModuleNotFoundError(f"No module named {name!r} (hidden: not in the docs extra)", name=name)
        return None

sys.meta_path.insert(0, Hide())  # autodoc's mocks go in front of it while it imports
from sphinx.cmd.build import main
sys.exit(main(sys.argv[2:]))
"""


def test_the_documented_build_works_with_only_the_docs_extra(tmp_path: Path) -> None:
    """``sphinx-build -W -n -b html docs ...`` as pyproject.toml documents it, with
    the servers and frameworks hidden as if only ``.[docs]`` were installed."""
    out = tmp_path / "html"
    argv = [sys.executable, "-c", BUILD_WITHOUT, ",".join(NOT_IN_THE_DOCS_EXTRA)]
    argv += ["-W", "--keep-going", "-n", "-q", "-b", "html", str(DOCS), str(out)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, f"sphinx-build failed:\n{done.stdout[-5000:]}\n{done.stderr[-10000:]}"
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in INTEGRATION_OBJECTS:
        assert f'id="{name}"' in api, name


#: Public modules written now, added to api.md when their docstrings build with -W -n.
NOT_YET_IN_THE_REFERENCE = {
    "realip.ranges",
    "realip.ranges.cli",
    "realip.ranges.fetch",
    "realip.ranges.lists",
}


def test_the_reference_covers_every_public_module() -> None:
    import pkgutil

    import realip

    public = {"realip"}
    for module in pkgutil.walk_packages(realip.__path__, "realip."):
        if not any(part.startswith("_") and part != "__main__" for part in module.name.split(".")):
            public.add(module.name)
    documented = set(re.findall(r"^\.\. automodule:: (\S+)", (DOCS / "api.md").read_text(encoding="utf-8"), re.M))
    assert not documented & NOT_YET_IN_THE_REFERENCE, "documented now: drop them from NOT_YET_IN_THE_REFERENCE"
    missing = sorted(public - documented - NOT_YET_IN_THE_REFERENCE)
    assert not missing, f"docs/api.md has no automodule for {missing}"


def test_the_pages_the_code_points_at_have_those_sections(site: Path) -> None:
    """Advice in realip/ ends with ``see docs/PAGE.md#SECTION``: the section must exist."""
    pointers = set()
    for path in (ROOT / "realip").rglob("*.py"):
        pointers.update(re.findall(r"docs/([a-z0-9_-]+)\.md#([a-z0-9_-]+)", path.read_text(encoding="utf-8")))
    assert pointers
    missing = sorted(f"docs/{page}.md#{anchor}" for page, anchor in pointers
                     if anchor not in _parse(site / f"{page}.html").ids)  # fmt: skip
    assert not missing, missing


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for key in ("id", "name"):
            if values.get(key):
                self.ids.add(values[key])  # type: ignore[arg-type]
        if tag == "a" and values.get("href"):
            self.hrefs.append(values["href"])  # type: ignore[arg-type]


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


def test_every_internal_link_and_anchor_resolves(site: Path) -> None:
    parsed = {path: _parse(path) for path in site.rglob("*.html")}
    broken = []
    checked = 0
    for path, links in parsed.items():
        for href in links.hrefs:
            parts = urlsplit(href)
            if parts.scheme or parts.netloc or href.startswith("mailto:"):
                continue
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.exists():
                broken.append(f"{path.relative_to(site)}: {href} (no such file)")
                continue
            if parts.fragment and target.suffix == ".html":
                ids = parsed[target].ids if target in parsed else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{path.relative_to(site)}: {href} (no such anchor)")
    assert checked > 200
    assert not broken, "\n".join(broken)


# ------------------------------------------------------------------------------ what is on the pages

#: Fences that may be typed into a page: shell commands and program output.
TYPED = {"sh", "console", "text"}
#: Directives that are not code (MyST's ``{name}`` fences).
DIRECTIVES = {
    "{toctree}",
    "{eval-rst}",
    "{literalinclude}",
    "{include}",
    "{note}",
    "{warning}",
    "{important}",
    "{tip}",
    "{admonition}",
    "{table}",
    "{contents}",
}
#: Included but run by no test, and said so on the page.
UNTESTED = {"docs/snippets/kangle-config.xml"}

_FENCE = re.compile(r"^(?P<fence>```+|~~~+|:::+)\s*(?P<info>\S*)(?P<rest>.*)$")


def fences(page: Path) -> Iterator[tuple[int, str, str, list[str]]]:
    """(line, info, argument, body lines) of every fenced block of a MyST page."""
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        match = _FENCE.match(lines[i])
        if match:
            fence = match["fence"]
            end = i + 1
            while end < len(lines) and not lines[end].startswith(fence):
                end += 1
            yield i + 1, match["info"], match["rest"].strip(), lines[i + 1 : end]
            i = end + 1
            continue
        i += 1


def _tested(relative: str) -> bool:
    """Whether some test file names this file (by file name or module path)."""
    path = ROOT / relative
    if relative.startswith("examples/"):
        return True  # every example is started by a test (test_examples, test_mapped_peers, test_toa_servers)
    doctor = re.fullmatch(r"docs/_generated/doctor-(.+)\.txt", relative)
    if doctor:
        return doctor[1] in DOCTOR_SCENARIOS  # captured (and checked) by the scenario of that name
    names = {path.name}
    if path.suffix == ".py":
        names.add(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if relative.startswith("docs/snippets/"):
            names.add(f'"{path.stem}"')  # imported by module name (DJANGO_SETTINGS_MODULE)
    for test in (ROOT / "tests").rglob("*.py"):
        if test.resolve() == path.resolve():
            continue
        text = test.read_text(encoding="utf-8")
        if any(name in text for name in names):
            return True
    return False


def test_code_and_configuration_on_the_pages_come_from_tested_files() -> None:
    problems = []
    included = 0
    for page in pages():
        text = page.read_text(encoding="utf-8")
        for line, info, argument, _ in fences(page):
            where = f"{page.name}:{line}"
            if info in DIRECTIVES:
                if info in ("{literalinclude}", "{include}"):
                    target = (page.parent / argument).resolve()
                    relative = target.relative_to(ROOT).as_posix()
                    included += 1
                    if not target.exists():
                        problems.append(f"{where}: {relative} does not exist")
                    elif relative in UNTESTED:
                        if "untested" not in text.lower():
                            problems.append(f"{where}: {relative} is untested and the page must say so")
                    elif info == "{literalinclude}" and not _tested(relative):
                        problems.append(f"{where}: no test runs {relative}")
                continue
            if info not in TYPED:
                problems.append(f"{where}: a typed ```{info} block; include it from a file a test runs")
    assert included > 30
    assert not problems, "\n".join(problems)


def test_the_pages_docstrings_name_exist() -> None:
    """Docstrings and comments in realip/ and tests/ point readers at docs pages: they must exist."""
    named = set()
    for path in [*(ROOT / "realip").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "tests").rglob("*.c*")]:
        named.update(re.findall(r"docs/([a-z0-9_-]+\.md)", path.read_text(encoding="utf-8", errors="replace")))
    assert named
    missing = sorted(name for name in named if not (DOCS / name).exists())
    assert not missing, missing


# ------------------------------------------------------------------------------ the snippets, run


def load(name: str) -> ModuleType:
    path = SNIPPETS / name
    spec = importlib.util.spec_from_file_location(f"docs_snippet_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=False)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("REALIP_")]:
        monkeypatch.delenv(name)


async def asgi_get(app: Any, peer: str, headers: dict[str, str]) -> Any:
    import httpx

    transport = httpx.ASGITransport(app=app, client=(peer, 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://app.test") as c:
        return await c.get("/", headers=headers)


@pytest.mark.usefixtures("clean_env")
def test_fastapi_snippet() -> None:
    import asyncio

    app = load("fastapi_behind_proxy.py").app
    body = asyncio.run(asgi_get(app, "10.0.0.1", {"X-Forwarded-For": "6.6.6.6, 203.0.113.7, 10.0.0.2"})).json()
    assert body == {
        "client": "203.0.113.7",
        "peer": "10.0.0.1",
        "source": "x-forwarded-for",
        "hops": ["10.0.0.2", "10.0.0.1"],
    }
    body = asyncio.run(asgi_get(app, "198.51.100.9", {"X-Forwarded-For": "6.6.6.6"})).json()
    assert body["client"] == "198.51.100.9" and body["source"] == "peer"


@pytest.mark.usefixtures("clean_env")
def test_starlette_snippet() -> None:
    import asyncio

    app = load("starlette_app.py").app
    forwarded = {"Forwarded": 'for=6.6.6.6, for="[2001:db8::7]:4711";proto=https'}
    body = asyncio.run(asgi_get(app, "fd00::1", forwarded)).json()
    assert body == {"client": "2001:db8::7", "scheme": "https", "source": "forwarded"}
    body = asyncio.run(asgi_get(app, "198.51.100.9", forwarded)).json()
    assert body == {"client": "198.51.100.9", "scheme": "http", "source": "peer"}


@pytest.mark.usefixtures("clean_env")
def test_flask_snippet(caplog: pytest.LogCaptureFixture) -> None:
    app = load("flask_behind_proxy.py").app
    c = app.test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.5", "REMOTE_PORT": "5555"}
    body = c.get("/", environ_base=proxy, headers={"X-Real-IP": "203.0.113.7"}).get_json()
    assert body == {"client": "203.0.113.7", "source": "x-real-ip", "error": None}
    with caplog.at_level("WARNING", logger="realip"):
        assert c.get("/", environ_base=proxy, headers={"X-Real-IP": "6.6.6.6, 203.0.113.7"}).status_code == 400
    # the log line troubleshooting.md quotes
    assert caplog.messages and caplog.messages[-1] in (DOCS / "troubleshooting.md").read_text()
    other = {"REMOTE_ADDR": "198.51.100.9", "REMOTE_PORT": "5555"}
    assert c.get("/", environ_base=other, headers={"X-Real-IP": "6.6.6.6"}).get_json()["client"] == "198.51.100.9"


DJANGO_CHECK = """
import json, django
django.setup()
from django.test import Client
proxy = Client(REMOTE_ADDR="10.0.0.1")
answer = proxy.get("/", headers={"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}).json()
direct = Client(REMOTE_ADDR="198.51.100.9").get("/", headers={"X-Forwarded-For": "6.6.6.6"}).json()
print(json.dumps([answer, direct]))
"""


def test_django_settings_snippet_under_wsgi_and_asgi(tmp_path: Path) -> None:
    from .support.clients import whoami
    from .support.servers import serve, tool

    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("REALIP_")},
        "PYTHONPATH": os.pathsep.join([str(EXAMPLES / "django_project"), str(SNIPPETS), str(ROOT)]),
        "DJANGO_SETTINGS_MODULE": "django_settings",
    }
    done = subprocess.run([sys.executable, "-c", DJANGO_CHECK], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    answer, direct = json.loads(done.stdout)
    assert answer["client"][0] == "203.0.113.7" and answer["source"] == "x-forwarded-for"
    assert direct["client"][0] == "198.51.100.9" and direct["source"] == "peer"
    # ASGI: the same settings under uvicorn; this test's clients are not trusted proxies.
    argv = [tool("uvicorn"), "project.asgi:application", "--fd", "{fd}", "--no-proxy-headers"]
    with serve("django-asgi", argv, tmp_path, env={"DJANGO_SETTINGS_MODULE": "django_settings",
                                                   "PYTHONPATH": env["PYTHONPATH"]},
               cwd=EXAMPLES / "django_project") as server:  # fmt: skip
        body, port = whoami(server.url(), "127.0.0.2", {"X-Forwarded-For": "6.6.6.6"})
    assert body["client"] == ["127.0.0.2", port] and body["source"] == "mapped"


RUN_WITH_FD = """
import runpy, sys, uvicorn
fd, path = int(sys.argv[1]), sys.argv[2]
original = uvicorn.run
def run(app, **options):  # the snippet's own options, on the test's socket instead of port 8000
    options.pop("host"), options.pop("port")
    original(app, fd=fd, **options)
uvicorn.run = run
runpy.run_path(path, run_name="__main__")
"""


def test_uvicorn_toa_snippet_believes_only_its_toa_peers(tmp_path: Path, emulator_library: Path) -> None:
    """The snippet's ``toa_peers`` decide: 127.0.0.5 carries a NAT64 client, but it is
    not in the dedicated ELB's subnet (10.1.0.0/24), so it is never asked and stays
    the client. (Trusted peers under ``uvicorn.run`` are in test_toa_servers.py.)"""
    from . import toa_emulator
    from .support.clients import whoami
    from .support.servers import serve

    log = tmp_path / "lookups.log"
    env = toa_emulator.env({"127.0.0.5": "nat64:[2001:db8::5]:40000"}, log, library=emulator_library)
    argv = [sys.executable, "-c", RUN_WITH_FD, "{fd}", str(SNIPPETS / "uvicorn_toa.py")]
    with serve("uvicorn-toa-snippet", argv, tmp_path, family="v4", env=env, cwd=EXAMPLES) as server:
        body, port = whoami(server.url(), "127.0.0.5")
    assert body["client"] == ["127.0.0.5", port] and body["source"] == "peer"
    assert toa_emulator.count_lookups(log) == 0


def test_config_error_quoted_in_troubleshooting_is_what_realip_raises() -> None:
    from realip import ConfigError, RealIPMiddleware

    with pytest.raises(ConfigError) as raised:
        RealIPMiddleware(lambda *a: None, trusted_proxies="10.0.0.1/8")
    assert str(raised.value) in (DOCS / "troubleshooting.md").read_text()


def test_untested_kangle_snippet_is_at_least_well_formed_xml() -> None:
    import xml.etree.ElementTree as ET

    root = ET.fromstring((SNIPPETS / "kangle-config.xml").read_text(encoding="utf-8"))
    assert root.tag == "config"
    assert root.find("server").get("name") == "app"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------ captured output: make demo


def test_demo_output_on_the_landing_page_is_what_the_demo_prints() -> None:
    from .support.programs import require_program

    require_program("nginx")  # without it the demo prints fewer rows
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py")], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr

    def normalise(text: str) -> str:
        text = re.sub(r"(port )\d+", r"\1N", text)
        return re.sub(r"\]?:\d+", ":N", text).replace(" ", "")

    compare_or_regenerate(GENERATED / "demo.txt", done.stdout, normalise)


# ------------------------------------------------------------------------------ captured output: listeners


def _bindv6only() -> int | None:
    try:
        return int(Path("/proc/sys/net/ipv6/bindv6only").read_text())
    except (OSError, ValueError):
        return None


#: (what, argv with {port}, app directory) of each server binding its own ``[::]`` listener.
LISTENERS = [
    ("uvicorn, one process", ["uvicorn", "fastapi_app:app", "--host", "::", "--port", "{port}"]),
    ("uvicorn, `--workers 2`", ["uvicorn", "fastapi_app:app", "--host", "::", "--port", "{port}", "--workers", "2"]),
    ("gunicorn (sync worker)", ["gunicorn", "--bind", "[::]:{port}", "flask_app:app"]),
    (
        "gunicorn, realip's uvicorn worker",
        ["gunicorn", "-k", "realip.gunicorn.UvicornWorker", "--bind", "[::]:{port}", "fastapi_app:app"],
    ),
    ("Hypercorn", ["hypercorn", "--bind", "[::]:{port}", "fastapi_app:app"]),
    ("Werkzeug (`flask run`)", ["flask", "--app", "flask_app", "run", "--host", "::", "--port", "{port}"]),
    ("waitress, `[::]`", ["waitress-serve", "--listen=[::]:{port}", "flask_app:app"]),
    ("waitress, `*` (IPv4 and IPv6 sockets)", ["waitress-serve", "--listen=*:{port}", "flask_app:app"]),
]


def _seen(port: int, source: str) -> str:
    import httpx

    from .support.clients import client

    host = "[::1]" if ":" in source else "127.0.0.1"
    try:
        with client(source) as c:
            body = c.get(f"http://{host}:{port}/").json()
    except httpx.ConnectError:
        return "refused"
    peer, seen = body["peer"][0], body["client"][0]
    return f"`{peer}`, app sees `{seen}`" if peer != seen else f"`{peer}`"


def test_listener_table_is_what_the_servers_do(tmp_path: Path) -> None:
    """What each server's own ``[::]`` option gives IPv4 and IPv6 clients (with realip in the app)."""
    from .support.servers import serve

    if _bindv6only() != 0:
        pytest.skip("the table is for net.ipv6.bindv6only = 0, the Linux default")
    rows = []
    for what, argv in LISTENERS:
        command = " ".join(argv).replace("{port}", "8000")
        full = [str(BIN / argv[0]), *argv[1:]]
        with serve(argv[0], full, tmp_path, family="v6", cwd=EXAMPLES) as server:
            rows.append((what, f"`{command}`", _seen(server.port, "127.0.0.1"), _seen(server.port, "::1")))
    lines = [
        "<!-- Generated by tests/test_docs.py (net.ipv6.bindv6only = 0); do not edit. -->",
        "",
        "| server | command | IPv4 client `127.0.0.1` | IPv6 client `::1` |",
        "|---|---|---|---|",
        *(f"| {' | '.join(row)} |" for row in rows),
        "",
    ]
    compare_or_regenerate(GENERATED / "listeners.md", "\n".join(lines))


# ------------------------------------------------------------------------------ captured output: realip doctor

#: name -> (servers as (argv, port, family)), whether the TOA module is there (emulated)
GUNICORN = ["gunicorn", "--workers", "1", "flask_app:app", "--bind"]
DOCTOR_SCENARIOS: dict[str, tuple[list[tuple[list[str], int, str]], bool]] = {
    # netstat only shows tcp6; uvicorn --host :: refuses IPv4; a local proxy's upstream
    "listeners": (
        [
            ([*GUNICORN, "[::]:8000"], 8000, "v6"),
            (["uvicorn", "fastapi_app:app", "--host", "::", "--port", "8001"], 8001, "v6"),
            (["uvicorn", "fastapi_app:app", "--host", "127.0.0.1", "--port", "8002"], 8002, "v4"),
        ],
        False,
    ),
    # every request comes from 100.125.x.x: no module on this host
    "toa-missing": ([([*GUNICORN, "0.0.0.0:8000"], 8000, "v4")], False),
    # the module is there, but the app listens on AF_INET6
    "toa-af-inet6": ([([*GUNICORN, "[::]:8000"], 8000, "v6")], True),
    # the module is there and the app listens on AF_INET: what toa.md recommends
    "toa-af-inet": ([([*GUNICORN, "0.0.0.0:8000"], 8000, "v4")], True),
}


def _private_namespace_available() -> str | None:
    """Why ``unshare --net`` cannot be used here, or ``None`` when it can."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare (util-linux) is not installed"
    done = subprocess.run([unshare, "--net", "true"], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"cannot create a network namespace here ({done.stderr.strip() or done.returncode}); needs root"
    return None


def _normalise_doctor(text: str) -> str:
    return re.sub(r"\(pid [0-9, .]+\)", "(pid N)", text)


@pytest.fixture(scope="module")
def emulator_library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from . import toa_emulator

    return toa_emulator.build(tmp_path_factory.mktemp("toa-emulator"))


@pytest.mark.parametrize("scenario", sorted(DOCTOR_SCENARIOS))
def test_doctor_output_on_the_pages_is_what_doctor_prints(scenario: str, emulator_library: Path) -> None:
    """Each capture is ``realip doctor`` run in a fresh network namespace (nothing else
    listening) next to the servers of its scenario; the pages quote it verbatim."""
    why = _private_namespace_available()
    if why is not None:
        message = f"the doctor captures need a private network namespace: {why}"
        if IN_CI:  # CI runs as root with util-linux: there this must run
            pytest.fail(message)
        pytest.skip(message)
    argv = [shutil.which("unshare") or "unshare", "--net", "--", sys.executable, "-m", "tests.test_docs"]
    argv += ["doctor-scenario", scenario, str(emulator_library)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REALIP_", "LD_PRELOAD"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(EXAMPLES)])
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
    compare_or_regenerate(GENERATED / f"doctor-{scenario}.txt", done.stdout, _normalise_doctor)


def _loopback_up() -> None:
    """Bring up ``lo`` in this (new) network namespace: SIOCSIFFLAGS with IFF_UP."""
    import fcntl
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sh22x", b"lo", 0)
        flags = struct.unpack("16sh22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sh22x", b"lo", flags | iff_up))


def _wait_listening(port: int, family: str, process: subprocess.Popen[bytes], deadline: float) -> None:
    host = "::1" if family == "v6" else "127.0.0.1"
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.args} did not listen on {port}") from None
            time.sleep(0.05)


def run_doctor_scenario(name: str, library: Path) -> int:
    """Inside a new network namespace: start the scenario's servers, run ``realip doctor``, print it."""
    from . import toa_emulator

    servers, module = DOCTOR_SCENARIOS[name]
    _loopback_up()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        deadline = time.monotonic() + 60
        for argv, port, family in servers:
            process = subprocess.Popen(
                [str(BIN / argv[0]), *argv[1:]],
                cwd=EXAMPLES,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            processes.append(process)
            _wait_listening(port, family, process, deadline)
        time.sleep(0.5)  # gunicorn's worker: the owner scan should find it too
        env = dict(os.environ)
        if module:
            env.update(toa_emulator.env({}, None, library=library))
        done = subprocess.run([str(BIN / "realip"), "doctor"], env=env, capture_output=True, text=True, timeout=60)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "doctor-scenario":
        sys.exit(run_doctor_scenario(sys.argv[2], Path(sys.argv[3])))
    sys.exit(f"usage: python -m tests.test_docs doctor-scenario NAME LIBRARY (one of {', '.join(DOCTOR_SCENARIOS)})")
