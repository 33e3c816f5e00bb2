"""The compiled TOA shim: ``_toa_lib`` (built by ``build.py``), read only by :mod:`realip.toa`.

The module may be missing (realip installed from source without a C compiler);
:func:`realip.toa.available` is then False.
"""
