"""Prometheus counters of what realip decided (optional: ``pip install 'realip[metrics]'``).

Off until :func:`enable` is called: then ``METRICS.recorder`` (:data:`METRICS`)
is a :class:`Recorder` and realip's code counts each decision with one counter
increment; while it is ``None`` the only cost is that check. The counters:

``realip_answers_total{source}``
    Requests handed to the application, by what decided their client
    (``peer``, ``mapped``, ``toa``, ``proxy-protocol``, ``unix`` or the header
    read: ``x-forwarded-for``, ``forwarded``, ...).
``realip_headers_stripped_total{header}``
    Forwarding headers removed from requests of untrusted peers (a client
    writing its own ``X-Forwarded-For``), by header.
``realip_headers_not_believed_total{reason}``
    Requests whose trusted proxy's header was not (fully) believed, by reason
    (:data:`REASONS`).
``realip_toa_lookups_total{result}``
    TOA module lookups, one per connection asked, by result (:data:`TOA_RESULTS`).
``realip_proxy_headers_accepted_total``, ``realip_proxy_headers_refused_total{reason}``
    PROXY protocol headers: accepted, and connections closed instead, by
    reason (:data:`PROXY_REFUSALS`).

Every label value comes from realip's own fixed lists or from the
configuration (the header name), never from what a client sent, so the number
of series stays small whatever the traffic.

**Several processes** (gunicorn ``--workers N``): set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory, writable by the workers, before the server starts, as
prometheus_client documents; each worker then writes its counts there, and
:func:`wsgi_app` / :func:`asgi_app` (or :func:`scrape_registry`) sum every
process's. The guide: ``docs/downstream/metrics.md``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "METRICS",
    "PROXY_REFUSALS",
    "REASONS",
    "TOA_RESULTS",
    "Recorder",
    "Switch",
    "asgi_app",
    "disable",
    "enable",
    "reason_of",
    "scrape_registry",
    "wsgi_app",
]

#: ``realip_headers_not_believed_total`` reasons, from ``Resolution.error``:
#: (label, what the error text after ``"<header>: "`` starts with).
_REASON_PREFIXES: Final = (
    ("invalid-entry", ("invalid entry",)),
    ("malformed-element", ("malformed element", "empty element", "element without for=")),
    ("not-an-address", ("for=",)),
    ("too-long", ("more than ", "header longer than")),
    ("too-few-entries", ("expected ",)),
    ("several-values", ("several values",)),
    ("bad-scheme", ("scheme ",)),
    ("internal-error", ("internal error",)),
)
REASONS: Final = (*(label for label, _ in _REASON_PREFIXES), "other")
"""Every reason label of ``realip_headers_not_believed_total``: an entry that is
not an address (``X-Forwarded-For: 1.2.3.4, garbage``), a malformed ``Forwarded``
element, a ``for=`` that is not an address (``for=_hidden``, ``for=unknown``), a
header cut for its length, fewer entries than the hop count, several values of
a single-address header, a scheme that is not http(s) or ws(s), and ``other``."""

TOA_RESULTS: Final = ("found", "found-untrusted-peer", "none", "rewritten-by-kernel", "no-module", "unavailable",
                      "connection-gone", "error")  # fmt: skip
"""``realip_toa_lookups_total`` results: a client found (from a ``toa_peers`` load
balancer), one found on a connection from another peer (ignored), no option on
this connection, a peer address the module itself wrote (never trusted), no
module on the host, the lookup impossible (no shim), the connection reset
before the lookup, and any other error."""

PROXY_REFUSALS: Final = ("peer-not-allowed", "malformed", "timeout")
"""``realip_proxy_headers_refused_total`` reasons: a connection from a peer not in
``proxy_protocol_peers`` (with ``proxy_protocol_others="close"``), a header that
does not parse, a header not complete within ``proxy_protocol_timeout``."""

#: The sources known in advance (shown as 0 until counted): :class:`realip.Source`'s.
_SOURCES: Final = ("peer", "mapped", "toa", "unix", "proxy-protocol")


class Switch:
    """Where realip's code finds the recorder: ``recorder`` is the enabled
    :class:`Recorder`, or ``None`` (the default: nothing is counted)."""

    __slots__ = ("recorder",)

    def __init__(self) -> None:
        self.recorder: Recorder | None = None


METRICS: Final = Switch()
"""The one :class:`Switch`. Each call site in realip reads it, one attribute:
``recorder = METRICS.recorder``, then ``if recorder is not None: recorder.answer(...)``."""

_registry: Any = None


def reason_of(error: str) -> str:
    """The reason label (one of :data:`REASONS`) of a ``Resolution.error`` text."""
    _, sep, rest = error.partition(": ")
    text = rest if sep else error
    for label, prefixes in _REASON_PREFIXES:
        if text.startswith(prefixes):
            return label
    return "other"


def _header_name(name: str | bytes) -> str:
    """``HTTP_X_FORWARDED_FOR`` (WSGI), ``b"x_forwarded_for"`` (ASGI) -> ``x-forwarded-for``."""
    text = name.decode("latin-1") if isinstance(name, bytes) else name
    text = text.lower()
    if text.startswith("http_"):
        text = text[5:]
    return text.replace("_", "-")


class Recorder:
    """Counts into prometheus_client counters registered in ``registry``.

    Each method is one dictionary lookup and one counter increment (the labelled
    child is made once per label value). Thread-safe: prometheus_client's
    counters are, and a child made twice by two threads at once is the same child.
    """

    def __init__(self, registry: Any) -> None:
        from prometheus_client import Counter

        self.registry = registry
        self._counters = [
            Counter("realip_answers", "Requests handed to the application, by what decided their client",
                    ["source"], registry=registry),
            Counter("realip_headers_stripped", "Forwarding headers removed from requests of untrusted peers, by header",
                    ["header"], registry=registry),
            Counter("realip_headers_not_believed", "Requests whose trusted proxy's forwarding header was not believed",
                    ["reason"], registry=registry),
            Counter("realip_toa_lookups", "TOA module lookups, by result", ["result"], registry=registry),
            Counter("realip_proxy_headers_accepted", "PROXY protocol headers accepted", registry=registry),
            Counter("realip_proxy_headers_refused", "Connections closed for their PROXY protocol header, by reason",
                    ["reason"], registry=registry),
        ]  # fmt: skip
        answers, stripped, not_believed, toa, accepted, refused = self._counters
        # Per counter, label value -> its child (made once). Known values appear at 0
        # from the start: a dashboard's rate() needs the series to exist.
        self._answers = _Children(answers, _SOURCES)
        self._stripped = _Children(stripped, ())
        self._not_believed = _Children(not_believed, REASONS)
        self._toa = _Children(toa, TOA_RESULTS)
        self._accepted = accepted
        self._refused = _Children(refused, PROXY_REFUSALS)
        self._header_names: dict[str | bytes, str] = {}

    def answer(self, source: str) -> None:
        """One request handed to the application, its client decided by ``source``."""
        child = self._answers.get(source)
        if child is None:
            child = self._answers.make(source)
        child.inc()

    def stripped(self, header: str | bytes) -> None:
        """One forwarding header removed from an untrusted peer's request. ``header`` in
        any spelling realip strips (``x-forwarded-for``, ``b"x_forwarded_for"``,
        ``HTTP_X_FORWARDED_FOR``): realip's own list of names, never a client's."""
        name = self._header_names.get(header)
        if name is None:
            name = self._header_names.setdefault(header, _header_name(header))
        (self._stripped.get(name) or self._stripped.make(name)).inc()

    def not_believed(self, error: str) -> None:
        """One request whose trusted proxy's header was not believed; ``error`` is
        ``Resolution.error``, counted by :func:`reason_of`."""
        reason = reason_of(error)
        (self._not_believed.get(reason) or self._not_believed.make(reason)).inc()

    def toa(self, result: str) -> None:
        """One TOA lookup; ``result`` is one of :data:`TOA_RESULTS`."""
        (self._toa.get(result) or self._toa.make(result)).inc()

    def proxy_accepted(self) -> None:
        """One PROXY protocol header accepted."""
        self._accepted.inc()

    def proxy_refused(self, reason: str) -> None:
        """One connection closed for its PROXY header; ``reason`` is one of :data:`PROXY_REFUSALS`."""
        (self._refused.get(reason) or self._refused.make(reason)).inc()

    def unregister(self) -> None:
        """Remove the counters from the registry (for :func:`disable`)."""
        for counter in self._counters:
            self.registry.unregister(counter)


class _Children(dict):  # type: ignore[type-arg]
    """label value -> the counter's child for it."""

    __slots__ = ("counter",)

    def __init__(self, counter: Any, known: tuple[str, ...]) -> None:
        super().__init__()
        self.counter = counter
        for value in known:
            self.make(value)

    def make(self, value: str) -> Any:
        return self.setdefault(value, self.counter.labels(value))


