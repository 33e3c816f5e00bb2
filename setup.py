"""What pyproject.toml cannot say: compile the TOA shim with cffi, and carry on without it.

The shim (``realip/_toa``) is one small C file built by cffi into an abi3
extension module, so one wheel serves every CPython from 3.10 on. It is
optional: when no C compiler or no Python headers are at hand (``pip install``
from the sdist on a bare machine), :class:`OptionalBuildExt` says so in one
line and the package installs without it. Everything works then except the TOA
lookup, and :mod:`realip.toa` explains at run time how to get it.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CCompilerError, CompileError, ExecError, LinkError, PlatformError

#: Every way a missing or broken compiler shows up: no gcc (ExecError, or a bare
#: OSError from some setuptools versions), no Python.h (CompileError, a
#: CCompilerError), no linker (LinkError), no compiler known for the platform.
BUILD_FAILURES = (CCompilerError, ExecError, PlatformError, OSError)

WITHOUT_SHIM = (
    "realip: building the TOA shim failed ({reason}); installing without it: TOA lookups are unavailable. "
    "For them, install a realip wheel or install gcc and the Python headers (python3-dev) and reinstall "
    "(pip install --force-reinstall --no-cache-dir realip)."
)


def _reason(exc: BaseException) -> str:
    """The failure in a few words: ``'gcc' not found``, ``compiling failed: ...``."""
    chain: list[BaseException] = []
    link: BaseException | None = exc
    while link is not None and len(chain) < 8:  # setuptools wraps the OSError in a CompileError
        chain += [link, *(a for a in link.args if isinstance(a, BaseException))]
        link = link.__cause__ or link.__context__
    for link in chain:
        if isinstance(link, FileNotFoundError) and link.filename:
            return f"{link.filename!r} not found"
    if isinstance(exc, CompileError):
        return "compiling failed: see the compiler's message above; a missing Python.h means no Python headers"
    if isinstance(exc, LinkError):
        return "linking failed: see the linker's message above"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


class OptionalBuildExt(build_ext):
    """``build_ext`` that installs without the shim when it cannot be compiled.

    Always recompiles (``force``): a module left in ``build/`` by an earlier
    build must never stand in for one that fails now. When the build fails, the
    stale output is removed, :data:`WITHOUT_SHIM` is printed (to stderr, which
    ``pip install -v`` shows), and the build goes on without the extension.
    """

    def finalize_options(self) -> None:
        super().finalize_options()
        self.force = True

    def run(self) -> None:
        try:
            super().run()
        except BUILD_FAILURES as exc:  # before any extension: no compiler for this platform at all
            for ext in list(self.extensions):
                self._give_up(ext, exc)

    def build_extension(self, ext: Any) -> None:
        try:
            super().build_extension(ext)
        except BUILD_FAILURES as exc:
            self._give_up(ext, exc)

    def _give_up(self, ext: Any, exc: BaseException) -> None:
        """Drop ``ext`` from this build: no stale module left in ``build/``, no output listed.

        Under ``REALIP_REQUIRE_SHIM=1`` (``make dist``) the failure is raised instead.
        """
        stale = os.path.join(self.build_lib, self.get_ext_filename(ext.name))
        if os.path.exists(stale):
            os.remove(stale)
        if os.environ.get("REALIP_REQUIRE_SHIM", "").lower() in ("1", "true", "yes", "on"):
            print(
                f"realip: building the TOA shim failed ({_reason(exc)}) and REALIP_REQUIRE_SHIM is set", file=sys.stderr
            )
            raise exc
        if ext in self.extensions:
            self.extensions.remove(ext)
        print(WITHOUT_SHIM.format(reason=_reason(exc)), file=sys.stderr, flush=True)


def _abi3() -> bool:
    """Whether this interpreter builds abi3 modules (not a debug or free-threaded CPython)."""
    return (
        sys.implementation.name == "cpython"
        and not hasattr(sys, "gettotalrefcount")
        and not sysconfig.get_config_var("Py_GIL_DISABLED")
    )


setup(
    cffi_modules=["realip/_toa/build.py:ffibuilder"],
    cmdclass={"build_ext": OptionalBuildExt},
    # cffi compiles the module against the limited API (``_toa_lib.abi3.so``); tag
    # the wheel to match: cp310-abi3, installable on every CPython >= 3.10.
    options={"bdist_wheel": {"py_limited_api": "cp310"}} if _abi3() else {},
)
