"""A Starlette app whose lifespan events leave traces the tests can check."""

import os
from contextlib import asynccontextmanager
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from realip import RealIPMiddleware

TRACE = Path(os.environ["LIFESPAN_TRACE"])


@asynccontextmanager
async def lifespan(app: Starlette):
    TRACE.write_text("startup\n")
    yield {"started": True}
    with TRACE.open("a") as f:
        f.write("shutdown\n")


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"client": list(request.scope["client"]), "started": request.state.started})


app = Starlette(routes=[Route("/", whoami)], lifespan=lifespan)
app.add_middleware(RealIPMiddleware)
