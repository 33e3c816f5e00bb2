"""uvicorn started from code behind a *dedicated* Huawei Cloud ELB doing NAT64.

A dedicated ELB connects from addresses of the backend subnet (10.1.0.0/24
here), not from the shared 100.125.0.0/16: name them in ``toa_peers``.
Shown in docs/toa.md; run by tests/test_docs.py (on a loopback port, with the
test suite's TOA emulator).
"""

import uvicorn

import realip.uvicorn

# [run]
http, ws = realip.uvicorn.protocols(toa_peers=["10.1.0.0/24"])  # the dedicated ELB's subnet
uvicorn.run(
    "fastapi_app:app",  # keeps app.add_middleware(RealIPMiddleware) for forwarding headers
    host="0.0.0.0",  # AF_INET: the peer stays the ELB, which realip checks (toa.md, step 3)
    port=8000,
    http=http,
    ws=ws,
    proxy_headers=False,  # uvicorn's own X-Forwarded-For handling off: realip decides
)
# [/run]
