"""Django settings of examples/django_project, plus realip's options for a proxy.

Shown in docs/frameworks.md; run by tests/test_docs.py (WSGI and ASGI).
"""

from project.settings import *  # noqa: F403

# [settings]
MIDDLEWARE = [
    "realip.django.RealIPMiddleware",  # first: sessions, CSRF, rate limits see the client
    "django.middleware.common.CommonMiddleware",
]
REALIP = {
    "trusted_proxies": ["10.0.0.0/8"],
    "strategy": "x-forwarded-for",
}
# [/settings]
