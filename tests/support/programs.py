"""System programs the suite starts (nginx, HAProxy, curl, wrk)."""

from __future__ import annotations

import os
import shutil

import pytest

#: Under CI every test must run: a missing system program is a failure there.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require_program(name: str) -> str:
    """Path of a system program (nginx, haproxy, curl, wrk).

    On a laptop without it the test is skipped; under ``CI=true`` that skip
    becomes a failure, because ``.ci/run`` installs every program the suite needs.
    """
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/sbin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    message = f"{name} is not installed (Debian package: see .ci/run)"
    if IN_CI:
        pytest.fail(message + "; under CI=true this is a failure, not a skip")
    pytest.skip(message)
