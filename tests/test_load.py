"""The scripted Live peer speaks the protocol, and a small load run through a real gateway adds up."""

from __future__ import annotations

import base64
import json
import os
from collections import Counter

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from gateway.cli import build_parser
from gateway.devtools.load import (
    CallTrace,
    Figures,
    InProcessPeer,
    LoadOptions,
    _error_kind,
    _load_main,
    _match_outbound,
    analyze,
    caller_audio,
    load_options_from_args,
    report,
    run_load,
    sample_process,
)
from gateway.devtools.scripted_peer import (
    PeerOptions,
    PeerSessionRecord,
    PeerTurn,
    ScriptedPeer,
    _key_pressed,
    speech_like,
)
from gateway.live import protocol as lp
from gateway.server import running_gateway
from tests.support.gateway import settings_for

VOICED = speech_like(0.02, 16000, amplitude=8000).tobytes()
SILENT = bytes(640)


async def _send_frames(ws, frame: bytes, count: int) -> None:
    for _ in range(count):
        await ws.send(lp.audio_message(frame, 16000))


async def _next_events(ws) -> list:
    return lp.parse_server_message(await ws.recv())


async def test_peer_sets_up_replies_and_is_interrupted() -> None:
    # Slow replies (half real time) so the second utterance lands while the reply is still streaming.
    options = PeerOptions(speedup=0.5, think_s=0.0, reply_s=(1.0, 1.0))
    async with ScriptedPeer(options=options) as peer, connect(peer.url()) as ws:
        await ws.send(json.dumps(lp.build_setup(lp.LiveConfig())))
        raw = await ws.recv()
        assert isinstance(raw, bytes)  # JSON in binary frames, as Gemini sends it
        assert lp.SetupComplete() in lp.parse_server_message(raw)

        for key in "42#":  # the gateway's wording for DTMF: the call's id
            await ws.send(
                lp.client_turn_message(f"[The caller pressed the {key} key on their phone keypad.]")
            )
        await _send_frames(ws, VOICED, 15)
        await _send_frames(ws, SILENT, 12)  # > 200 ms of quiet: end of the caller's turn
        first = await _next_events(ws)
        assert isinstance(first[0], lp.AgentAudio) and first[0].rate == 24000

        await _send_frames(ws, VOICED, 2)  # the caller talks over the reply
        events = []
        while lp.TurnComplete() not in events:
            events += await _next_events(ws)
        kinds = [type(e).__name__ for e in events if not isinstance(e, lp.AgentAudio)]
        assert kinds == ["Interrupted", "TurnComplete"]

    (record,) = peer.records
    assert record.call_id == 42
    assert len(record.audio_times) == 29
    (turn,) = record.turns
    assert turn.interrupted_at is not None and turn.completed_at is None and len(turn.chunk_times) >= 1


async def test_peer_answers_a_text_turn_then_completes() -> None:
    async with ScriptedPeer(options=PeerOptions(speedup=50, think_s=0.0, reply_s=(0.2, 0.2))) as peer:
        async with connect(peer.url("v1beta")) as ws:
            await ws.send(json.dumps({"setup": {"model": "models/x"}}))
            await ws.recv()
            await ws.send(lp.client_turn_message("Greet the caller."))
            events = []
            while lp.TurnComplete() not in events:
                events += await _next_events(ws)
        audio = b"".join(e.pcm for e in events if isinstance(e, lp.AgentAudio))
        assert len(audio) == 2 * round(0.2 * 24000)
        assert peer.records[0].turns[0].cause == "text"


async def _turn_then_next(ws) -> list:
    """A text turn answered to the end, then the peer's next message's events."""
    await ws.send(lp.client_turn_message("Greet the caller."))
    events: list = []
    while lp.TurnComplete() not in events:
        events += await _next_events(ws)
    return await _next_events(ws)


