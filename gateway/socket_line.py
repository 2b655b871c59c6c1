"""What every carrier's WebSocket line does alike: bounded sends, skipped bad messages, closing.

A carrier's line (`gateway.twilio.line`, `gateway.telnyx.line`, ...) reads its own protocol; the plumbing
around the socket is the same for all of them and lives here, so a stalled peer, a flood of junk and a
refused stream are handled one way whatever the carrier.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable

import structlog
from starlette.websockets import WebSocket, WebSocketState
from websockets.frames import CloseCode

from gateway.call.line import LineClosed, Played
from gateway.call.line_marks import GRACE_S, PendingMarks
from gateway.deadline import Deadline
from gateway.media_socket import EXTENSION, MediaSocket

# A send waits only while the socket's write buffer is full. Carriers read continuously (they buffer minutes
# of playout), so a peer that has not read for this long is stalled or hostile: the call ends rather than
# hold a Live session open behind it.
SEND_STALL_S = 10.0
HANG_UP_S = 3.0  # a hang-up through the carrier's API, before the socket is closed anyway


class SocketLine:
    """The socket half of a carrier's line. `carrier` names the log lines (`<carrier>_message_skipped`,
    `<carrier>_peer_not_reading`)."""

    carrier = "carrier"

    def __init__(self, ws: WebSocket) -> None:
        self._ws = ws
        # Served by `gateway.media_socket` (`gateway serve`): messages are read and written without ASGI's
        # layers. None under another server (a test client): plain ASGI.
        self._media: MediaSocket | None = ws.scope.get("extensions", {}).get(EXTENSION)
        self.bad_messages = 0
        self._send_deadline = Deadline()  # bounds every send (a peer that stopped reading), one timer for all
        self._log = structlog.get_logger(f"gateway.{self.carrier}")

    async def _next_message(self) -> str | bytes | None:
        """The peer's next message, text or binary; None once the socket has closed."""
        media = self._media
        if media is not None:
            media.take()
            return await media.receive_message()
        message = await self._ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        return text if text is not None else (message.get("bytes") or b"")

    def _skipped(self, error: str) -> None:
        self.bad_messages += 1
        # Every 100th after the first ten: a flood of junk must not become a flood of log lines.
        if self.bad_messages <= 10 or self.bad_messages % 100 == 0:
            self._log.warning(f"{self.carrier}_message_skipped", error=error, count=self.bad_messages)

    async def _send(self, message: str | bytes) -> None:
        """Send a text message, or a binary frame (a carrier that streams raw audio), bounded in time."""
        media = self._media
        if media is not None:
            try:
                if media.send_now(message):
                    return  # the common case: written at once, nothing to wait for
            except Exception as exc:
                raise LineClosed(str(exc) or exc.__class__.__name__) from None
            send = self._send_when_writable(media, message)
        elif isinstance(message, bytes):
            send = self._ws.send_bytes(message)
        else:
            send = self._ws.send_text(message)
        try:
            await self._send_deadline.wait(send, SEND_STALL_S)
        except TimeoutError:
            self._log.warning(f"{self.carrier}_peer_not_reading", stalled_s=SEND_STALL_S)
            raise LineClosed("the peer stopped reading") from None
        except Exception as exc:  # uvicorn raises several kinds once the peer is gone
            raise LineClosed(str(exc) or exc.__class__.__name__) from None

    @staticmethod
    async def _send_when_writable(media: MediaSocket, message: str | bytes) -> None:
        while not media.send_now(message):
            await media.writable.wait()

    async def _hang_up(self, hang_up: Callable[[], Awaitable[object]]) -> None:
        """Our side ends the call: hang it up through the carrier's API first (bounded). Closing the socket
        ends the call too, but as a dropped stream, which a carrier may report as a failure."""
        try:
            async with asyncio.timeout(HANG_UP_S):
                await hang_up()
        except Exception as exc:  # closing the socket still ends the call
            self._log.warning(f"{self.carrier}_hang_up_failed", error=str(exc) or type(exc).__name__)

    async def close(self, refusal: str | None = None) -> None:
        """Close our side; the carrier then ends the call (or runs what its markup says next). A refused
        stream is closed with POLICY_VIOLATION and the reason."""
        code = CloseCode.POLICY_VIOLATION if refusal else CloseCode.NORMAL_CLOSURE
        if self._ws.application_state == WebSocketState.CONNECTED:
            try:
                # A peer that stopped reading cannot take our close frame either: give up on it; the server's
                # keepalive then drops the connection.
                async with asyncio.timeout(SEND_STALL_S):
                    await self._ws.close(code=code, reason=refusal or "")
            except Exception:  # already gone (or stalled): nothing left to close
                pass


class MarkedSocketLine(SocketLine):
    """A carrier line whose marks are kept in `PendingMarks` (Vonage, Plivo): each comes back `Played` once,
    on the carrier's answer, at a clear, or (should the carrier never answer) once overdue. `rate` is the
    line's outbound rate, for the playout clock."""

    rate = 16000

    def __init__(self, ws: WebSocket) -> None:
        super().__init__(ws)
        self._marks = PendingMarks()
        self._released: deque[str] = deque()  # marks released, not yet returned by receive()
        self._mark_deadline = Deadline()
        self._unanswered = 0

    async def _next_or_played(self) -> str | bytes | Played | None:
        """The peer's next message (None once the socket has closed), or a mark come back meanwhile:
        answered by the carrier, released by a clear, or fallen overdue while waiting."""
        loop = asyncio.get_running_loop()
        while not self._released:
            due = self._marks.next_due()
            if due is None:
                return await self._next_message()
            try:
                return await self._mark_deadline.wait(self._next_message(), max(0.0, due - loop.time()))
            except TimeoutError:
                overdue = self._marks.overdue(loop.time())
                self._unanswered += len(overdue)
                if self._unanswered == len(overdue):  # the first time on this call: say so once
                    self._log.warning(f"{self.carrier}_mark_not_answered", marks=overdue, grace_s=GRACE_S)
                self._released.extend(overdue)
        return Played(self._released.popleft())

    def _queued(self, pcm: bytes) -> None:
        self._marks.queued(len(pcm) / 2 / self.rate, asyncio.get_running_loop().time())

    def _mark_sent(self, name: str) -> None:
        self._marks.sent(name, asyncio.get_running_loop().time())

    def _answered(self, name: str) -> None:
        self._released.extend(self._marks.played(name))

    def _cleared(self) -> None:
        # Released now: an answer the carrier may still send for them is ignored, and its acknowledgement of
        # the clear must not release a mark sent after it.
        self._released.extend(self._marks.cleared(asyncio.get_running_loop().time()))

    async def close(self, refusal: str | None = None) -> None:
        self._mark_deadline.close()
        await super().close(refusal)
