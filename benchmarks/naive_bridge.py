"""The reference a gateway's cost is measured against: a naive Twilio <-> Live bridge with no features.

The same webhook and media contract as the gateway (POST /twilio/voice answers <Connect><Stream>, WS
/twilio/media speaks Media Streams), written the way a first bridge is: Starlette and uvicorn with their
defaults, json, base64, audioop for mu-law, soxr streaming resamplers, a `websockets` client to Live, `clear`
on `interrupted`. Nothing else: no signatures, tokens, limits, drain, metrics, records, tools or turn-taking.
Two things the load harness needs to tell calls and turns apart, and which cost nothing per audio frame: keys
are passed on as text (the harness names its calls by DTMF) and a `mark` follows each completed turn.

Run: GEMINI_LIVE_URL=ws://... python benchmarks/naive_bridge.py --port 8090
"""

import argparse
import asyncio
import base64
import json
import os
import warnings

import numpy as np
import soxr
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

LIVE_URL = os.environ["GEMINI_LIVE_URL"]
GREETING = "The caller has just been connected. Greet them briefly and ask how you can help."
# soxr's low-delay quality: HQ holds back 66 ms of 8k -> 16k audio, so a 20 ms frame would come out empty.
QUALITY = "QQ"


async def voice(request: Request) -> Response:
    host = request.headers["host"]
    twiml = f'<Response><Connect><Stream url="ws://{host}/twilio/media"/></Connect></Response>'
    return Response(twiml, media_type="application/xml")


def turn(text: str) -> str:
    content = {"turns": [{"role": "user", "parts": [{"text": text}]}], "turnComplete": True}
    return json.dumps({"clientContent": content})


async def media(ws: WebSocket) -> None:
    await ws.accept()
    upsample = soxr.ResampleStream(8000, 16000, 1, dtype="int16", quality=QUALITY)
    live = await websockets.connect(LIVE_URL, max_size=2**24)
    await live.send(json.dumps({"setup": {"model": "models/gemini-2.5-flash-native-audio-preview-09-2025"}}))
    await live.recv()
    await live.send(turn(GREETING))
    sid = ""

    async def to_caller() -> None:
        downsample = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=QUALITY)
        interrupted = False
        async for raw in live:
            content = json.loads(raw).get("serverContent", {})
            for part in content.get("modelTurn", {}).get("parts", []):
                pcm = np.frombuffer(base64.b64decode(part["inlineData"]["data"]), np.int16)
                await send_audio(downsample.resample_chunk(pcm))
            if content.get("interrupted"):
                await ws.send_text(json.dumps({"event": "clear", "streamSid": sid}))
                downsample = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=QUALITY)
                interrupted = True
            elif content.get("turnComplete"):
                if not interrupted:  # the interrupted turn's end was its `clear`
                    await send_audio(downsample.resample_chunk(np.zeros(0, np.int16), last=True))
                    mark = {"event": "mark", "streamSid": sid, "mark": {"name": "turn"}}
                    await ws.send_text(json.dumps(mark))
                downsample = soxr.ResampleStream(24000, 8000, 1, dtype="int16", quality=QUALITY)
                interrupted = False

    async def send_audio(pcm: np.ndarray) -> None:
        if len(pcm):
            payload = base64.b64encode(audioop.lin2ulaw(pcm.tobytes(), 2)).decode()
            message = {"event": "media", "streamSid": sid, "media": {"payload": payload}}
            await ws.send_text(json.dumps(message))

    agent = asyncio.create_task(to_caller())
    try:
        while True:
            message = json.loads(await ws.receive_text())
            if message["event"] == "start":
                sid = message["start"]["streamSid"]
            elif message["event"] == "media":
                ulaw = base64.b64decode(message["media"]["payload"])
                pcm = np.frombuffer(audioop.ulaw2lin(ulaw, 2), np.int16)
                data = base64.b64encode(upsample.resample_chunk(pcm).tobytes()).decode()
                audio = {"data": data, "mimeType": "audio/pcm;rate=16000"}
                await live.send(json.dumps({"realtimeInput": {"audio": audio}}, separators=(",", ":")))
            elif message["event"] == "dtmf":
                await live.send(turn(f"[The caller pressed the {message['dtmf']['digit']} key.]"))
            elif message["event"] == "stop":
                break
    except Exception:  # the caller hung up
        pass
    finally:
        agent.cancel()
        await live.close()


routes = [Route("/twilio/voice", voice, methods=["POST"]), WebSocketRoute("/twilio/media", media)]
app = Starlette(routes=[*routes, Route("/healthz", lambda _: Response("ok"))])  # the harness waits for it

if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8090)
    uvicorn.run(app, host="127.0.0.1", port=parser.parse_args().port, log_level="warning")
