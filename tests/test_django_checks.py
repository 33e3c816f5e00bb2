"""realip's Django system checks, through the real ``manage.py check`` of
``examples/django_project`` (which lists ``realip.django.RealIPConfig`` in
``INSTALLED_APPS``), with settings overridden by a temporary settings module."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("django")

ROOT = Path(__file__).resolve().parents[1]
PROJECT = ROOT / "examples" / "django_project"


def manage(
    tmp_path: Path, settings: str | None = None, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``manage.py ARGS`` (``check`` by default) with ``project.settings`` plus ``settings``."""
    module = tmp_path / "override_settings.py"
    module.write_text("from project.settings import *  # noqa: F403\n" + textwrap.dedent(settings or ""))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("REALIP_")}
    environment.update(
        PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
        DJANGO_SETTINGS_MODULE="override_settings",
        **(env or {}),
    )
    return subprocess.run(
        [sys.executable, "manage.py", *(args or ("check",))],
        cwd=PROJECT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_example_project_passes(tmp_path: Path) -> None:
    done = manage(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout
    assert "realip" not in done.stderr


def test_an_invalid_realip_setting_is_error_e001_naming_the_value_and_the_hint(tmp_path: Path) -> None:
    done = manage(tmp_path, 'REALIP = {"trusted_proxies": "10.0.0.0/33"}\n')
    assert done.returncode == 1
    output = done.stderr
    assert "SystemCheckError" in output
    assert "settings.REALIP: (realip.E001) trusted_proxies: '10.0.0.0/33' is not valid" in output
    assert "HINT: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network" in output
    # what docs/troubleshooting.md quotes is what `check` prints
    page = (ROOT / "docs" / "troubleshooting.md").read_text(encoding="utf-8").splitlines()
    (at,) = [i for i, line in enumerate(page) if "settings.REALIP: (realip.E001)" in line]
    quoted = "\n".join(line.removeprefix("  ") for line in page[at : at + 2])
    assert quoted in output


def test_every_bad_option_is_reported_and_an_unknown_key_gets_the_likely_name(tmp_path: Path) -> None:
    done = manage(tmp_path, 'REALIP = {"trusted_proxy": ["10.0.0.1"], "on_failure": "explode"}\n')
    assert done.returncode == 1
    output = done.stderr
    assert "(realip.E001) trusted_proxy: ['10.0.0.1'] is not valid" in output
    assert "HINT: did you mean 'trusted_proxies'? unknown option" in output
    assert "(realip.E001) on_failure: 'explode' is not valid" in output
    assert "System check identified 2 issues" in output


def test_options_valid_only_together_pass(tmp_path: Path) -> None:
    done = manage(tmp_path, 'REALIP = {"trusted_proxies": ["10.0.0.0/8"], "strategy": "x-real-ip"}\n')
    assert done.returncode == 0, done.stderr


def test_a_bad_environment_variable_is_e001_too(tmp_path: Path) -> None:
    done = manage(tmp_path, env={"REALIP_TRUSTED_PROXIES": "10.0.0.1/8", "REALIP_ON_FAILURE": "explode"})
    assert done.returncode == 1
    assert "environment: (realip.E001) REALIP_TRUSTED_PROXIES: '10.0.0.1/8' is not valid" in done.stderr
    assert "HINT: 10.0.0.1/8 has host bits set" in done.stderr
    assert "environment: (realip.E001) REALIP_ON_FAILURE: 'explode' is not valid" in done.stderr


def test_settings_realip_that_is_not_a_dict(tmp_path: Path) -> None:
    done = manage(tmp_path, 'REALIP = ["10.0.0.0/8"]\n')
    assert done.returncode == 1
    assert "(realip.E001) settings.REALIP must be a dict of realip options, not list" in done.stderr


def test_middleware_not_first_is_warning_w001_with_a_hint(tmp_path: Path) -> None:
    settings = """\
        MIDDLEWARE = [
            "django.middleware.common.CommonMiddleware",
            "realip.django.RealIPMiddleware",
        ]
    """
    done = manage(tmp_path, settings)
    assert done.returncode == 0, done.stderr  # warnings do not fail `check`
    output = done.stderr
    assert 'settings.MIDDLEWARE: (realip.W001) "realip.django.RealIPMiddleware" is not first in MIDDLEWARE' in output
    assert "HINT: move it first: the middlewares before it (django.middleware.common.CommonMiddleware)" in output
    assert "System check identified 1 issue" in output
    # --fail-level WARNING turns it into a failure, as in a CI that wants a clean check
    assert manage(tmp_path, settings, "check", "--fail-level", "WARNING").returncode == 1


def test_a_subclass_of_the_middleware_counts_as_realips(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "from realip.django import RealIPMiddleware\n\nclass Mine(RealIPMiddleware):\n    pass\n"
    )
    done = manage(tmp_path, 'MIDDLEWARE = ["mine.Mine", "django.middleware.common.CommonMiddleware"]\n')
    assert done.returncode == 0, done.stderr
    assert "realip.W00" not in done.stderr


def test_middleware_missing_is_warning_w002_and_checks_can_be_silenced(tmp_path: Path) -> None:
    done = manage(tmp_path, 'MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]\n')
    assert done.returncode == 0
    assert "(realip.W002) realip's middleware is not in MIDDLEWARE" in done.stderr
    silenced = manage(
        tmp_path,
        'MIDDLEWARE = ["django.middleware.common.CommonMiddleware"]\nSILENCED_SYSTEM_CHECKS = ["realip.W002"]\n',
    )
    assert "realip" not in silenced.stderr
    assert "1 silenced" in silenced.stdout


def test_without_the_app_the_checks_run_once_the_middleware_is_imported(tmp_path: Path) -> None:
    """Only MIDDLEWARE names realip: ``check`` knows nothing of it until something
    imports realip.django (Django imports middleware when it builds a handler)."""
    settings = """\
        INSTALLED_APPS = []
        MIDDLEWARE = ["django.middleware.common.CommonMiddleware", "realip.django.RealIPMiddleware"]
    """
    assert "realip.W001" not in manage(tmp_path, settings).stderr
    script = tmp_path / "check_after_import.py"
    script.write_text(
        "import django\n"
        "django.setup()\n"
        "from django.core.wsgi import get_wsgi_application\n"
        "get_wsgi_application()  # builds the middleware chain, importing realip.django\n"
        "from django.core.management import call_command\n"
        "call_command('check')\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=PROJECT,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("REALIP_")},
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(PROJECT), str(ROOT)]),
            "DJANGO_SETTINGS_MODULE": "override_settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "(realip.W001)" in done.stderr
