"""Packaging: what ``make dist`` builds installs where it should, and works there.

* The wheel is ``cp310-abi3-manylinux*``, holds the compiled shim and
  ``py.typed`` and no tests. Installed (with the ``uvicorn`` extra) into a fresh
  venv that has no C compiler, it serves real clients through ``realip serve``,
  and a NAT64 client through the emulated TOA module (``tests/toa_emulator``)
  is looked up by *its* compiled shim.
* The sdist, installed into a fresh venv with no C compiler, installs without
  the shim and says so in one line, even over a ``build/`` directory left by
  an earlier build that had one; the library and a real server still work.
  Reinstalled with a compiler (as that line advises) it compiles the shim.

Two fresh venvs in all; packages come through the user's pip cache.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tarfile
import venv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from . import toa_emulator
from .support.clients import whoami
from .support.programs import require_program
from .support.servers import ROOT, TESTS, serve

#: Variables that could point the build at a compiler, or the venv at the checkout.
COMPILER_VARIABLES = ("CC", "CXX", "LDSHARED", "CFLAGS", "CPPFLAGS", "LDFLAGS", "PYTHONPATH", "VIRTUAL_ENV")
#: The one line setup.py prints when the shim cannot be built.
NO_SHIM_LINE = "realip: building the TOA shim failed"


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 300) -> str:
    """stdout and stderr together, once ``argv`` succeeded."""
    done = subprocess.run(
        argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout, env=env
    )
    assert done.returncode == 0, f"{argv}\n{done.stdout[-6000:]}"
    return done.stdout


@dataclass(frozen=True)
class Dist:
    sdist: Path
    wheel: Path


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Dist:
    """``make dist`` into a temporary directory, with this Python and without the venv check."""
    require_program("make")
    require_program("gcc")
    out = tmp_path_factory.mktemp("dist")
    run(["make", "--no-print-directory", "dist", "DIST_DEPS=", f"DIST={out}", f"PY={sys.executable}"], cwd=ROOT)
    (sdist,) = out.glob("realip-*.tar.gz")
    (wheel,) = out.glob("realip-*.whl")
    return Dist(sdist, wheel)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_program("gcc")
    return toa_emulator.build(tmp_path_factory.mktemp("toa-emulator"))


def fresh_venv(path: Path) -> tuple[Path, dict[str, str]]:
    """A new venv and an environment in which no C compiler can be found.

    ``PATH`` is the venv's ``bin`` only; the compiler the interpreter was built
    with (``sysconfig``'s ``CC``) and the usual names are checked to be unreachable.
    """
    venv.create(path, with_pip=True)
    bin_dir = path / "bin"
    env = {k: v for k, v in os.environ.items() if k not in COMPILER_VARIABLES}
    env.update(PATH=str(bin_dir), PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    which = "import shutil, sysconfig; print([shutil.which(sysconfig.get_config_var('CC').split()[0]), "
    which += "*map(shutil.which, ['gcc', 'cc', 'clang', 'x86_64-linux-gnu-gcc'])])"
    assert run([str(bin_dir / "python"), "-c", which], cwd=path, env=env).strip() == "[None, None, None, None, None]"
    return bin_dir, env


def pip(bin_dir: Path, *args: str, env: dict[str, str]) -> str:
    return run([str(bin_dir / "python"), "-m", "pip", "install", *args], cwd=bin_dir.parent, env=env, timeout=600)


def app_dir(tmp_path: Path) -> Path:
    """A directory holding only the echo app, so that the venv's realip is the one imported."""
    where = tmp_path / "app"
    where.mkdir()
    shutil.copyfile(TESTS / "apps" / "echo.py", where / "echo_app.py")
    return where


def probe(bin_dir: Path, cwd: Path, env: dict[str, str]) -> dict[str, object]:
    """What the venv's realip says about itself and its shim, imported from ``cwd``."""
    code = (
        "import json, realip, realip.toa as t\n"
        "shim = __import__('sys').modules.get('realip._toa._toa_lib')\n"
        "print(json.dumps({'available': t.available(), 'realip': realip.__file__, 'reason': t.unavailable_reason(),"
        " 'shim': shim and shim.__file__}))\n"
    )
    return json.loads(run([str(bin_dir / "python"), "-c", code], cwd=cwd, env=env).splitlines()[-1])


def servers_env(env: dict[str, str], where: Path) -> dict[str, str]:
    """The environment of a program run from the venv: its own PATH, the app directory only."""
    return {**env, "PYTHONPATH": str(where)}


# ------------------------------------------------------------------------------ the wheel


def test_wheel_is_cp310_abi3_manylinux_with_the_shim_and_no_tests(dist: Dist) -> None:
    machine = platform.machine()
    match = re.fullmatch(r"realip-([\w.]+)-cp310-abi3-(manylinux[\w.]+)\.whl", dist.wheel.name)
    assert match, dist.wheel.name
    platforms = match[2].split(".")
    assert all(re.fullmatch(rf"manylinux(1|2010|2014|_\d+_\d+)_{machine}", tag) for tag in platforms), platforms
    with zipfile.ZipFile(dist.wheel) as wheel:
        names = wheel.namelist()
        (info,) = (n for n in names if n.endswith(".dist-info/WHEEL"))
        metadata = wheel.read(info).decode()
        (metadata_file,) = (n for n in names if n.endswith(".dist-info/METADATA"))
        core = wheel.read(metadata_file).decode()
    assert "realip/_toa/_toa_lib.abi3.so" in names
    assert not [n for n in names if n.endswith(".so") and n != "realip/_toa/_toa_lib.abi3.so"]
    assert "realip/py.typed" in names
    assert "realip/ranges/data/cloudflare.txt" in names
    assert not [n for n in names if not n.startswith(("realip/", f"realip-{match[1]}.dist-info/"))], names
    assert "Root-Is-Purelib: false" in metadata
    tags = re.findall(r"^Tag: (\S+)$", metadata, re.M)
    assert tags and all(t.startswith("cp310-abi3-manylinux") for t in tags), tags
    for extra in ("uvicorn", "gunicorn", "test", "docs"):
        assert f"Provides-Extra: {extra}" in core


def test_wheel_installs_and_serves_without_a_compiler(dist: Dist, emulator: Path, tmp_path: Path) -> None:
    bin_dir, env = fresh_venv(tmp_path / "venv")
    pip(bin_dir, f"{dist.wheel}[uvicorn]", env=env)
    where = app_dir(tmp_path)
    env = servers_env(env, where)

    found = probe(bin_dir, where, env)
    assert found["available"] is True and found["reason"] is None
    assert str(found["realip"]).startswith(str(tmp_path / "venv"))
    assert str(found["shim"]).startswith(str(tmp_path / "venv")) and str(found["shim"]).endswith("_toa_lib.abi3.so")

    # realip serve from the wheel's console script: one [::] socket, IPv4 and IPv6 clients.
    argv = [str(bin_dir / "realip"), "serve", "echo_app:asgi_app", "--bind", "[::]:{port}"]
    with serve("wheel-realip-serve", argv, tmp_path, env=env, cwd=where) as server:
        v4, _ = whoami(server.url("127.0.0.1"), "127.0.0.2")
        v6, _ = whoami(server.url("::1"), "::1")
        assert f"listening on http://[::]:{server.port} (IPv4 and IPv6 clients)" in server.log()
    assert (v4["client"][0], v4["peer"][0], v4["source"]) == ("127.0.0.2", "::ffff:127.0.0.2", "mapped")
    assert (v6["client"][0], v6["source"]) == ("::1", "peer")

    # A NAT64 client behind an emulated TOA load balancer (127.0.0.5), on an AF_INET listener.
    log = tmp_path / "lookups.log"
    toa = {
        **env,
        **toa_emulator.env({"127.0.0.5": "nat64:[2001:db8::5]:40000"}, log, library=emulator),
        "REALIP_TOA_PEERS": "127.0.0.5",
    }
    argv = [
        str(bin_dir / "uvicorn"), "echo_app:asgi_app", "--fd", "{fd}", "--no-proxy-headers",
        "--http", "realip.uvicorn:HttpToolsProtocol", "--ws", "realip.uvicorn:AutoWebSocketsProtocol",
    ]  # fmt: skip
    with serve("wheel-uvicorn-toa", argv, tmp_path, family="v4", env=toa, cwd=where) as server:
        body, port = whoami(server.url("127.0.0.1"), "127.0.0.5")
    assert body["client"] == ["2001:db8::5", 40000]
    assert body["peer"] == ["127.0.0.5", port]
    assert body["source"] == "toa"
    assert [e.result for e in toa_emulator.read_log(log) if e.peer == "127.0.0.5"] == [0]  # one lookup, answered


# ------------------------------------------------------------------------------ the sdist


def test_sdist_installs_without_a_compiler_and_compiles_the_shim_with_one(dist: Dist, tmp_path: Path) -> None:
    with tarfile.open(dist.sdist) as sdist:
        members = sdist.getnames()
    assert any(m.endswith("realip/_toa/toa_shim.c") for m in members)
    assert not [m for m in members if m.endswith((".so", ".o"))], "the sdist carries a compiled file"

    # The sdist unpacked, holding the build/ of an earlier build that had a compiler: the
    # module left there must not stand in for the build that fails below.
    with tarfile.open(dist.sdist) as sdist:
        sdist.extractall(tmp_path / "src", **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    (src,) = (tmp_path / "src").iterdir()
    run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path / "earlier"), str(src)], cwd=tmp_path)
    assert list(src.glob("build/lib*/realip/_toa/_toa_lib.abi3.so"))

    bin_dir, env = fresh_venv(tmp_path / "venv")
    pip(bin_dir, "uvicorn[standard]>=0.36", "cffi>=1.17", env=env)  # from the pip cache
    # --no-cache-dir: pip would keep the shim-less wheel it builds and reuse it below.
    out = pip(bin_dir, "-v", "--no-cache-dir", "--no-deps", str(src), env=env)
    said = [line.strip() for line in out.splitlines() if NO_SHIM_LINE in line]
    assert len(said) == 1, out[-5000:]
    assert re.search(r"failed \('[^']+' not found\); installing without it: TOA lookups are unavailable\.", said[0])
    assert "python3-dev" in said[0] and "pip install --force-reinstall --no-cache-dir realip" in said[0]

    where = app_dir(tmp_path)
    env = servers_env(env, where)
    found = probe(bin_dir, where, env)
    assert found["available"] is False and found["shim"] is None
    assert str(found["realip"]).startswith(str(tmp_path / "venv"))
    assert "missing" in str(found["reason"]) and "REALIP_TOA=off" in str(found["reason"])

    # A real server still works: mapped IPv4 unwrapped; TOA, asked for by default, is said to be unavailable.
    argv = [
        str(bin_dir / "uvicorn"), "echo_app:asgi_app", "--fd", "{fd}", "--no-proxy-headers",
        "--http", "realip.uvicorn:AutoHTTPProtocol", "--ws", "realip.uvicorn:AutoWebSocketsProtocol",
    ]  # fmt: skip
    with serve("sdist-uvicorn", argv, tmp_path, env=env, cwd=where) as server:
        first, _ = whoami(server.url("127.0.0.1"), "127.0.0.2")
        second, _ = whoami(server.url("::1"), "::1")
        log = server.wait_for_log("::1:")  # both requests are in the access log
    assert (first["client"][0], first["source"]) == ("127.0.0.2", "mapped")
    assert (second["client"][0], second["source"]) == ("::1", "peer")
    assert "realip: TOA requested but" in log, log  # its wording: test_missing_shim_is_logged_once_...

    # With a compiler, the reinstall the line advises compiles the shim.
    env_with_compiler = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env_with_compiler.pop("PYTHONPATH", None)
    pip(bin_dir, "--force-reinstall", "--no-cache-dir", "--no-deps", str(dist.sdist), env=env_with_compiler)
    # Run from an empty directory, so that the installed copy is imported, not the checkout.
    found = probe(bin_dir, where, env_with_compiler)
    assert found["available"] is True
    assert str(found["realip"]).startswith(str(tmp_path / "venv"))
    assert str(found["shim"]).endswith("_toa_lib.abi3.so")


