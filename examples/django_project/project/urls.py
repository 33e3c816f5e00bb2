from django.http import HttpRequest, JsonResponse
from django.urls import path


def whoami(request: HttpRequest) -> JsonResponse:
    realip = request.realip  # type: ignore[attr-defined]
    return JsonResponse(
        {
            "client": [request.META["REMOTE_ADDR"], int(request.META["REMOTE_PORT"])],
            "peer": list(realip.peer or ()),
            "source": realip.source,
        }
    )


urlpatterns = [path("", whoami)]
