"""``realip doctor``: what this host does to client addresses.

Each check is split in two: a small reader at the edge (a ``/proc`` file under a
``root`` directory, one loopback connection, the environment) and a pure
function that turns what was read into a :class:`Finding`. Tests feed the pure
parts with fixture text and point ``root`` at fixture trees; :func:`collect`
wires the real edges together.

What is looked at, all read-only except two loopback probes:

- ``net.ipv6.bindv6only`` and ``net.ipv4.ip_forward`` (:mod:`.sysctls`);
- signs of the TOA kernel module (``/sys/module/toa``, ``/proc/modules``,
  ``/proc/net/toa_stats``), whether realip's compiled shim is present, and a
  live TOA lookup on one loopback connection (``127.0.0.1`` to itself)
  (:mod:`.toa_module`);
- the TCP listeners of this network namespace (``/proc/net/tcp{,6}``), their
  owning processes (a reverse proxy's own listener is named as such), and for
  each wildcard ``[::]`` listener whether it takes IPv4 clients, found by
  connecting to ``127.0.0.1:PORT`` and closing at once (skipped with
  ``probe=False``, ``--no-probe`` on the command line) (:mod:`.listeners`);
- the ``REALIP_*`` variables of the environment, validated as realip reads
  them (:mod:`.environment`);
- with ``--expect``, whether what the user says the host should have is there
  (:mod:`.expectations`).

:mod:`.render` prints the report as text or JSON; :mod:`.run` has
:func:`collect`. Imports point one way: ``run`` and ``expectations`` use the
checks, the checks use :mod:`.model`, and :mod:`.model` uses nothing here.

Nothing here raises for an unreadable file or a failed probe: it becomes a
finding that says so.
"""

from __future__ import annotations

from .environment import environment_findings
from .expectations import EXPECTATIONS, expectation_findings
from .listeners import (
    MAX_PORT_PROBES,
    OWNER_SCAN_BUDGET,
    PORT_PROBES_BUDGET,
    PROBE_TIMEOUT,
    REVERSE_PROXIES,
    Listener,
    Process,
    decode_proc_address,
    listener_findings,
    parse_proc_net_tcp,
    probe_accepts_ipv4,
    read_listeners,
    socket_owners,
)
from .model import CHECKS, SCHEMA_VERSION, Finding, Report
from .render import render_json, render_text
from .run import collect
from .sysctls import bindv6only_finding, ip_forward_finding, read_sysctl
from .toa_module import (
    TOA_STATS_LIMIT,
    ModuleSigns,
    nat64_finding,
    probe_toa,
    read_module_signs,
    toa_firewall_finding,
    toa_module_finding,
    toa_probe_finding,
)

__all__ = [
    "CHECKS",
    "EXPECTATIONS",
    "MAX_PORT_PROBES",
    "OWNER_SCAN_BUDGET",
    "PORT_PROBES_BUDGET",
    "PROBE_TIMEOUT",
    "REVERSE_PROXIES",
    "SCHEMA_VERSION",
    "TOA_STATS_LIMIT",
    "Finding",
    "Listener",
    "ModuleSigns",
    "Process",
    "Report",
    "bindv6only_finding",
    "collect",
    "decode_proc_address",
    "environment_findings",
    "expectation_findings",
    "ip_forward_finding",
    "listener_findings",
    "nat64_finding",
    "parse_proc_net_tcp",
    "probe_accepts_ipv4",
    "probe_toa",
    "read_listeners",
    "read_module_signs",
    "read_sysctl",
    "render_json",
    "render_text",
    "socket_owners",
    "toa_firewall_finding",
    "toa_module_finding",
    "toa_probe_finding",
]
