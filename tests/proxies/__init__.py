"""Real proxies started by the tests: nginx (and HAProxy) on loopback.

The configuration files here are the ones the docs quote: each is a template
where ``@NAME@`` is filled in by the test (ports, paths); the rest is exactly
what a deployment would write.
"""
