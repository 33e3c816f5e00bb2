"""``uvicorn.run(...)`` in code, with ``realip.uvicorn.protocols()``, on an inherited fd.

Usage: python uvicorn_run.py FD module:app '{"toa_peers": "...", ...}'
"""

import json
import sys

import uvicorn

import realip.uvicorn

fd, app = int(sys.argv[1]), sys.argv[2]
options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
http, ws = realip.uvicorn.protocols(**options)
uvicorn.run(app, fd=fd, http=http, ws=ws, proxy_headers=False, log_level="info")