@pytest.mark.parametrize("transparent", [False, True])
async def test_peer_offers_a_resumable_handle_after_each_turn_when_asked(transparent: bool) -> None:
    fast = PeerOptions(speedup=50, think_s=0.0, reply_s=(0.1, 0.1))
    async with ScriptedPeer(options=fast) as peer, connect(peer.url()) as ws:
        resumption = {"transparent": True} if transparent else {}
        await ws.send(json.dumps({"setup": {"model": "models/x", "sessionResumption": resumption}}))
        await ws.recv()
        first = await _turn_then_next(ws)
        second = await _turn_then_next(ws)
    (a,), (b,) = first, second
    assert isinstance(a, lp.ResumptionUpdate) and a.resumable and a.handle
    assert isinstance(b, lp.ResumptionUpdate) and b.handle != a.handle
    if transparent:  # setup is message 0, each text turn one more
        assert (a.consumed_index, b.consumed_index) == (1, 2)
    else:
        assert a.consumed_index is None


@pytest.mark.parametrize("asked, handles", [(False, True), (True, False)])
async def test_peer_offers_no_handle_unless_asked_and_allowed(asked: bool, handles: bool) -> None:
    fast = PeerOptions(speedup=50, think_s=0.0, reply_s=(0.1, 0.1), handles=handles)
    async with ScriptedPeer(options=fast) as peer, connect(peer.url()) as ws:
        setup = {"model": "models/x", **({"sessionResumption": {}} if asked else {})}
        await ws.send(json.dumps({"setup": setup}))
        await ws.recv()
        await ws.send(lp.client_turn_message("Greet the caller."))
        events: list = []
        while lp.TurnComplete() not in events:
            events += await _next_events(ws)
        await ws.send(lp.client_turn_message("Again."))  # the next message is the next turn's audio
        assert isinstance((await _next_events(ws))[0], lp.AgentAudio)


async def test_peer_refuses_other_paths_and_a_first_message_that_is_not_setup() -> None:
    async with ScriptedPeer() as peer:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(peer.url().replace("BidiGenerateContent", "Nope")):
                pass
        assert refused.value.response.status_code == 404
        async with connect(peer.url()) as ws:
            await ws.send(lp.audio_message(SILENT, 16000))
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1007


def test_dtmf_text_parsing() -> None:
    assert _key_pressed("[The caller pressed the 7 key on their phone keypad.]") == "7"
    assert _key_pressed("[The caller pressed the # key.]") == "#"
    assert _key_pressed("caller pressed: *") == "*"
    assert _key_pressed("Greet the caller briefly.") is None


