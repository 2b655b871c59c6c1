"""Live faults (issue 12, scenarios 1 and 7): a Live peer that stops reading, and one that never answers.

Real sockets: the caller simulator -> the gateway -> a TCP relay -> the local Live backend. The relay can
freeze one connection the way a stuck path to the service does: it stops reading from the gateway and says
nothing more to it, and its receive buffer is large, so the gateway's sends are taken in for a long time
before one would block (the keepalive alone took 38 to 87 s to notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit

from gateway.app import create_app
from gateway.devtools.simulator import RATE, CallScript, place_call
from gateway.local_live import LocalLiveServer
from gateway.local_live.tts import MALE_VARIANT, synthesize
from gateway.server import running_gateway
from tests.support.gateway import logged, settings_for
from tests.support.waiting import wait_for

STALL_S = 3.0  # LIVE_STALL_S for these calls: short, so the test is too
SETUP_S = 2.0  # LIVE_SETUP_TIMEOUT_S


class Relay:
    """A TCP relay on loopback to `upstream`; `freeze_first_after_s` freezes the first connection."""

    def __init__(self, upstream_port: int, freeze_first_after_s: float | None = None) -> None:
        self.upstream_port = upstream_port
        self.freeze_first_after_s = freeze_first_after_s
        self.connections = 0
        self.frozen = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Relay:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def url(self, upstream_url: str) -> str:
        """`upstream_url` (a ws:// URL with its path) through the relay."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return upstream_url.replace(f":{self.upstream_port}/", f":{port}/", 1)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        freeze = self.freeze_first_after_s if self.connections == 1 else None
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)  # "larger buffers"
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        try:
            if freeze is None:
                await asyncio.gather(*pumps, return_exceptions=True)
            else:
                await asyncio.sleep(freeze)
                for pump in pumps:  # stuck: reads nothing more from the gateway, says nothing more to it
                    pump.cancel()
                up_writer.close()  # a stuck path (a balancer, a NAT) the service behind it has left
                self.frozen.set()
                await asyncio.Event().wait()
        except asyncio.CancelledError:
            pass  # the relay is closing: asyncio would log a cancelled connection callback as an error
        finally:
            for pump in pumps:
                pump.cancel()
            for w in (writer, up_writer):
                with contextlib.suppress(Exception):
                    w.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def utterance(text: str) -> bytes:
    return synthesize(text, rate=RATE, variant=MALE_VARIANT, wpm=150)


async def test_a_live_peer_that_stops_reading_is_left_within_the_stall_time_and_the_call_goes_on(capsys):
    speech = await asyncio.to_thread(utterance, "what time is it")
    async with LocalLiveServer() as live:
        port = urlsplit(live.url()).port
        assert port is not None
        async with Relay(port, freeze_first_after_s=3.0) as relay:
            settings = settings_for(
                relay.url(live.url()), LIVE_STALL_S=str(STALL_S), AGENT_GREETING="Say hello."
            )
            said: list[tuple[str, float]] = []  # (role, when) of each transcript line the gateway logged

            def answered_a_second_ago() -> bool:  # the answer was logged (at its turn's end) a second ago
                roles = [role for role, _ in said]
                after = roles.index("caller") if "caller" in roles else len(roles)
                return any(r == "agent" and t < loop.time() - 1.0 for r, t in said[after:])

            loop = asyncio.get_running_loop()
            note = lambda _sid, role, _text: said.append((role, loop.time()))  # noqa: E731
            app = create_app(settings, on_transcript=note)
            async with running_gateway(settings, app=app) as url:
                # The greeting plays, the connection freezes at 3 s, the caller speaks at 4 s, and hangs up
                # a second after the agent's answer is logged (at the latest 11 s after speaking).
                script = CallScript(
                    audio=speech, leading_silence_s=4.0, trailing_silence_s=11.0,
                    hang_up_when=answered_a_second_ago,
                )  # fmt: skip
                result = await place_call(url, script)
                await wait_for(lambda: not app.state.gateway.calls, timeout=5.0)  # no zombie call left
    lines = logged(capsys)
    stalled = [x for x in lines if x["event"] == "live_stalled"]
    switched = [x for x in lines if x["event"] == "live_switched"]
    ended = [x for x in lines if x["event"] == "call_ended"]
    answered = [t for t in result.turns if t.speech_start >= 3.5]
    assert relay.frozen.is_set() and relay.connections >= 2
    assert len(stalled) == 1 and [s["reason"] for s in switched] == ["stalled"] and switched[0]["resumed"]
    # What the caller lives through: the wait for an answer after they stopped speaking. Before, nothing came
    # back until the keepalive gave up (38 to 87 s); now the stall time, a switch and Live's own latency.
    assert answered and answered[0].response_latency is not None
    assert answered[0].response_latency < STALL_S + 3.0, answered[0]
    latency, duration = answered[0].response_latency, result.duration_s
    print(f"\nstalled Live: answered {latency:.2f} s after the caller stopped; call of {duration:.1f} s")
    assert ended[-1]["outcome"] == "caller_hung_up"


async def tarpit() -> asyncio.Server:
    """A TCP server that accepts connections and never answers: not even the WebSocket handshake."""
    held: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    return await asyncio.start_server(accept, "127.0.0.1", 0)


async def test_a_live_endpoint_that_never_answers_gives_the_apology_within_the_setup_time(capsys):
    server = await tarpit()
    port = server.sockets[0].getsockname()[1]
    try:
        settings = settings_for(
            f"ws://127.0.0.1:{port}/ws", LIVE_SETUP_TIMEOUT_S=str(SETUP_S), LIVE_PREWARM_S="10"
        )
        async with running_gateway(settings) as url:
            script = CallScript(
                audio=bytes(1600), trailing_silence_s=15.0, hang_up=False, max_duration_s=15.0
            )
            result = await place_call(url, script)
    finally:
        server.close()
    lines = logged(capsys)
    ended = [x for x in lines if x["event"] == "call_ended"]
    heard = [e.t for e in result.events if e.kind == "media"]
    # Pre-warm and the call share one budget from the stream's start: the apology starts within it (it was
    # two 15 s timeouts back to back, and could not be set), and then the gateway hangs up.
    assert heard and heard[0] < SETUP_S + 1.0, heard[:1]
    assert result.closed_by == "gateway" and ended[-1]["outcome"] == "live_unavailable"
    print(f"\nunanswering Live: the apology began {heard[0]:.2f} s after the stream started")
