"""cffi build script for the TOA shim (API mode, out of line).

setup.py names the module-level ``ffibuilder``::

    setup(cffi_modules=["realip/_toa/build.py:ffibuilder"])

Run as a script (from any directory) to build ``realip/_toa/_toa_lib*.so`` in
place for development::

    python realip/_toa/build.py

The module is built against Python's limited API: cffi's setuptools hook sets
``py_limited_api`` on a regular CPython, so the file is ``_toa_lib.abi3.so``
and setup.py tags the wheel ``cp310-abi3``, one wheel for every CPython >= 3.10.
setup.py also makes it optional: without a C compiler the package installs
without it and :func:`realip.toa.unavailable_reason` says how to get it.

The declarations live in ``toa_shim.h``, which doubles as the cdef, and the C
in ``toa_shim.c``, which also holds the structures the kernel modules fill
(the TOA lookup's and Alibaba vtoa's), each with its size asserted. On a
platform other than Linux the same file is compiled as a stub whose calls
answer ``ENOSYS`` and whose ``realip_toa_available()`` is 0: the TOA module is
a Linux kernel module, so there is nothing to ask.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

from cffi import FFI

MODULE_NAME = "realip._toa._toa_lib"

_HERE = Path(__file__).resolve().parent


def make_ffibuilder(src_dir: str, **extra: Any) -> FFI:
    """An FFI for the shim whose C files are found in ``src_dir``.

    setuptools runs this file from the project root and wants paths relative
    to it (an absolute one would land in the sdist file list); cffi's own
    ``compile()`` runs the compiler in a temporary directory and needs
    absolute ones. Hence a parameter. ``extra`` goes to ``set_source()``.
    """
    ffi = FFI()
    ffi.cdef((_HERE / "toa_shim.h").read_text(encoding="utf-8"))
    ffi.set_source(
        MODULE_NAME,
        '#include "toa_shim.h"',
        sources=[f"{src_dir}/toa_shim.c"],
        include_dirs=[src_dir],
        define_macros=[] if sys.platform.startswith("linux") else [("REALIP_TOA_STUB", "1")],
        **extra,
    )
    return ffi


ffibuilder = make_ffibuilder("realip/_toa")


def build_in_place() -> Path:
    """Compile the module in a temporary directory and copy it beside this file."""
    # cffi's setuptools hook builds an abi3 module on a regular CPython; do the
    # same, so that this build replaces _toa_lib.abi3.so from `pip install -e .`
    # instead of adding a _toa_lib.cpython-*.so that would shadow it.
    abi3 = not hasattr(sys, "gettotalrefcount") and not sysconfig.get_config_var("Py_GIL_DISABLED")
    with tempfile.TemporaryDirectory(prefix="realip-toa-build-") as tmp:
        built = Path(make_ffibuilder(str(_HERE), py_limited_api=abi3).compile(tmpdir=tmp, verbose=False))
        target = _HERE / built.name
        # Copy beside the target, then rename over it: a running server that has the
        # old module mapped keeps its (unlinked) file; overwriting it in place would
        # change the code under that process's feet.
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        shutil.copyfile(built, staging)
        os.replace(staging, target)
    return target


if __name__ == "__main__":
    print(build_in_place())
