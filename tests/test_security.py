"""Both entry points authenticated, per-call stream tokens, limits, secrets kept out of logs, and a gateway
that stays up (with its other calls unharmed) whatever arrives on its sockets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import websockets
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect

from gateway import socket_line
from gateway.app import Gateway
from gateway.devtools.simulator import CallScript, place_call
from gateway.server import running_gateway
from gateway.stream_tokens import StreamTokens, key_from_auth_token
from gateway.twilio.protocol import TwilioSender
from tests.support.audio import agent_tone, caller_tone
from tests.support.gateway import logged, settings_for, stream_token
from tests.support.live_peer import LivePeer, PeerSession

# --- signatures ---------------------------------------------------------------------------------------------


def test_twilios_published_signature_vector_is_accepted_and_a_changed_request_is_not():
    gw = Gateway(settings_for("ws://127.0.0.1:9/x", TWILIO_AUTH_TOKEN="12345"))
    url = "https://example.com/myapp.php?foo=1&bar=2"
    params = {
        "CallSid": "CA1234567890ABCDE",
        "Caller": "+14158675310",
        "Digits": "1234",
        "From": "+14158675310",
        "To": "+18005551212",
    }
    assert gw.signature_ok(url, params, "L/OH5YylLD5NRKLltdqwSvS0BnU=")
    assert not gw.signature_ok(url, {**params, "Digits": "1235"}, "L/OH5YylLD5NRKLltdqwSvS0BnU=")
    assert not gw.signature_ok(url.replace("foo=1", "foo=2"), params, "L/OH5YylLD5NRKLltdqwSvS0BnU=")
    assert not gw.signature_ok(url, params, "")
    assert not gw.signature_ok(url, params, None)


async def test_signed_entry_points_use_the_public_url_and_refuse_everything_else():
    token, public = "auth-token-for-tests", "https://voice.example.com"
    form = {"CallSid": "CA1", "From": "+15550001111", "To": "+15550002222"}
    sign = RequestValidator(token).compute_signature
    async with running_gateway(
        settings_for("ws://127.0.0.1:9/x", TWILIO_AUTH_TOKEN=token, PUBLIC_URL=public)
    ) as url:
        async with httpx.AsyncClient() as client:
            voice = url + "/twilio/voice"
            ok = await client.post(
                voice, data=form, headers={"X-Twilio-Signature": sign(public + "/twilio/voice", form)}
            )
            assert ok.status_code == 200
            # the same request signed for the URL the app sees (a proxy's view) is not what Twilio signs
            local = await client.post(voice, data=form, headers={"X-Twilio-Signature": sign(voice, form)})
            assert local.status_code == 403
            tampered = {**form, "From": "+15559999999"}
            sig = sign(public + "/twilio/voice", form)
            assert (
                await client.post(voice, data=tampered, headers={"X-Twilio-Signature": sig})
            ).status_code == 403
            status_form = {"CallSid": "CA1", "CallStatus": "completed"}
            status_sig = sign(public + "/twilio/status", status_form)
            status = url + "/twilio/status"
            assert (await client.post(status, data=status_form)).status_code == 403
            ok = await client.post(status, data=status_form, headers={"X-Twilio-Signature": status_sig})
            assert ok.status_code == 204
        media = url.replace("http", "ws") + "/twilio/media"
        for signature in (None, sign(media, {}), sign("wss://voice.example.com/twilio/media?x=1", {})):
            headers = {"X-Twilio-Signature": signature} if signature else {}
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with connect(media, additional_headers=headers):
                    pass
            assert refused.value.response.status_code == 403  # refused before the upgrade is accepted
        good = {"X-Twilio-Signature": sign("wss://voice.example.com/twilio/media", {})}
        async with connect(media, additional_headers=good) as ws:
            assert ws.protocol.state.name == "OPEN"
        # A stream URL routed to one of several processes (gateway.dispatch) is checked as Twilio requested
        # it, whichever process it reaches: signed for that URL it is taken, signed for another it is not.
        routed = media + "/process-3"
        for signed_for, status in (("/twilio/media/process-3", 101), ("/twilio/media", 403)):
            headers = {"X-Twilio-Signature": sign("wss://voice.example.com" + signed_for, {})}
            if status == 403:
                with pytest.raises(websockets.InvalidStatus) as refused:
                    async with connect(routed, additional_headers=headers):
                        pass
                assert refused.value.response.status_code == 403
                continue
            async with connect(routed, additional_headers=headers) as ws:
                assert ws.protocol.state.name == "OPEN"


# --- stream tokens ------------------------------------------------------------------------------------------


def test_stream_tokens_are_bound_to_the_call_short_lived_and_single_use():
    now = [1_000_000.0]
    tokens = StreamTokens(key_from_auth_token("tok"), ttl_s=60, clock=lambda: now[0])
    token = tokens.issue("CA1")
    assert tokens.outstanding() == 1
    assert tokens.redeem("CA2", token) == "stream token does not match this call"
    assert tokens.redeem("CA1", token.replace(".", "x", 1)) == "malformed stream token"
    assert tokens.redeem("CA1", None) == "no stream token"
    for forged in ("\u00b2.n.m", "9" * 5000 + ".n.m", "1.2"):  # digits int() refuses, absurd lengths
        assert tokens.redeem("CA1", forged) == "malformed stream token"
    assert tokens.redeem("CA1", token) is None
    assert tokens.outstanding() == 0
    assert tokens.redeem("CA1", token) == "stream token already used"
    # another instance sharing the auth token accepts it; one with another token does not
    other = StreamTokens(key_from_auth_token("tok"), clock=lambda: now[0])
    assert other.redeem("CA1", token) is None
    assert StreamTokens(key_from_auth_token("other"), clock=lambda: now[0]).redeem("CA1", token) is not None
    # a forged expiry breaks the MAC; a real one runs out
    late = tokens.issue("CA3")
    expires, nonce, mac = late.split(".")
    assert (
        tokens.redeem("CA3", f"{int(expires) + 3600}.{nonce}.{mac}")
        == "stream token does not match this call"
    )
    assert tokens.outstanding() == 1
    now[0] += 16  # behind a load balancer its stream may have gone to another instance: stop counting it
    assert tokens.outstanding() == 0
    now[0] += 46
    assert tokens.redeem("CA3", late) == "stream token expired"


async def _open_stream(url: str, call_sid: str, token: str | None, stream_sid: str = "MZ1"):
    ws = await connect(url.replace("http", "ws") + "/twilio/media")
    sender = TwilioSender(stream_sid)
    await ws.send(sender.connected())
    await ws.send(sender.start(call_sid, "AC1", {"token": token} if token else {}))
    return ws, sender


async def _closed(ws, timeout: float = 5.0) -> int | None:
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    return ws.close_code


async def test_a_stream_without_a_valid_unused_token_is_closed_before_any_live_session():
    async with LivePeer() as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            ws, _ = await _open_stream(url, "CAnone", None)
            assert await _closed(ws) == 1008
            assert peer.sessions == []  # a stream nobody answered costs no Live session
            token = await stream_token(url, "CA1")
            await peer.session(0)  # the signed webhook pre-warms CA1's session while the phone rings
            ws, _ = await _open_stream(url, "CAother", token)  # another call's token
            assert await _closed(ws) == 1008
            first, sender = await _open_stream(url, "CA1", token)
            second, _ = await _open_stream(url, "CA1", token, stream_sid="MZ2")  # Twilio's second stream
            assert await _closed(second) == 1008
            await first.send(sender.stop("CA1", "AC1"))
            await _closed(first)
    # One Live session in all: the first stream took the pre-warmed one; the refused streams opened none.
    assert len(peer.sessions) == 1 and peer.sessions[0].closed.is_set()


async def test_over_the_call_limit_the_webhook_answers_busy_and_hangs_up():
    async with LivePeer() as peer:
        settings = settings_for(peer.url, AGENT_GREETING="none", MAX_CONCURRENT_CALLS="1")
        async with running_gateway(settings) as url, httpx.AsyncClient() as client:
            first = await client.post(url + "/twilio/voice", data={"CallSid": "CA1"})
            assert ET.fromstring(first.text)[0].tag == "Connect"
            second = await client.post(url + "/twilio/voice", data={"CallSid": "CA2"})
            root = ET.fromstring(second.text)
            assert [(c.tag, c.get("reason")) for c in root] == [("Reject", "busy")]
    assert len(peer.sessions) == 1  # the answered call's pre-warmed session; the rejected one cost nothing


# --- secrets ------------------------------------------------------------------------------------------------


@pytest.mark.e2e
async def test_no_secret_reaches_a_log_line_or_the_metrics(capsys):
    api_key, auth_token = "AIzaSyTESTKEY0123456789abcdefghijkl", "twilio-auth-token-9f8e7d"

    async def script(session: PeerSession) -> None:
        await session.send_audio(agent_tone(0.3))
        await session.send({"serverContent": {"turnComplete": True}})

    async with LivePeer(script) as peer:
        env = {"GEMINI_API_KEY": api_key, "TWILIO_AUTH_TOKEN": auth_token, "AGENT_GREETING": "none"}
        async with running_gateway(settings_for(peer.url, **env)) as url:
            result = await place_call(
                url,
                CallScript(audio=caller_tone(0.5), trailing_silence_s=1.0),
                auth_token=auth_token,
            )
            # refused attempts carrying secrets, and a stream that presents a stolen token twice
            async with httpx.AsyncClient() as client:
                await client.post(
                    url + "/twilio/voice", data={"CallSid": "CA9"}, headers={"X-Twilio-Signature": "x"}
                )
                metrics = (await client.get(url + "/metrics")).text
    assert peer.sessions[0].headers.get("x-goog-api-key") == api_key  # the key went where it belongs
    stream_url = result.stream_url
    secrets = {
        "api key": api_key,
        "auth token": auth_token,
        "stream token": result.custom_parameters["token"],
        "stream signature": RequestValidator(auth_token).compute_signature(stream_url, {}),
    }
    logs = capsys.readouterr().err
    assert "call_ended" in logs
    for name, value in secrets.items():
        assert value not in logs, f"{name} in the logs"
        assert value not in metrics, f"{name} in the metrics"


def test_the_redacting_processor_masks_secrets_wherever_they_hide():
    from gateway.logs import redact, register_secret

    register_secret("sekrit-auth-token")
    event = redact(
        None,
        "info",
        {
            "event": "x",
            "token": "abc",
            "params": {"token": "t1", "From": "+1555", "nested": [{"signature": "s"}]},
            "error": "GET wss://h/ws?key=AIzaSyAAAAAAAAAAAAAAAAAAAAAAAAAAAA failed with sekrit-auth-token",
        },
    )
    assert event["token"] == "[redacted]"
    assert event["params"] == {
        "token": "[redacted]",
        "From": "+1555",
        "nested": [{"signature": "[redacted]"}],
    }
    assert "AIza" not in event["error"] and "sekrit" not in event["error"]


# --- hostile input ------------------------------------------------------------------------------------------


class NeverReadingPeer:
    """A media-stream client that sends and never reads, with a tiny receive buffer, so whatever the gateway
    sends piles up on the gateway's side. The sans-I/O websockets client builds the bytes; a plain blocking
    socket carries them, and nothing ever calls recv on it after the handshake."""

    def __init__(self, url: str) -> None:
        from websockets.client import ClientProtocol
        from websockets.uri import parse_uri

        parts = urlsplit(url)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.connect((parts.hostname, parts.port))
        self.protocol = ClientProtocol(parse_uri(url.replace("http", "ws") + "/twilio/media"))
        self.protocol.send_request(self.protocol.connect())
        self._flush()
        response = b""
        while b"\r\n\r\n" not in response:  # the 101 answer, and not a byte more is ever read
            response += self.sock.recv(1)
        self.protocol.receive_data(response)
        assert self.protocol.state.name == "OPEN", response

    def _flush(self) -> None:
        for data in self.protocol.data_to_send():
            self.sock.sendall(data)

    def send(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self._flush()

    def close(self) -> None:
        self.sock.close()


@pytest.mark.e2e
async def test_hostile_peers_cost_nothing_and_a_concurrent_call_completes_with_correct_audio(
    monkeypatch, capsys
):
    monkeypatch.setattr(socket_line, "SEND_STALL_S", 1.0)
    stalled_session: list[PeerSession] = []

    async def script(session: PeerSession) -> None:
        if not stalled_session:  # the first session belongs to the peer that never reads: flood it
            stalled_session.append(session)
            second = agent_tone(1.0)
            with contextlib.suppress(websockets.ConnectionClosed):
                while True:  # until the gateway gives up on the call (socket buffers hold megabytes)
                    await session.send_audio(second, chunk_s=1.0)
            return
        await asyncio.sleep(0.3)
        with contextlib.suppress(websockets.ConnectionClosed):  # the junk calls hang up at any moment
            await session.send_audio(agent_tone(1.0))
            await session.send({"serverContent": {"turnComplete": True}})

    frame = base64.b64encode(b"\xff" * 160).decode()
    env = {"AGENT_GREETING": "none", "STREAM_START_TIMEOUT_S": "2", "MEDIA_IDLE_TIMEOUT_S": "60"}
    async with LivePeer(script) as peer:
        async with running_gateway(settings_for(peer.url, **env)) as url:
            media_url = url.replace("http", "ws") + "/twilio/media"

            # 1. A peer that starts a call and never reads: its sends stall, and the call ends.
            token = await stream_token(url, "CAstall")
            stalled = await asyncio.to_thread(NeverReadingPeer, url)
            sender = TwilioSender("MZstall")
            stalled.send(sender.connected())
            stalled.send(sender.start("CAstall", "AC1", {"token": token}))
            await peer.session(0)

            good = asyncio.create_task(
                place_call(url, CallScript(audio=caller_tone(2.0), trailing_silence_s=2.0))
            )

            async def junk() -> int | None:
                async with connect(media_url) as ws:
                    await ws.send('{"event":"media","streamSid":"MZj","media":{"payload":"' + frame + '"}}')
                    for message in ("not json", "[1, 2]", '{"event":"surprise"}', "{}", '{"event":"start"}'):
                        await ws.send(message)
                    await ws.send(b"\x00\x01binary")
                    return await _closed(ws)  # never a valid start: the start deadline closes it

            async def oversize() -> int | None:
                async with connect(media_url, max_size=None) as ws:
                    await ws.send("x" * 200_000)
                    return await _closed(ws)

            async def wrong_sid_and_flood() -> int | None:
                token = await stream_token(url, "CAflood")
                async with connect(media_url) as ws:
                    sender = TwilioSender("MZflood")
                    await ws.send(sender.connected())
                    await ws.send(sender.start("CAflood", "AC1", {"token": token}))
                    for i in range(3000):
                        await ws.send(sender.media(b"\xff" * 160, i * 20) if i % 100 == 0 else "}{ junk")
                        await ws.send(
                            f'{{"event":"media","streamSid":"MZother","media":{{"payload":"{frame}"}}}}'
                        )
                    await ws.send(sender.stop("CAflood", "AC1"))
                    return await _closed(ws, timeout=15)

            junk_code, oversize_code, flood_code = await asyncio.gather(
                junk(), oversize(), wrong_sid_and_flood()
            )
            result = await good
            async with asyncio.timeout(10):
                await stalled_session[0].closed.wait()  # the stalled call's Live session was let go
            async with httpx.AsyncClient() as client:
                health = (await client.get(url + "/healthz")).json()
            stalled.close()  # before the server stops: it would wait for this connection's close handshake

    assert junk_code == 1000 and oversize_code == 1009
    assert flood_code is not None
    # The good call: every frame reached Live, and the caller heard the whole reply, a clean 440 Hz tone.
    assert result.closed_by == "caller"
    good_session = next(s for s in peer.sessions if s.audio_bytes == result.media_frames_sent * 640)
    assert good_session is not stalled_session[0]
    heard = np.frombuffer(result.heard, "<i2").astype(float)
    loud = heard[np.abs(heard) > 0]
    assert 7900 <= len(loud) <= 8200
    spectrum = np.abs(np.fft.rfft(loud))
    assert abs(np.argmax(spectrum) * 8000 / len(loud) - 440) < 10
    # The flooded call: only its own 30 valid frames reached Live; frames for another streamSid did not.
    assert any(s.audio_bytes == 30 * 640 for s in peer.sessions)
    # Live sessions: the stalled call, the good call, the flooded call; the junk opened none.
    assert len(peer.sessions) == 3
    assert health["status"] == "ok"
    logs = logged(capsys)
    events = {line["event"] for line in logs}
    assert {"twilio_peer_not_reading", "no_start_event"} <= events
    skipped = [line for line in logs if line["event"] == "twilio_message_skipped"]
    assert len(skipped) < 200  # 6000 bad messages, logged sparingly
