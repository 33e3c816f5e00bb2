"""Django with django-ratelimit: one bucket per client network, as realip decided the client.

A whole (tiny) project in one module: settings, URLs, a view. Shown in
docs/downstream/ratelimit.md; served behind a real nginx by
tests/test_ratelimit.py (DJANGO_SETTINGS_MODULE=ratelimit_django; the trusted
proxies come from REALIP_TRUSTED_PROXIES).
"""

from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path
from django_ratelimit.decorators import ratelimit

import realip.ratelimit

SECRET_KEY = "not-secret: a test project"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = __name__
INSTALLED_APPS: list[str] = []
DATABASES: dict = {}
CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}  # one process: enough here
# [settings]
MIDDLEWARE = ["realip.django.RealIPMiddleware"]  # first: everything after it sees the client
# [/settings]


# [view]
@ratelimit(key="realip.ratelimit.django_key", rate="2/m", block=False)
def index(request: HttpRequest) -> JsonResponse:
    if getattr(request, "limited", False):
        return JsonResponse({"error": "rate limited"}, status=429)
    return JsonResponse({"client": request.META["REMOTE_ADDR"], "key": realip.ratelimit.key(request)})


# [/view]


urlpatterns = [path("", index)]
application = get_wsgi_application()
