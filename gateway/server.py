"""Run the gateway inside an existing event loop, on a free loopback port (demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
from collections.abc import AsyncIterator, Iterator

import structlog
import uvicorn
from starlette.applications import Starlette

from gateway.app import create_app
from gateway.call import TranscriptObserver
from gateway.config import Settings
from gateway.drain import DrainingServer
from gateway.http_guard import HttpGuard, HttpLimits, connection_budget

log = structlog.get_logger("gateway.server")


def uvicorn_config(
    app: Starlette,
    host: str,
    port: int,
    max_message_bytes: int = 64 * 1024,
    http_limits: HttpLimits | None = None,
) -> uvicorn.Config:
    """How the gateway is served, the same for `gateway serve`, the demo, tests and benchmarks."""
    # Deadlines for a request's headers and body, a budget of HTTP connections, one line per refusal
    # (gateway.http_guard): uvicorn alone lets slow clients hold connections for ever.
    guard = HttpGuard(http_limits)
    return uvicorn.Config(
        guard.wrap(app),
        host=host,
        port=port,
        lifespan="on",
        http=guard.protocol_class(),
        timeout_keep_alive=guard.limits.keep_alive_s,
        # uvicorn's own lines (and asyncio's, websockets') go through the gateway's JSON logging (logs.py).
        log_config=None,
        # Heroku's router and most proxies terminate TLS: trust X-Forwarded-Proto for derived URLs.
        proxy_headers=True,
        forwarded_allow_ips="*",
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",  # measured: 16% less CPU per call than uvicorn's legacy websockets protocol
        ws_max_size=max_message_bytes,  # a bigger message closes the socket with 1009 before it is read
        # Twilio never negotiates permessage-deflate, and audio does not deflate: an upgrade that asks for it
        # would cost ~45 kB of compressor state, held before the app can refuse it (issue 12, scenario 9).
        ws_per_message_deflate=False,
        # After the drain (gateway.drain), whatever is still connected gets this long to close.
        timeout_graceful_shutdown=5,
    )


def http_limits(settings: Settings) -> HttpLimits:
    return HttpLimits(
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        max_connections=settings.http_max_connections,
    )


def serve_forever(settings: Settings, host: str, port: int) -> None:
    """`gateway serve`: uvicorn that drains calls on SIGTERM instead of cutting them off."""
    app = create_app(settings)
    limits = http_limits(settings)
    config = uvicorn_config(app, host, port, settings.max_message_bytes, limits)
    log.info(
        "http_limits",
        header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        max_connections=connection_budget(limits),
        fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )
    _Serving(config, app.state.gateway.drain.run).run()


class _Serving(DrainingServer):
    """`gateway serve`'s server: says where it listens once it does (the app started, the sockets bound)."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info("listening", url=f"http://{shown}:{port}", host=host, port=port)


class _HostedServer(uvicorn.Server):
    """uvicorn inside a host program's event loop: the host owns the signals (uvicorn would take SIGINT and
    SIGTERM for the time it serves, then raise them again once it has stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serving(config: uvicorn.Config) -> AsyncIterator[str]:
    """Serve `config` inside this event loop until the block ends; yields the base URL it is bound to."""
    server = _HostedServer(config)
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()  # re-raise why it could not start
                raise RuntimeError("server stopped before it started")
            await asyncio.sleep(0.01)
        bound = server.servers[0].sockets[0].getsockname()
        yield f"http://{bound[0]}:{bound[1]}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def running_gateway(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_transcript: TranscriptObserver | None = None,
    app: Starlette | None = None,
) -> AsyncIterator[str]:
    """Serve the app (or `app`, to reach its state) until the block ends; yields its base URL."""
    app = app or create_app(settings, on_transcript=on_transcript)
    config = uvicorn_config(app, host, port, settings.max_message_bytes, http_limits(settings))
    async with serving(config) as url:
        yield url
