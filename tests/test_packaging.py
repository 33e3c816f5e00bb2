"""The sdist builds and installs with a C compiler and Python headers only, shim included."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

from .support.servers import ROOT


def run(argv: list[str], cwd: Path, timeout: float = 300) -> str:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{argv}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def test_sdist_installs_into_a_clean_venv_and_compiles_the_shim(tmp_path: Path) -> None:
    run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path / "dist"), str(ROOT)], cwd=tmp_path)
    (sdist,) = (tmp_path / "dist").glob("realip-*.tar.gz")
    venv.create(tmp_path / "venv", with_pip=True)
    python = str(tmp_path / "venv" / "bin" / "python")
    run([python, "-m", "pip", "install", "--quiet", str(sdist)], cwd=tmp_path)
    # Run from an empty directory, so that the installed copy is imported, not the checkout.
    out = run([python, "-c", "import realip, realip.toa as t; print(t.available(), realip.__file__)"], cwd=tmp_path)
    available, location = out.split()
    assert available == "True"
    assert str(tmp_path / "venv") in location
