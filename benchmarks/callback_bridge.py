"""A floor to measure against: the naive bridge's own work per frame, done in asyncio Protocol callbacks.

`naive_bridge.py` does per frame what any bridge must (json, base64, audioop's mu-law, soxr, a WebSocket each
way) through the layers a first bridge is built on: ASGI (uvicorn and Starlette) for the carrier's socket, the
`websockets` asyncio client for Live's, and a task for each direction. This does the same work, message for
message, with no such layer: websockets' Sans-I/O cores on both sockets, driven from the transports'
`data_received`, so a caller frame is parsed, converted and written to Live before the callback returns (no
queue, no future, no task switch). It has no more features than the naive bridge and is not a gateway; it is
how cheap the naive bridge's work can be in Python on asyncio, against which the layers' cost (the naive
bridge's, the gateway's) can be read. `bench_load.py --versus-naive ... --callback-side` runs it as a third
side.

The webhook is served by uvicorn on --port and the media socket by a plain asyncio server on --port + 1 (its
`<Stream>` URL says so), so nothing of ASGI is on the media path.

Run: GEMINI_LIVE_URL=ws://... python benchmarks/callback_bridge.py --port 8090
"""

import argparse
import asyncio
import base64
import json
import os
import socket
import warnings
from typing import Any

import numpy as np
import soxr
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.http11 import Request as WSRequest
from websockets.http11 import Response as WSResponse
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

LIVE_URL = os.environ["GEMINI_LIVE_URL"]
GREETING = "The caller has just been connected. Greet them briefly and ask how you can help."
QUALITY = "QQ"  # as naive_bridge.py
MODEL = "models/gemini-2.5-flash-native-audio-preview-09-2025"
MEDIA_PORT = 0  # --port + 1, set at start


async def voice(request: Request) -> Response:
    host = request.headers["host"].split(":")[0]
    twiml = f'<Response><Connect><Stream url="ws://{host}:{MEDIA_PORT}/twilio/media"/></Connect></Response>'
    return Response(twiml, media_type="application/xml")


def turn(text: str) -> str:
    content = {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}
    return json.dumps({"clientContent": content})


class LiveSide(asyncio.Protocol):
    """One call's Live connection: the setup, the greeting, then each server message to the caller."""

    def __init__(self, call: "CallerSide") -> None:
        self.call = call
        self.ws = ClientProtocol(parse_uri(LIVE_URL), max_size=2**24)
        self.ready = False
        self.downsample = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=QUALITY)
        self.interrupted = False

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.ws.send_request(self.ws.connect())
        self.flush()

    def flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.t.write(data)

    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, WSResponse):
                self.send_text(json.dumps({"setup": {"model": MODEL}}))
                continue
            if event.opcode not in (Opcode.TEXT, Opcode.BINARY):
                continue
            msg = json.loads(event.data)
            if not self.ready:
                if "setupComplete" in msg:
                    self.ready = True
                    self.send_text(turn(GREETING))
                    for text in self.call.held:
                        self.send_text(text)
                    self.call.held.clear()
                continue
            content = msg.get("serverContent", {})
            call = self.call
            for part in content.get("modelTurn", {}).get("parts", []):
                pcm = np.frombuffer(base64.b64decode(part["inlineData"]["data"]), np.int16)
                call.send_audio(self.downsample.resample_chunk(pcm))
            if content.get("interrupted"):
                call.send_text(json.dumps({"event": "clear", "streamSid": call.sid}))
                self.downsample = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=QUALITY)
                self.interrupted = True
            elif content.get("turnComplete"):
                if not self.interrupted:
                    call.send_audio(self.downsample.resample_chunk(np.zeros(0, np.int16), last=True))
                    mark = {"event": "mark", "streamSid": call.sid, "mark": {"name": "turn"}}
                    call.send_text(json.dumps(mark))
                self.downsample = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=QUALITY)
                self.interrupted = False
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.call.close()


class CallerSide(asyncio.Protocol):
    """One Media Streams socket: the caller's messages to Live as they come (held until Live is set up)."""

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self.ws = ServerProtocol(max_size=2**16)
        self.live: LiveSide | None = None
        self.sid = ""
        self.held: list[str] = []  # messages for Live before its setup is complete
        self.upsample = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality=QUALITY)

    def flush(self) -> None:
        for data in self.ws.data_to_send():
            if data:
                self.t.write(data)
            else:
                self.t.close()

    def send_text(self, text: str) -> None:
        self.ws.send_text(text.encode())
        self.flush()

    def send_audio(self, pcm: np.ndarray) -> None:
        if len(pcm):
            payload = base64.b64encode(audioop.lin2ulaw(pcm.tobytes(), 2)).decode()
            self.send_text(
                json.dumps({"event": "media", "streamSid": self.sid, "media": {"payload": payload}})
            )

    def data_received(self, data: bytes) -> None:
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            if isinstance(event, WSRequest):
                self.ws.send_response(self.ws.accept(event))
                asyncio.get_running_loop().create_task(self.connect_live())
                continue
            if event.opcode != Opcode.TEXT:
                continue
            message = json.loads(event.data)
            kind = message["event"]
            live = self.live
            if kind == "media":
                ulaw = base64.b64decode(message["media"]["payload"])
                pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), np.int16)
                data = base64.b64encode(self.upsample.resample_chunk(pcm).tobytes()).decode()
                audio = {"data": data, "mimeType": "audio/pcm;rate=16000"}
                text = json.dumps({"realtimeInput": {"audio": audio}}, separators=(",", ":"))
                if live is None or not live.ready:
                    self.held.append(text)
                else:
                    live.send_text(text)
            elif kind == "start":
                self.sid = message["start"]["streamSid"]
            elif kind == "dtmf":
                text = turn(f"[The caller pressed the {message['dtmf']['digit']} key.]")
                if live is None or not live.ready:
                    self.held.append(text)
                else:
                    live.send_text(text)
            elif kind == "stop":
                self.close()
        self.flush()

    async def connect_live(self) -> None:
        uri = parse_uri(LIVE_URL)
        loop = asyncio.get_running_loop()
        _, self.live = await loop.create_connection(lambda: LiveSide(self), uri.host, uri.port)

    def close(self) -> None:
        if self.live is not None:
            self.live.t.close()
            self.live = None
        self.t.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.live is not None:
            self.live.t.close()


app = Starlette(
    routes=[Route("/twilio/voice", voice, methods=["POST"]), Route("/healthz", lambda _: Response("ok"))]
)


async def main(port: int) -> None:
    global MEDIA_PORT
    MEDIA_PORT = port + 1
    loop = asyncio.get_running_loop()
    server = await loop.create_server(CallerSide, "127.0.0.1", MEDIA_PORT)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    await uvicorn.Server(config).serve()
    server.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8090)
    import uvloop  # uvicorn's own choice of loop, as the naive bridge and the gateway run on

    uvloop.install()
    asyncio.run(main(parser.parse_args().port))
