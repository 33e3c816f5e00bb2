"""The client in every log line: the standard library's logging, one line of set-up.

Shown in docs/downstream/logging.md; run by tests/test_logcontext.py.
"""

# [setup]
import logging

import realip.logcontext

logging.basicConfig(
    level=logging.INFO,
    format="%(asctime)s %(levelname)s %(client)s (%(client_source)s via %(peer)s) %(name)s: %(message)s",
)
realip.logcontext.install()  # after the handlers exist: adds realip's filter to each
# [/setup]
