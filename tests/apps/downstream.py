"""Apps whose code reads forwarding headers itself, as widely used libraries do.

Each answers with what realip decided and what the library found:
django-ipware's ``get_client_ip`` (Django, WSGI), Flask's ``request.access_route``
(Werkzeug: ``X-Forwarded-For`` from the left) and slowapi's ``get_ipaddr``
(Starlette). realip is configured from ``REALIP_*`` variables.
"""

from __future__ import annotations

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="tests-only",
    MIDDLEWARE=["realip.django.RealIPMiddleware"],
    INSTALLED_APPS=[],
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after settings.configure()
from django.http import HttpRequest, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from flask import Flask, jsonify, request  # noqa: E402
from ipware import get_client_ip  # noqa: E402
from slowapi.util import get_ipaddr  # noqa: E402
from starlette.applications import Starlette  # noqa: E402
from starlette.requests import Request  # noqa: E402
from starlette.responses import JSONResponse  # noqa: E402
from starlette.routing import Route  # noqa: E402

from realip import RealIPMiddleware, RealIPWSGIMiddleware  # noqa: E402


def _django_view(request: HttpRequest) -> JsonResponse:
    ip, _routable = get_client_ip(request)
    return JsonResponse(
        {
            "library": ip,
            "client": request.META["REMOTE_ADDR"],
            "xff": request.META.get("HTTP_X_FORWARDED_FOR"),
            "x_real_ip": request.META.get("HTTP_X_REAL_IP"),
        }
    )


urlpatterns = [path("", _django_view)]
django_app = get_wsgi_application()

flask = Flask(__name__)


@flask.get("/")
def _flask_view() -> object:
    return jsonify(
        library=request.access_route[0], client=request.remote_addr,
        xff=request.headers.get("X-Forwarded-For"), x_real_ip=request.headers.get("X-Real-IP"),
    )  # fmt: skip


flask.wsgi_app = RealIPWSGIMiddleware(flask.wsgi_app)  # type: ignore[method-assign]
flask_app = flask


async def _starlette_view(request: Request) -> JSONResponse:
    return JSONResponse(
        {
            "library": get_ipaddr(request),
            "client": request.client.host if request.client else None,
            "xff": request.headers.get("x-forwarded-for"),
            "x_real_ip": request.headers.get("x-real-ip"),
        }
    )


starlette_app = RealIPMiddleware(Starlette(routes=[Route("/", _starlette_view)]))
