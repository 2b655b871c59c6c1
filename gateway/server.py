"""Run the gateway inside an existing event loop, on a free loopback port (demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import time
from collections.abc import AsyncIterator, Iterator
from types import FrameType

import structlog
import uvicorn
from prometheus_client import multiprocess
from starlette.applications import Starlette

from gateway import machine
from gateway.app import create_app
from gateway.call import TranscriptObserver
from gateway.config import Settings
from gateway.drain import DrainingServer
from gateway.http_guard import HttpGuard, HttpLimits, connection_budget
from gateway.media_socket import MediaSocket

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
        # uvicorn's websockets-sansio protocol (measured: 16% less CPU per call than its legacy websockets
        # one), with a direct way in and out for the carriers' lines (gateway.media_socket).
        ws=MediaSocket,
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


def serve_forever(
    settings: Settings, host: str, port: int, sockets: list[socket.socket] | None = None
) -> None:
    """`gateway serve`: uvicorn that drains calls on SIGTERM instead of cutting them off; with
    WEB_CONCURRENCY > 1, that many such processes on one port (`serve_processes`)."""
    if settings.web_concurrency > 1 and sockets is None:
        serve_processes(settings, host, port, settings.web_concurrency)
        return
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
    _Serving(config, app.state.gateway.drain.run).run(sockets=sockets)


# --- several processes on one port ------------------------------------------------------------------------

RESTART_PAUSE_S = 1.0  # between a worker's death and its successor: a crash loop must not spin a core
EARLY_DEATH_S = 10.0  # a worker dead this soon after it started could not start: stop, do not loop


def serve_processes(settings: Settings, host: str, port: int, processes: int) -> None:
    """WEB_CONCURRENCY: a supervisor binds the port once and forks `processes` full gateways that accept on
    it (the kernel gives each connection to a process that is waiting; a busy one waits less). Their shared
    state (`gateway.machine`: stream tokens, the call limit) is made before the fork. SIGTERM (or Ctrl-C) is
    passed on once: every process drains its own calls, and the supervisor exits when the last has. A worker
    that dies is replaced (its calls are gone: its place in the limit is emptied first)."""
    sock = _listen(host, port)
    shared = machine.Machine.create(processes)
    workers: dict[int, multiprocessing.process.BaseProcess] = {}
    started: dict[int, float] = {}
    stopping = False

    def stop(sig: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            log.info("processes_stopping", signal=signal.Signals(sig).name, processes=len(workers))
            for worker in workers.values():
                if worker.pid is not None and worker.is_alive():
                    os.kill(worker.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ctx = multiprocessing.get_context("fork")  # the modules are imported once; the app is made per process

    def start(slot: int) -> None:
        worker = ctx.Process(target=_worker, args=(settings, sock, shared, slot), name=f"gateway-{slot}")
        worker.start()
        workers[slot], started[slot] = worker, time.monotonic()

    log.info("processes", processes=processes, pid=os.getpid())
    for slot in range(processes):
        start(slot)
    exit_code = 0
    while workers:
        multiprocessing.connection.wait([w.sentinel for w in workers.values()], timeout=0.5)
        for slot, worker in list(workers.items()):
            if worker.is_alive():
                continue
            del workers[slot]
            shared.release(slot)
            if worker.pid is not None and os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
                multiprocess.mark_process_dead(worker.pid)
            if stopping:
                continue
            if time.monotonic() - started[slot] < EARLY_DEATH_S:
                log.error("worker_failed_to_start", slot=slot, exitcode=worker.exitcode)
                exit_code = 1
                stop(signal.SIGTERM, None)
                continue
            log.error("worker_died", slot=slot, exitcode=worker.exitcode)
            time.sleep(RESTART_PAUSE_S)
            start(slot)
    sock.close()
    if exit_code:
        raise SystemExit(exit_code)


def _worker(settings: Settings, sock: socket.socket, shared: machine.Machine, slot: int) -> None:
    """One of the supervisor's processes: a whole gateway on the shared socket."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn (DrainingServer) installs its own while it serves
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    machine.join(shared, slot)
    serve_forever(settings, "", 0, sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    """The port, bound once for every process (as uvicorn's own workers do)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


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

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        _end_streams(self.config)
        await super().shutdown(sockets)


class _HostedServer(uvicorn.Server):
    """uvicorn inside a host program's event loop: the host owns the signals (uvicorn would take SIGINT and
    SIGTERM for the time it serves, then raise them again once it has stopped)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        _end_streams(self.config)
        await super().shutdown(sockets)


def _end_streams(config: uvicorn.Config) -> None:
    """Before uvicorn waits for the responses in progress: end the console's event streams, which never end
    by themselves (a drain ends them too; this is for a stop without one). The process's: a page of another
    app in this process (tests) reconnects."""
    from gateway.console.live import close_all

    close_all()


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
