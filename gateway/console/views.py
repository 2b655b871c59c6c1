"""The console's pages: calls, one call, live calls, the overview."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from gateway.console.auth import ConsoleSession
from gateway.console.pages import gateway_of, page, render


async def calls(request: Request, session: ConsoleSession) -> Response:
    records = await gateway_of(request).records.store.list_calls(None, 50)
    return render(request, session, "calls.html", nav="calls", calls=records)


def routes() -> list[BaseRoute]:
    return [
        Route("/console/calls", page(calls), methods=["GET"]),
    ]
