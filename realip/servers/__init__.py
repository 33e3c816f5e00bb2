"""Pieces shared by realip's server integrations (``realip.hypercorn``,
``realip.daphne``, ``realip.gunicorn``): the start of a connection
(``_connection``) and the servers that cannot give the connection at all
(``_unsupported``).

Nothing here is needed by an application: the integrations use it.
"""
