"""Sphinx configuration of realip's documentation.

Built by the test suite (``tests/test_docs.py``) with warnings as errors and
nitpicky cross-references; by hand, with only the docs extra installed::

    pip install .[docs]
    sphinx-build -W -n -b html docs docs/_build/html

Pages are Markdown (MyST). Code and configuration shown on them is included
from files the tests run (``literalinclude``), never typed into the page.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import realip  # noqa: E402

project = "realip"
author = "the realip authors"
copyright = "the realip authors"
release = realip.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
# _generated/ and snippets/ are included into pages, not pages themselves.
exclude_patterns = ["_build", "_generated", "snippets", "Thumbs.db", ".DS_Store"]
templates_path: list[str] = []

# MyST: heading anchors so that [text](page.md#a-heading) links resolve (and are checked).
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

# Every cross-reference must resolve (-n). The standard library and the servers'
# own documentation are not reachable offline (no intersphinx), so references
# *into* them are allowed to stay plain text; references to realip must resolve.
nitpicky = True
nitpick_ignore_regex = [
    (
        r"py:.*",
        r"(ipaddress|socket|asyncio|collections\.abc|typing|logging|errno|enum|dataclasses|weakref|pathlib|datetime|argparse|urllib|os|importlib|contextvars)(\..*)?",
    ),
    (
        r"py:(class|obj)",
        r"(str|int|float|bool|bytes|bytearray|object|type|dict|list|tuple|Any|None|Final|Literal|TypeAlias|Path)",
    ),
    (r"py:(class|obj|mod)", r"(uvicorn|uvicorn_worker|gunicorn|asgiref|django|werkzeug)(\..*)?"),
]
nitpick_ignore = [
    # uvicorn's own protocol __init__ annotations, inherited by realip.uvicorn's classes.
    ("py:class", "Config"),
    ("py:class", "ServerState"),
    # realip/toa.py names its private compiled package, which is not documented.
    ("py:mod", "realip._toa"),
]

# The server and framework integrations import their server at module level;
# the docs extra (pip install .[docs]) installs none of them. Mock them, always,
# so the reference pages are the same whether or not they are installed.
autodoc_mock_imports = ["asgiref", "django", "gunicorn", "uvicorn", "uvicorn_worker"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
autodoc_default_options = {"members": True}

html_theme = "furo"
html_title = f"realip {release}"
html_static_path: list[str] = []
html_show_sourcelink = False
pygments_style = "friendly"
pygments_dark_style = "monokai"


# ---- cross-references the way Python reads them -----------------------------------
#
# A docstring may name what its module imports without the full path
# (``:class:`ConfigError``` in realip/config.py). Python resolves that name through
# the module's imports; Sphinx only looks in the module itself. When a realip
# reference is missing, look for exactly one documented realip object with that
# name and link to it. Anything else stays a warning (and -W makes it an error).


def _resolve_by_short_name(app, env, node, contnode):  # type: ignore[no-untyped-def]
    if node.get("refdomain") != "py":
        return None
    target = node.get("reftarget", "")
    module = node.get("py:module") or ""
    if "." in target or not module.startswith("realip"):
        return None
    domain = env.get_domain("py")
    found = sorted(
        {name for name, entry in domain.objects.items() if name.rsplit(".", 1)[-1] == target and not entry.aliased}
    )
    if len(found) != 1:
        return None
    # "obj": a type alias (IPAddress) is documented as data but annotations name it as a class.
    for role in (node["reftype"], "obj"):
        resolved = domain.resolve_xref(env, node["refdoc"], app.builder, role, found[0], node, contnode)
        if resolved is not None:
            return resolved
    return None


def setup(app):  # type: ignore[no-untyped-def]
    app.connect("missing-reference", _resolve_by_short_name)
