"""Run Werkzeug's development server (what ``flask run`` uses) on an inherited fd.

Usage: python werkzeug_fd.py FD module:app
"""

import importlib
import sys

from werkzeug.serving import make_server

fd, target = int(sys.argv[1]), sys.argv[2]
module, _, name = target.partition(":")
app = getattr(importlib.import_module(module), name)
# host "::" selects AF_INET6 for the inherited socket, which is dual-stack.
server = make_server("::", 0, app, threaded=True, fd=fd)
server.serve_forever()
