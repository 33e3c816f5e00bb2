"""A FastAPI app behind realip.

Run it on a dual-stack listener, e.g. ``gunicorn -k uvicorn_worker.UvicornWorker
--bind [::]:8000 fastapi_app:app``; IPv4 clients then reach it as
``::ffff:a.b.c.d`` and realip gives the app ``a.b.c.d``.
"""

from fastapi import FastAPI, Request, WebSocket

from realip import RealIPMiddleware

app = FastAPI()
app.add_middleware(RealIPMiddleware)


def describe(scope: dict) -> dict:
    """What the app sees, and how realip decided it."""
    realip = scope["extensions"]["realip"]
    return {"client": list(scope["client"]), "peer": list(realip.peer or ()), "source": realip.source}


@app.get("/")
async def whoami(request: Request) -> dict:
    return describe(request.scope)


@app.websocket("/ws")
async def whoami_ws(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json(describe(websocket.scope))
    await websocket.close()
