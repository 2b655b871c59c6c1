"""Slow HTTP clients (issue 12, scenario 8): slowloris on the webhook.

Before: 300 connections trickling headers were held for as long as they trickled (none timed out), near the
file-descriptor limit a real webhook failed (connection reset), a slow client that left in the middle of
its body logged a 40-line plain-text traceback, and a shutdown waited 5 s for requests still arriving.
The gateway runs as a real process where the descriptor limit matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from twilio.request_validator import RequestValidator

from gateway.app import create_app
from gateway.devtools.simulator import CallScript, place_call
from gateway.http_guard import HttpGuard
from gateway.server import http_limits, serving, uvicorn_config
from tests.support.audio import caller_tone
from tests.support.gateway import UNUSED_LIVE_URL, json_lines, logged, settings_for
from tests.support.live_peer import LivePeer
from tests.support.processes import clean_env, free_port, start_gateway, wait_until_serving

TOKEN = "slowloris-test-auth-token"
FD_LIMIT = 256  # the gateway process's descriptor limit: 300 slow clients would take every one
HEADER_TIMEOUT_S = 5.0  # the default HTTP_HEADER_TIMEOUT_S
SLOW_CLIENTS = 300


@dataclass
class SlowClient:
    """A client that sends its request a line (or a byte) at a time and never finishes it."""

    connected_at: float = 0.0
    closed_at: float | None = None  # when the gateway closed the connection
    answer: bytes = b""

    async def run(self, port: int, head: bytes, drip: bytes, every_s: float = 0.5) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        self.connected_at = time.monotonic()

        async def read_until_closed() -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await reader.read(65536):
                    self.answer += chunk

        try:
            writer.write(head)
            reading = asyncio.ensure_future(read_until_closed())
            while not reading.done():
                await asyncio.wait([reading], timeout=every_s)
                if not reading.done():
                    writer.write(drip)
        except ConnectionError:
            pass
        finally:
            self.closed_at = time.monotonic()
            writer.close()


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def start_server(env: dict[str, str], cwd: Path, log_path: Path) -> subprocess.Popen[bytes]:
    """`gateway serve` with FD_LIMIT file descriptors."""
    return start_gateway(env, cwd, log_path, preexec_fn=_limit_descriptors)


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def signed_webhook(url: str, sid: str) -> tuple[httpx.Response, float]:
    """A webhook as Twilio sends it, on a connection of its own; and how long its answer took."""
    params = {"CallSid": sid, "From": "+15550001111", "To": "+15550002222"}
    signature = RequestValidator(TOKEN).compute_signature(url + "/twilio/voice", params)
    started = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            url + "/twilio/voice", data=params, headers={"X-Twilio-Signature": signature}
        )
    return response, time.monotonic() - started


async def test_slow_header_clients_near_the_fd_limit_leave_room_for_a_signed_webhook(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(
        PORT=str(port), PUBLIC_URL=url, TWILIO_AUTH_TOKEN=TOKEN, GEMINI_LIVE_URL=UNUSED_LIVE_URL,
        LIVE_PREWARM_S="0", DRAIN_GRACE_SECONDS="0", DATABASE_URL=f"sqlite:///{tmp_path / 'calls.sqlite3'}",
    )  # fmt: skip
    log_path = tmp_path / "serve.log"
    proc = start_server(env, tmp_path, log_path)
    try:
        async with httpx.AsyncClient() as client:
            await wait_until_serving(client, url, proc, log_path, 30)
        await asyncio.sleep(0.2)
        idle_fds = open_descriptors(proc.pid)

        # 300 clients trickle the headers of a webhook, a header line every half second.
        head = b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\n"
        clients = [SlowClient() for _ in range(SLOW_CLIENTS)]
        tasks = [asyncio.create_task(c.run(port, head, b"X-Slow: y\r\n")) for c in clients]
        most_fds = 0

        async def sample_fds() -> None:
            nonlocal most_fds
            while True:
                most_fds = max(most_fds, open_descriptors(proc.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.create_task(sample_fds())
        await asyncio.sleep(1.5)
        response, took = await signed_webhook(url, "CAslowloris")
        async with asyncio.timeout(HEADER_TIMEOUT_S + 5):
            await asyncio.gather(*tasks)
        sampler.cancel()

        # A shutdown with requests still arriving does not wait for them (it waited 5 s, then tracebacks).
        bodies = [SlowClient() for _ in range(5)]
        body_head = head + b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
        body_tasks = [asyncio.create_task(c.run(port, body_head, b"a")) for c in bodies]
        await asyncio.sleep(1.0)
        proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        returncode = await asyncio.to_thread(proc.wait, 20)
        exit_s = time.monotonic() - signalled
        await asyncio.gather(*body_tasks)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    # The real webhook was answered at once, with its TwiML.
    assert response.status_code == 200 and "<Connect>" in response.text, response.text
    assert took < 1.0, took
    # Every slow client was closed within the header deadline (plus scheduling slack), most at once.
    held_s = [c.closed_at - c.connected_at for c in clients if c.closed_at is not None]
    assert len(held_s) == SLOW_CLIENTS and max(held_s) < HEADER_TIMEOUT_S + 1.0, max(held_s)
    assert all(c.answer.startswith(b"HTTP/1.1 408 ") for c in clients)
    # They never held more than the budget: a quarter of the descriptors.
    assert most_fds <= idle_fds + FD_LIMIT // 4 + 2, (idle_fds, most_fds)
    assert returncode == 0 and exit_s < 2.5, exit_s

    text = log_path.read_text()
    lines = json_lines(text)
    assert len(lines) == len(text.splitlines()), "a line that is not JSON: " + text[-2000:]
    refused = [line for line in lines if line["event"] == "http_refused"]
    suppressed = sum(line["total"] for line in lines if line["event"] == "http_refusals_suppressed")
    # One line per refusal (past 50 a second, counted in one line a second): all 300 accounted for.
    assert len(refused) + suppressed == SLOW_CLIENTS, (len(refused), suppressed)
    assert {line["reason"] for line in refused} <= {"header_timeout", "budget_evicted"}
    assert all(line["level"] == "warning" and line["peer"] == "127.0.0.1" for line in refused)


async def test_slow_bodies_time_out_and_clients_that_leave_log_one_line_each(capsys):
    capsys.readouterr()
    settings = settings_for("ws://127.0.0.1:9/live", HTTP_BODY_TIMEOUT_S="2", LIVE_PREWARM_S="0")
    app = create_app(settings)
    async with serving(uvicorn_config(app, "127.0.0.1", 0, http_limits=http_limits(settings))) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (
            b"POST /twilio/voice HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 1000\r\n\r\nCallSid=CA1&"
        )
        trickling = [SlowClient() for _ in range(10)]
        tasks = [asyncio.create_task(c.run(port, head, b"a", every_s=0.2)) for c in trickling]

        async def leave_mid_body() -> None:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(head)
            await asyncio.sleep(0.5)
            writer.close()

        await asyncio.gather(*(leave_mid_body() for _ in range(10)))
        too_big = await asyncio.gather(
            _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Big: " + b"b" * 34_000 + b"\r\n\r\n"),
            _raw(port, head.replace(b"1000", b"2000000") + b"a" * 1_200_000),
        )  # fmt: skip
        async with asyncio.timeout(6):
            await asyncio.gather(*tasks)
        await asyncio.sleep(0.2)

    held_s = [c.closed_at - c.connected_at for c in trickling if c.closed_at is not None]
    assert len(held_s) == 10 and 1.9 < min(held_s) and max(held_s) < 3.0, held_s
    assert all(c.answer.startswith(b"HTTP/1.1 408 ") for c in trickling)
    assert too_big[0].startswith(b"HTTP/1.1 431 ") and too_big[1].startswith(b"HTTP/1.1 413 "), too_big
    err = capsys.readouterr().err
    assert "Traceback" not in err and all(line.startswith("{") for line in err.splitlines()), err[-3000:]
    lines = json_lines(err)
    timeouts = [x for x in lines if x["event"] == "http_refused" and x["reason"] == "body_timeout"]
    assert len(timeouts) == 10 and all(x["path"] == "/twilio/voice" for x in timeouts)
    assert len([x for x in lines if x["event"] == "http_request_abandoned"]) == 10
    assert {x["reason"] for x in lines if x["event"] == "http_refused"} == {
        "body_timeout", "headers_too_large", "body_too_large",
    }  # fmt: skip


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        with contextlib.suppress(ConnectionError):
            return await reader.read()
        return b""
    finally:
        writer.close()


async def test_a_call_longer_than_every_http_deadline_is_untouched_by_them(capsys):
    """The deadlines and the budget are the HTTP protocol's: a media WebSocket leaves the guard at the
    upgrade, so a call outlives them and none of the guard's code runs per frame."""
    async with LivePeer() as peer:
        settings = settings_for(
            peer.url, AGENT_GREETING="none", HTTP_HEADER_TIMEOUT_S="1", HTTP_BODY_TIMEOUT_S="1"
        )
        config = uvicorn_config(create_app(settings), "127.0.0.1", 0, http_limits=http_limits(settings))
        guard: HttpGuard = config.http.guard  # type: ignore[union-attr]
        async with serving(config) as url:
            call = asyncio.create_task(
                place_call(url, CallScript(audio=caller_tone(1.0), trailing_silence_s=2.5))
            )
            during: list[set[str]] = []
            while not call.done():
                during.append({conn.phase for conn in guard.open if conn.phase != "headers"})
                await asyncio.sleep(0.1)
            result = call.result()
    assert result.closed_by == "caller" and result.duration_s > 3.0
    session = await peer.session()
    assert result.media_frames_sent > 150 and session.audio_bytes == result.media_frames_sent * 640
    # While the call ran, the guard held at most the webhook's idle keep-alive connection, never the stream.
    assert during and all(phases <= {"idle", "busy"} for phases in during), during
    assert not [x for x in logged(capsys) if x["event"] == "http_refused"]
