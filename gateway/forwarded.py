"""Who a request came from, behind a proxy or not: the address the console's sign-in limit holds a client to.

uvicorn believes `X-Forwarded-For` from any peer (`forwarded_allow_ips="*"`: Heroku's router, whose addresses
are not fixed, must be believed for `X-Forwarded-Proto`, which the URLs carriers sign depend on), and takes
the header's first address as the client's. That address is whatever the client wrote: a proxy appends the
address it was connected from to what the client sent. So a client could name a new address on every try.

`client_address` takes instead the address the nearest proxy appended (the header's last), and only when the
connection itself came from a proxy, that is from a private or loopback address (Heroku's router, a load
balancer or an ingress inside the network, ngrok or a tunnel on the host); a connection from anywhere else is
the client, whatever its header says. `KeepPeer` keeps the connection's own address in the scope before
uvicorn's proxy middleware replaces it. Pure but for the middleware; tested with scopes.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

PEER = "gateway.peer"  # the scope's key: the connection's own address, before X-Forwarded-For


class KeepPeer:
    """ASGI middleware, outside uvicorn's ProxyHeadersMiddleware: the connection's address under PEER."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (client := scope.get("client")) is not None:
            scope[PEER] = client[0]
        await self.app(scope, receive, send)


def _internal(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return ip.is_private or ip.is_loopback


def client_address(scope: dict[str, Any] | Scope) -> str:
    """The client's address: the one the nearest proxy appended when the connection came from a proxy on
    a private or loopback address, else the connection's own."""
    client = scope.get("client")
    peer = scope.get(PEER) or (client[0] if client else "unknown")
    if not _internal(peer):
        return str(peer)
    forwarded = b",".join(v for k, v in scope.get("headers", ()) if k == b"x-forwarded-for")
    last = forwarded.decode("latin1").rsplit(",", 1)[-1].strip()
    return last or str(peer)