def enable(registry: Any = None) -> Recorder:
    """Start counting, into ``registry`` (prometheus_client's default ``REGISTRY``
    when ``None``); returns the :class:`Recorder`, also ``METRICS.recorder``.

    Call it once per process at start-up, before the first request (in the
    application module, which each gunicorn worker imports). Calling it again
    returns the same recorder; for another registry, :func:`disable` first.
    Raises ``ImportError`` naming the extra when prometheus_client is missing.
    """
    global _registry
    try:
        import prometheus_client
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "realip.metrics needs prometheus_client: pip install 'realip[metrics]'", name=exc.name
        ) from exc
    if registry is None:
        registry = prometheus_client.REGISTRY
    enabled = METRICS.recorder
    if enabled is not None:
        if enabled.registry is not registry:
            raise ValueError("realip.metrics is already enabled with another registry: disable() first")
        return enabled
    recorder = Recorder(registry)
    _registry = registry
    METRICS.recorder = recorder
    return recorder


def disable() -> None:
    """Stop counting: ``METRICS.recorder`` is ``None`` again and the counters leave their registry."""
    global _registry
    recorder, METRICS.recorder, _registry = METRICS.recorder, None, None
    if recorder is not None:
        recorder.unregister()


def scrape_registry() -> Any:
    """The registry to expose: with ``PROMETHEUS_MULTIPROC_DIR`` set, a new one that
    sums every process's files (prometheus_client's ``MultiProcessCollector``);
    else the one :func:`enable` used (or prometheus_client's default)."""
    import prometheus_client

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = prometheus_client.CollectorRegistry()
        collector: Any = multiprocess.MultiProcessCollector  # (untyped in some releases)
        collector(registry)
        return registry
    return _registry if _registry is not None else prometheus_client.REGISTRY


def wsgi_app() -> Callable[..., Any]:
    """A WSGI app answering with the counters in Prometheus' text format
    (prometheus_client's ``make_wsgi_app`` on :func:`scrape_registry`). Mount it
    where only the monitoring can reach it, e.g. with
    ``werkzeug.middleware.dispatcher.DispatcherMiddleware`` at ``/metrics``."""
    from prometheus_client import make_wsgi_app

    app: Callable[..., Any] = make_wsgi_app(scrape_registry())
    return app


def asgi_app() -> Callable[..., Any]:
    """The same as an ASGI app (prometheus_client's ``make_asgi_app``), e.g.
    ``app.mount("/metrics", realip.metrics.asgi_app())`` in FastAPI or Starlette."""
    from prometheus_client import make_asgi_app

    app: Callable[..., Any] = make_asgi_app(scrape_registry())
    return app
