"""Run the gateway inside an existing event loop, on a free loopback port (demo, tests, benchmarks)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from types import FrameType
from typing import Any, cast

import structlog
import uvicorn
from prometheus_client import multiprocess
from starlette.applications import Starlette
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from gateway import dispatch, machine
from gateway.app import create_app, import_for_serving
from gateway.call import TranscriptObserver
from gateway.carriers import more_carriers
from gateway.config import Settings
from gateway.drain import DrainingServer
from gateway.forwarded import KeepPeer
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
    # Heroku's router and most proxies terminate TLS: X-Forwarded-Proto is trusted for derived URLs (the ones
    # carriers sign), from any peer. The connection's own address is kept first (gateway.forwarded).
    proxied: Any = ProxyHeadersMiddleware(cast(Any, guard.wrap(app)), trusted_hosts="*")  # (uvicorn's types)
    served = KeepPeer(proxied)
    return uvicorn.Config(
        served,
        host=host,
        port=port,
        lifespan="on",
        http=guard.protocol_class(),
        timeout_keep_alive=guard.limits.keep_alive_s,
        # uvicorn's own lines (and asyncio's, websockets') go through the gateway's JSON logging (logs.py).
        log_config=None,
        proxy_headers=False,  # applied above, inside KeepPeer
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


def serve_forever(settings: Settings, host: str, port: int, channel: socket.socket | None = None) -> None:
    """`gateway serve`: uvicorn that drains calls on SIGTERM instead of cutting them off; with
    WEB_CONCURRENCY > 1, that many such processes on one port (`serve_processes`), each served the
    connections the supervisor hands it on `channel`."""
    # The port first, before anything slow: a port in use is one line at once (`PortUnavailable`), not a
    # traceback, or an error after the local backend has loaded. One process binds it without listening:
    # uvicorn listens once the app has started, so nothing connects to a gateway that cannot answer yet.
    if channel is None and settings.web_concurrency > 1:
        serve_processes(settings, _listen(host, port), host, port, settings.web_concurrency)
        return
    listener = _listen(host, port, listening=False) if channel is None else None
    app = create_app(settings)
    limits = http_limits(settings)
    served = app if channel is None else dispatch.closing(app)  # routed per connection: one request each
    config = uvicorn_config(served, host, port, settings.max_message_bytes, limits)
    log.info(
        "http_limits",
        header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s,
        max_connections=connection_budget(limits),
        fd_limit=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    )
    server = _Serving(config, app.state.gateway.drain.run, channel)
    server.run(sockets=[listener] if listener is not None else [])


# --- several processes on one port ------------------------------------------------------------------------

RESTART_PAUSE_S = 1.0  # between a worker's death and its successor: a crash loop must not spin a core
EARLY_DEATH_S = 10.0  # a worker dead this soon after it started could not start: stop, do not loop


def serve_processes(
    settings: Settings, listener: socket.socket, host: str, port: int, processes: int
) -> None:
    """WEB_CONCURRENCY: a supervisor binds the port and forks `processes` full gateways, then accepts every
    connection and hands it to one of them (`gateway.dispatch`: a call's stream to the process that answered
    its webhook, anything else to the process with the fewest calls). Their shared state (`gateway.machine`:
    stream tokens, the call limit) is made before the fork. SIGTERM (or Ctrl-C) is passed on once: every
    process drains its own calls, and the supervisor exits when the last has. A worker that dies is replaced
    (its calls are gone: its place in the limit is emptied first)."""
    shared = machine.Machine.create(processes)
    door = dispatch.FrontDoor(listener, shared.calls_by_slot)
    shared.door_url = door.local_url()
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
        share_with_workers()
        channel = door.open_channel(slot)
        worker = ctx.Process(
            target=_worker, args=(settings, door, channel, shared, slot), name=f"gateway-{slot}"
        )
        worker.start()
        channel.close()  # the worker's end: the worker has it now
        workers[slot], started[slot] = worker, time.monotonic()

    log.info("processes", processes=processes, pid=os.getpid())
    for slot in range(processes):
        start(slot)
    restarts: dict[int, float] = {}  # slot -> when its replacement starts (the front door goes on meanwhile)
    listening = False
    exit_code = 0
    while workers or (restarts and not stopping):
        door.serve(0.1 if restarts else 0.5, also=[w.sentinel for w in workers.values()])
        if not listening and len(door.ready) == processes:
            listening = True  # as one process says it once it serves
            shown = f"[{host}]" if ":" in host else host
            log.info("listening", url=f"http://{shown}:{port}", host=host, port=port, processes=processes)
        for slot, worker in list(workers.items()):
            if worker.is_alive():
                continue
            del workers[slot]
            door.close_channel(slot)
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
            restarts[slot] = time.monotonic() + RESTART_PAUSE_S
        for slot, at in list(restarts.items()):
            if stopping:
                restarts.clear()
            elif time.monotonic() >= at:
                del restarts[slot]
                start(slot)
    door.close()
    if exit_code:
        raise SystemExit(exit_code)


def share_with_workers() -> None:
    """Before a fork: what the supervisor holds (every module, Silero's weights) is shared with a worker
    until either writes to it. So the supervisor first imports what each worker would import as it starts
    (the modules of serving, the carriers' SDKs), and freezes its objects: a garbage collection in the worker
    writes to every object it tracks, and frozen ones are left out. (The app freezes what start-up made once
    it has started, but the collections that run while a worker starts came first: each worker had its own
    copy of some 20 MB of the supervisor's objects, BENCHMARKS.md.) What is garbage now is collected first,
    not frozen for good."""
    import_for_serving()
    more_carriers()
    gc.collect()
    gc.freeze()


def _worker(
    settings: Settings,
    door: dispatch.FrontDoor,
    channel: socket.socket,
    shared: machine.Machine,
    slot: int,
) -> None:
    """One of the supervisor's processes: a whole gateway, served the connections handed on `channel`."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # uvicorn (DrainingServer) installs its own while it serves
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    door.forget()  # the port and the other processes' channels stay with the supervisor
    machine.join(shared, slot)
    serve_forever(settings, "", 0, channel=channel)


class PortUnavailable(Exception):
    """`gateway serve` cannot listen where it was asked to (in use, not this machine's address, no right)."""

    def __init__(self, message: str, in_use: bool) -> None:
        super().__init__(message)
        self.in_use = in_use


def _listen(host: str, port: int, listening: bool = True) -> socket.socket:
    """The port, bound once (by the supervisor, with several processes, which accepts at once; else not yet
    listening: uvicorn listens once the app has started)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        if listening:
            sock.listen(2048)
    except OSError as exc:
        sock.close()
        shown = f"[{host}]" if ":" in host else host
        message = f"cannot listen on {shown or '*'}:{port}: {exc.strerror or exc}"
        raise PortUnavailable(message, in_use=exc.errno == errno.EADDRINUSE) from None
    return sock


class _Serving(DrainingServer):
    """`gateway serve`'s server: says where it listens once it does (the app started, the sockets bound); as
    one of several processes, it serves the connections the supervisor hands it instead of a port."""

    def __init__(
        self,
        config: uvicorn.Config,
        drain: Callable[[], Coroutine[Any, Any, None]],
        channel: socket.socket | None = None,
    ) -> None:
        super().__init__(config, drain)
        self._channel = channel
        self._stop_adopting: Callable[[], None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit:
            return
        if self._channel is not None:
            config, state, app_state = self.config, self.server_state, self.lifespan.state
            loop = asyncio.get_running_loop()

            def protocol() -> asyncio.Protocol:  # what uvicorn's own startup makes per accepted connection
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=state, app_state=app_state, _loop=loop
                )

            orphaned = functools.partial(self.handle_exit, signal.SIGTERM, None)
            self._stop_adopting = dispatch.adopt(loop, self._channel, protocol, orphaned)
        for server in self.servers:
            for sock in server.sockets:
                host, port = sock.getsockname()[:2]
                shown = f"[{host}]" if ":" in host else host
                log.info("listening", url=f"http://{shown}:{port}", host=host, port=port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self._stop_adopting is not None:  # as uvicorn closes its listeners first
            self._stop_adopting()
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