def test_caller_audio_is_sentences_between_pauses_some_short_enough_to_barge_in() -> None:
    pcm = np.frombuffer(caller_audio(20, seed=3), "<i2")
    frames = np.abs(pcm[: len(pcm) // 160 * 160].reshape(-1, 160)).max(axis=1)
    silent = np.concatenate(([False], frames == 0, [False]))
    edges = np.flatnonzero(silent[1:] != silent[:-1])
    runs = (edges[1::2] - edges[::2]) * 0.02  # digital silence, seconds
    pauses = runs[runs >= 0.4]  # between sentences (a sentence's own gaps are shorter)
    assert 3 <= len(pauses) <= 12
    assert any(p < 1.0 for p in pauses) and any(p >= 2.0 for p in pauses)  # barge-in, and heard out
    assert 0.3 < (frames > 300).mean() < 0.8  # speech about half the time
    assert caller_audio(20, seed=3) == caller_audio(20, seed=3)  # the same calls every run


def test_process_sampling_reads_proc() -> None:
    cpu, kernel, rss = sample_process(os.getpid())
    assert cpu > 0 and rss > 10 * 2**20
    assert 0 <= kernel <= cpu


def test_cli_has_load_and_live_scripted() -> None:
    args = build_parser().parse_args(["load", "--calls", "3", "--duration", "4", "--peer-port", "0"])
    assert (args.calls, args.duration, args.peer_port) == (3, 4.0, 0)
    assert build_parser().parse_args(["live-scripted", "--port", "0"]).port == 0


def test_load_takes_the_signing_arguments_of_gateway_call(monkeypatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "token-from-env")
    monkeypatch.setenv("PUBLIC_URL", "https://voice.example.com")
    options = load_options_from_args(build_parser().parse_args(["load", "--url", "http://h:1"]))
    assert (options.auth_token, options.public_url) == ("token-from-env", "https://voice.example.com")
    assert "token-from-env" not in repr(options)
    flags = ["--auth-token", "flag-token", "--public-url", "https://p.example.com"]
    for command in ("load", "call"):
        args = build_parser().parse_args([command, *flags])
        assert (args.auth_token, args.public_url) == ("flag-token", "https://p.example.com")
    options = load_options_from_args(build_parser().parse_args(["load", *flags]))
    assert (options.auth_token, options.public_url) == ("flag-token", "https://p.example.com")
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    monkeypatch.delenv("PUBLIC_URL")
    options = load_options_from_args(build_parser().parse_args(["load"]))
    assert (options.auth_token, options.public_url) == (None, None)


def test_error_kinds_leave_out_what_differs_between_calls() -> None:
    webhook = "voice webhook http://127.0.0.1:4711/twilio/voice answered HTTP 403: 'invalid signature'"
    assert _error_kind(webhook) == "voice webhook answered HTTP 403"
    stream = "stream wss://voice.example.com/twilio/media refused the handshake: HTTP 403"
    assert _error_kind(stream) == "stream refused the handshake: HTTP 403"
    assert _error_kind("ConnectionResetError: [Errno 104] reset") == "ConnectionResetError"
    assert _error_kind("gateway closed the call (code 1011)") == "gateway closed the call (code 1011)"


async def test_gateway_load_signs_its_calls_and_an_unsigned_run_is_refused(monkeypatch, capsys) -> None:
    # A gateway as deployed: signatures checked over PUBLIC_URL, which the harness does not dial.
    token, public = "load-test-auth-token", "https://voice.example.com"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", token)  # `gateway load` signs with it by default
    monkeypatch.setenv("PUBLIC_URL", public)
    async with InProcessPeer() as peer:
        settings = settings_for(peer.url, LOG_LEVEL="warning", TWILIO_AUTH_TOKEN=token, PUBLIC_URL=public)
        async with running_gateway(settings) as url:
            argv = ["load", "--url", url, "--calls", "2", "--duration", "3", "--ramp", "0.2"]
            capsys.readouterr()
            signed = await _load_main(build_parser().parse_args(argv))
            signed_out = capsys.readouterr().out
            signed_sessions = await peer.take_records()

            monkeypatch.delenv("TWILIO_AUTH_TOKEN")
            unsigned = await _load_main(build_parser().parse_args(argv))
            unsigned_out = capsys.readouterr()
            unsigned_sessions = await peer.take_records()

    assert signed == 0 and "calls: 2 placed, 2 completed, errors: none" in signed_out, signed_out
    assert sorted(r.call_id for r in signed_sessions) == [0, 1]  # both calls reached Live
    assert unsigned == 1
    assert "calls: 2 placed, 0 completed, errors: voice webhook answered HTTP 403 x2" in unsigned_out.out
    assert "--auth-token" in unsigned_out.err
    assert unsigned_sessions == []  # refused before any Live session was opened


async def test_small_load_run_through_a_gateway() -> None:
    async with InProcessPeer() as peer:
        # The gateway as shipped: its own barge-in (BARGE_IN=local) also clears a reply the line is still
        # playing out after its mark, and drops the rest of a turn the peer goes on with; the harness still
        # pairs each of the peer's turns with the audio the caller got.
        settings = settings_for(peer.url, LOG_LEVEL="warning")
        async with running_gateway(settings) as url:
            options = LoadOptions(url=url, calls=5, duration_s=6.0, ramp_s=1.0, gateway_pid=os.getpid())
            run = await run_load(options, peer)
    fig = analyze(run)
    text = report(fig)
    assert fig.completed == 5 and not fig.errors, text
    assert fig.identified == 5 and fig.unpaired_turns == 0, text
    assert fig.caller_frames_sent >= 5 * 290 and fig.caller_frames_missing == 0, text
    assert fig.agent_frames_sent > 0 and fig.agent_frames_missing == 0, text
    assert fig.inbound and fig.outbound, text
    # Loose bounds: a shared CI core, but an in-process hop is well under a frame period.
    assert np.median(fig.inbound) < 0.02 and np.median(fig.outbound) < 0.02, text
    # The peer's `interrupted` -> the caller's `clear`: the gateway's own detector may clear first.
    assert all(-1.0 < x < 1.0 for x in fig.barge_in), text
    assert fig.response and 0.2 < np.median(fig.response) < 1.0, text  # peer VAD 200 ms + think 50 ms
    assert fig.gateway_rss_steady > 0 and fig.gateway_cpu_pct > 0, text
    # Measured (not NaN) and a share. Not asserted above 0: /proc counts CPU in 10 ms ticks, each charged to
    # user or kernel by where the tick found the process, and a few seconds of five calls can see none of
    # the kernel's (a CI run read 0.0 once the resampler was compiled and the window's CPU got smaller).
    assert 0 <= fig.gateway_kernel_share < 1, text
    assert fig.inbound_quiet, text  # the pauses (digital silence), apart: they may go several to a message
    assert "inbound latency" in text


def test_reply_messages_are_live_audio() -> None:
    from gateway.devtools.scripted_peer import _reply_messages

    messages = _reply_messages(0.04)
    part = json.loads(messages[0])["serverContent"]["modelTurn"]["parts"][0]["inlineData"]
    assert part["mimeType"] == "audio/pcm;rate=24000"
    assert len(base64.b64decode(part["data"])) == 2 * 960


def test_turns_pair_with_the_audio_the_caller_got_by_time_whatever_clears_came_between() -> None:
    """A clear after a turn's mark (the caller talked over a reply still playing out) closes a segment with
    no audio; a turn the gateway cleared itself loses its tail by design. Neither shifts the pairing."""
    record = PeerSessionRecord(opened=0.0)
    for start, chunks, interrupted in ((1.0, 10, None), (3.0, 10, 3.2), (5.0, 10, None)):
        turn = PeerTurn(started=start, cause="speech", interrupted_at=interrupted)
        turn.chunk_times.extend(start + 0.02 * j for j in range(chunks))
        record.turns.append(turn)
    trace = CallTrace(call_id=0)
    for j in range(10):  # turn 1, whole, its mark, then a clear while it still plays out
        trace.media_received(b"", 1.001 + 0.02 * j)
    trace.mark_received("turn-1", 1.3)
    trace.clear_received(1.6)
    for j in range(4):  # turn 2: the gateway's own barge-in cut it after 4 chunks
        trace.media_received(b"", 3.001 + 0.02 * j)
    trace.clear_received(3.1)
    for j in range(10):  # turn 3, whole
        trace.media_received(b"", 5.001 + 0.02 * j)
    trace.mark_received("turn-3", 5.3)
    fig = Figures(calls=1, completed=1, errors=Counter(), duration_s=6.0, window_s=(0.0, 6.0))
    _match_outbound(trace, record, fig)
    assert (fig.unpaired_turns, fig.agent_frames_sent) == (0, 30)
    assert (fig.agent_frames_missing, fig.agent_frames_cleared) == (0, 6)
    assert len(fig.outbound) == 24 and max(fig.outbound) < 0.002
    # The gateway cleared turn 2 before the peer's `interrupted` (its own barge-in): nothing to time there.
    assert (fig.barge_in, fig.barge_in_first, fig.barge_in_unanswered) == ([], 1, 0)


def test_the_peer_splits_caller_audio_at_the_rate_each_message_gives() -> None:
    from gateway.devtools.scripted_peer import _AUDIO_PREFIX, _frame_bytes

    for rate, frame in ((16000, 640), (8000, 320), (24000, 960)):
        message = lp.audio_message(bytes(2 * frame), rate)  # two frames, as speech goes to Live
        assert _frame_bytes(message, message.find('"', len(_AUDIO_PREFIX))) == frame
    assert _frame_bytes(_AUDIO_PREFIX + 'AAAA"}}}', len(_AUDIO_PREFIX) + 4) == 640  # no rate: Live's 16 kHz
