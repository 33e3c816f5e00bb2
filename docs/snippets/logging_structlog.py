"""The client in every structlog event.

Shown in docs/downstream/logging.md; run by tests/test_logcontext.py.
"""

# [setup]
import structlog

import realip.logcontext

structlog.configure(
    processors=[
        realip.logcontext.structlog_processor,  # client, peer, client_source
        structlog.processors.add_log_level,
        structlog.processors.JSONRenderer(sort_keys=True),
    ],
)
# [/setup]
