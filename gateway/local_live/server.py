"""The local Live backend's sockets: a WebSocket server speaking the Live protocol on Google's paths.

Per connection: wait for ``setup``, validate it as the service does (closing 1007/1008 with a reason
otherwise), resume the history of a handle if asked, answer ``setupComplete``, then feed client messages to
a ``Session`` until the socket closes. A connection lifetime limit (``goaway_after_s``) sends ``goAway``
and closes 1011 ``timeLeft`` later, as the service does after about ten minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import itertools
import logging
import random
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

import structlog
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from . import protocol as p
from . import tts
from .agent import HistoryTurn
from .asr import shared_pool
from .options import LocalLiveOptions
from .session import Session
from .store import HandleStore
from .vad import FrameVad

log = structlog.get_logger("gateway.local_live")
_conn_ids = itertools.count(1)


ACTIVITY_SIGNALS = (p.ActivityStart, p.ActivityEnd, p.AudioStreamEnd)
ACTIVITY_SIGNALS_NAMES: dict[type, str] = {
    p.ActivityStart: "activityStart", p.ActivityEnd: "activityEnd", p.AudioStreamEnd: "audioStreamEnd"
}  # fmt: skip


@dataclass
class ConnectionRecord:
    """What one set-up connection carried, kept when ``LocalLiveOptions.record_connections`` is on, so a
    test can check what a client did (which handle it resumed from, which audio it sent) without reading
    the recogniser's output. Positions are bytes of audio received on this connection."""

    session_id: str
    resumed_from: str | None  # the handle this connection resumed from; None for a new session
    audio: bytearray = field(default_factory=bytearray)  # realtimeInput audio, as received (PCM16)
    # Resumption handles and input transcriptions in the order they were sent: ("handle" or "transcript",
    # the handle or the text, the bytes of audio received by then).
    sent: list[tuple[str, str, int]] = field(default_factory=list)
    dropped: bool = False  # cut on purpose (``drop_rate_per_s``)
    # The client's activity signals in order: "activityStart", "activityEnd", "audioStreamEnd".
    activity: list[str] = field(default_factory=list)
    # Transparent resumption: bytes of audio received by the end of each audio message, by its index (the
    # setup is 0); and each handle with the last client message it said it covers.
    audio_at: dict[int, int] = field(default_factory=dict)
    consumed: dict[str, int] = field(default_factory=dict)
    authorization: str = ""  # the Authorization header's scheme ("Bearer" on the Vertex path)

    @property
    def handles(self) -> list[str]:
        return [value for kind, value, _ in self.sent if kind == "handle"]

    @property
    def transcripts(self) -> list[str]:
        return [value for kind, value, _ in self.sent if kind == "transcript"]

    def sending(self, message: dict[str, Any]) -> None:
        if handle := message.get("sessionResumptionUpdate", {}).get("newHandle"):
            self.sent.append(("handle", handle, len(self.audio)))
            if (
                index := message["sessionResumptionUpdate"].get("lastConsumedClientMessageIndex")
            ) is not None:
                self.consumed[handle] = int(index)
        if text := message.get("serverContent", {}).get("inputTranscription", {}).get("text"):
            self.sent.append(("transcript", text, len(self.audio)))


