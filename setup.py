# The only thing pyproject.toml cannot say: compile the TOA shim with cffi.
from setuptools import setup

setup(cffi_modules=["realip/_toa/build.py:ffibuilder"])