# ------------------------------------------------------------------------------ messages, no install


def test_missing_shim_is_logged_once_with_how_to_get_it_and_how_to_silence_it() -> None:
    code = (
        "import logging, sys\n"
        "sys.modules['realip._toa._toa_lib'] = None  # any import of it raises ImportError\n"
        "logging.basicConfig(level=logging.INFO, format='%(message)s')\n"
        "from realip.connection import ConnectionResolver\n"
        "ConnectionResolver(toa=False)\n"
        "ConnectionResolver(toa=True)\n"
        "ConnectionResolver(toa=True)  # every middleware and server protocol has one: still one line\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if "TOA" in line]
    assert line.startswith("realip: TOA requested but the compiled TOA shim is missing"), line
    assert "install a realip wheel" in line and "python3-dev" in line
    assert "toa=False or REALIP_TOA=off" in line


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [("realip.gunicorn", "uvicorn_worker", "gunicorn"), ("realip.uvicorn", "uvicorn", "uvicorn")],
)
def test_a_missing_server_names_the_extra_to_install(module: str, blocked: str, extra: str) -> None:
    code = f"import sys\nsys.modules[{blocked!r}] = None  # any import of it raises ImportError\nimport {module}\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 1
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(("ImportError: ", "ModuleNotFoundError: ")), done.stderr
    assert f"pip install 'realip[{extra}]'" in last, last
