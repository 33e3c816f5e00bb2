"""FastAPI behind reverse proxies at 10.0.0.0/8 that append X-Forwarded-For.

Shown in docs/frameworks.md; run by tests/test_docs.py.
"""

from fastapi import FastAPI, Request

from realip import RealIPMiddleware

app = FastAPI()
# [middleware]
app.add_middleware(
    RealIPMiddleware,
    trusted_proxies=["10.0.0.0/8"],  # the proxies' own addresses, never "everything"
    strategy="x-forwarded-for",  # the default: rightmost entry that is not a trusted proxy
)
# [/middleware]


@app.get("/")
async def whoami(request: Request) -> dict:
    realip = request.scope["extensions"]["realip"]  # a realip.Resolution
    return {
        "client": request.client.host,  # what every part of the app sees
        "peer": realip.peer[0],  # the socket peer: the nearest proxy
        "source": realip.source,  # "x-forwarded-for"
        "hops": list(realip.hops),  # the trusted proxies passed, nearest last
    }
