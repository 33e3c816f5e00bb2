"""FastAPI with realip's Prometheus counters at /metrics/.

Shown in docs/downstream/metrics.md; served by tests/test_metrics.py (options
from REALIP_* variables, as a deployment would set them).
"""

# [app]
from fastapi import FastAPI, Request

import realip.metrics
from realip import RealIPMiddleware

realip.metrics.enable()  # once per process, before the first request

app = FastAPI()
app.mount("/metrics", realip.metrics.asgi_app())  # scrape /metrics/ (Starlette redirects /metrics there)
app.add_middleware(RealIPMiddleware)  # last: it runs first, for every route (the scrape's too)


@app.get("/")
async def index(request: Request) -> dict:
    return {"client": request.client.host}  # type: ignore[union-attr]


# [/app]