class LocalLiveServer:
    """The local Live backend: a WebSocket server on Google's Live paths with the shared recognizer pool, the
    handle store and the worker threads."""

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, options: LocalLiveOptions | None = None
    ) -> None:
        self.host = host
        self._requested_port = port
        self.options = options or LocalLiveOptions()
        self.pool = shared_pool(self.options.recognizers_preload, self.options.recognizers_limit)
        self.store = HandleStore(self.options.handle_ttl_s)
        self.audio_bytes_received = 0  # realtimeInput audio over all connections (tests count caller frames)
        self.connections: list[ConnectionRecord] = []  # with options.record_connections, in setup order
        self._executor: ThreadPoolExecutor | None = None
        self._server: Server | None = None
        self._port = 0
        self._go_aways: set[asyncio.Task[None]] = set()  # go_away(): connections being sent away

    # -- lifetime ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.options.worker_threads, thread_name_prefix="local-live")
        loop = asyncio.get_running_loop()
        # Load the models once, off the event loop: espeak-ng, a first PocketSphinx decoder, Silero.
        await loop.run_in_executor(self._executor, self._warm)
        self._server = await serve(
            self._handle,
            self.host,
            self._requested_port,
            process_request=self._process_request,
            max_size=self.options.max_frame_bytes,
            ssl=self.options.ssl_context,
            compression=None,  # the service does not negotiate permessage-deflate; audio barely compresses
            ping_interval=None,  # keepalive is the client's business, as with the service
            logger=logging.getLogger("gateway.local_live.websockets"),  # websockets wants a stdlib logger
        )
        sock = next(iter(self._server.sockets))
        self._port = sock.getsockname()[1]
        log.info("local_live.listening", url=self.url(), recognizers=self.pool.loaded)

    def _warm(self) -> None:
        tts.engine()
        self.pool.warm()
        FrameVad()

    async def close(self) -> None:
        for task in list(self._go_aways):
            task.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> LocalLiveServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def port(self) -> int:
        return self._port

    def url(self, version: str = "v1alpha") -> str:
        scheme = "wss" if self.options.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self._port}" + p.PATH_TEMPLATE.format(version=version)

    def vertex_url(self, version: str = "v1beta1") -> str:
        """Vertex AI's Live path: a bearer token is required there, and the Vertex model names."""
        scheme = "wss" if self.options.ssl_context is not None else "ws"
        return f"{scheme}://{self.host}:{self._port}" + p.VERTEX_PATH_TEMPLATE.format(version=version)

    # -- connections ---------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        # The API key (x-goog-api-key or ?key=) is accepted and ignored; the query is never logged.
        path = urlsplit(request.path).path
        if path not in p.PATHS:
            log.info("local_live.not_found", path=path)
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if p.PATHS[path] == p.VERTEX:
            # Vertex takes an OAuth access token, never an API key; the token itself is never logged.
            scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
            check = self.options.bearer_check
            if scheme != "Bearer" or not token.strip() or (check is not None and not check(token.strip())):
                log.info("local_live.unauthenticated", path=path, scheme=scheme or None)
                return connection.respond(
                    HTTPStatus.UNAUTHORIZED, "Request had invalid authentication credentials.\n"
                )
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        # Handlers run between start() and close(), after the handshake: the request and the executor exist.
        assert ws.request is not None and self._executor is not None
        executor = self._executor
        version = p.PATHS[urlsplit(ws.request.path).path]
        conn = next(_conn_ids)
        clog = log.bind(conn=conn, version=version)
        record: ConnectionRecord | None = None

        async def send(message: dict[str, Any]) -> None:
            if record is not None:
                record.sending(message)  # before the await: positions as they were when decided
            await ws.send(p.encode(message))  # bytes: a binary frame, as the service sends

        try:
            cfg, session_id, history = await self._setup(ws, version, clog)
        except p.ProtocolError as exc:
            clog.info("local_live.rejected", code=exc.code, reason=exc.reason)
            await ws.close(exc.code, exc.reason)
            return
        except (ConnectionClosed, TimeoutError):
            return

        clog = clog.bind(session=session_id[:8], model=cfg.model.name)
        self.store.connected(session_id)
        if self.options.record_connections:
            record = ConnectionRecord(session_id, cfg.resume_handle or None)
            record.authorization = (ws.request.headers.get("Authorization") or "").partition(" ")[0]
            self.connections.append(record)
        session: Session | None = None
        lifetime: asyncio.Task[None] | None = None
        chaos: asyncio.Task[None] | None = None
        try:
            if self.options.setup_delay_s > 0:
                await asyncio.sleep(self.options.setup_delay_s)
            await send(p.setup_complete())
            clog.info("local_live.session_started", resumed=bool(cfg.resume_handle), history=len(history))

            def on_turn_boundary(turns: list[HistoryTurn]) -> str:
                return self.store.issue(session_id, turns)

            session = Session(
                cfg, send, pool=self.pool, executor=executor, options=self.options,
                history=history, on_turn_boundary=on_turn_boundary, log=clog,
            )  # fmt: skip
            if cfg.resumption:
                consumed = 0 if cfg.transparent else None  # the setup: all this connection has had
                await send(p.resumption_update(self.store.issue(session_id, history), consumed))
            if self.options.goaway_after_s is not None:
                lifetime = asyncio.create_task(self._lifetime(ws, clog))
            if self.options.drop_rate_per_s > 0:
                chaos = asyncio.create_task(self._drop_at_random(ws, clog, record))
            async for raw in ws:
                session.message_index += 1  # the setup was message 0
                for event in p.parse_client_message(raw, cfg.model):
                    if isinstance(event, p.AudioIn):
                        self.audio_bytes_received += len(event.pcm)
                        if record is not None:
                            record.audio += event.pcm
                            record.audio_at[session.message_index] = len(record.audio)
                    elif record is not None and isinstance(event, ACTIVITY_SIGNALS):
                        record.activity.append(ACTIVITY_SIGNALS_NAMES[type(event)])
                    await session.handle(event)
        except p.ProtocolError as exc:
            clog.info("local_live.closed_invalid", code=exc.code, reason=exc.reason)
            await ws.close(exc.code, exc.reason)
        except ConnectionClosed:
            pass
        except Exception:
            clog.exception("local_live.session_failed")
            await ws.close(p.CLOSE_INTERNAL, "Internal error encountered.")
        finally:
            for task in (lifetime, chaos):
                if task is not None:
                    task.cancel()
            if session is not None:
                await session.close()
            self.store.disconnected(session_id)
            clog.info("local_live.session_ended", code=ws.close_code)

    async def _setup(
        self, ws: ServerConnection, version: str, clog: Any
    ) -> tuple[p.SessionConfig, str, list[HistoryTurn]]:
        try:
            raw = await asyncio.wait_for(ws.recv(), self.options.setup_timeout_s)
        except TimeoutError:
            await ws.close(p.CLOSE_INVALID, "No setup message received.")
            raise
        message = p.decode_json(raw)
        ((key, body),) = message.items()
        if p.camel(key) != "setup":
            raise p.ProtocolError(
                p.CLOSE_INVALID, f"Invalid request: the first message must be setup, got {key}."
            )
        cfg = p.parse_setup(body, version)
        if not cfg.resume_handle:
            return cfg, uuid.uuid4().hex, []
        snapshot = self.store.resolve(cfg.resume_handle)
        if snapshot is None:
            raise p.ProtocolError(p.CLOSE_POLICY, "Session resumption handle not found or expired.")
        # The service refuses a resume while the old connection is open; give a closing one a moment.
        if not await self.store.wait_closed(snapshot.session_id, self.options.resume_grace_s):
            raise p.ProtocolError(p.CLOSE_INTERNAL, "The session is still open on another connection.")
        return cfg, snapshot.session_id, copy.deepcopy(snapshot.history)

    async def _drop_at_random(self, ws: ServerConnection, clog: Any, record: ConnectionRecord | None) -> None:
        """Cut the connection with no close frame (as a network fault or a crashed server would)."""
        await asyncio.sleep(random.expovariate(self.options.drop_rate_per_s))
        clog.info("local_live.dropping_connection")
        if record is not None:
            record.dropped = True
        ws.transport.abort()

    async def _lifetime(self, ws: ServerConnection, clog: Any) -> None:
        assert self.options.goaway_after_s is not None
        await asyncio.sleep(self.options.goaway_after_s)
        await self._go_away(ws, clog, self.options.goaway_time_left_s)

    def go_away(self, time_left_s: float) -> None:
        """Send goAway on every open connection now, and close each `time_left_s` later: the end of a
        connection's life when a test decides it (`goaway_after_s` is the same on a timer)."""
        assert self._server is not None
        for ws in list(self._server.connections):
            task = asyncio.create_task(self._go_away(ws, log, time_left_s))
            self._go_aways.add(task)
            task.add_done_callback(self._go_aways.discard)

    async def _go_away(self, ws: ServerConnection, clog: Any, left: float) -> None:
        clog.info("local_live.go_away", time_left_s=left)
        with contextlib.suppress(ConnectionClosed):
            await ws.send(p.encode(p.go_away(left)))
        await asyncio.sleep(left)
        await ws.close(p.CLOSE_INTERNAL, "Deadline expired before operation could complete.")


def run_local_live(
    host: str = "127.0.0.1", port: int = 8765, options: LocalLiveOptions | None = None
) -> None:
    """Serve until SIGINT/SIGTERM (``gateway live-local``)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        async with LocalLiveServer(host, port, options) as server:
            log.info(
                "local_live.serving",
                url=server.url(),
                v1beta=server.url("v1beta"),
                vertex=server.vertex_url(),
            )
            await stop.wait()

    asyncio.run(main())
