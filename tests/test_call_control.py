"""Call control end to end over real sockets: the caller simulator -> the gateway -> a Live peer (the local
backend, or a scripted peer where a test needs exact timing), plus loopback stand-ins for Twilio's REST API
and for a custom tool's HTTP service."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import textwrap
from pathlib import Path

import httpx
import pytest

from gateway.devtools.simulator import CallResult, CallScript, place_call
from gateway.local_live import LocalLiveOptions, LocalLiveServer
from gateway.records import open_store
from gateway.server import running_gateway
from gateway.tools import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from tests.support.audio import agent_tone
from tests.support.gateway import logged, settings_for
from tests.support.live_peer import LivePeer, PeerSession
from tests.support.tool_server import ToolService, tool_service
from tests.support.twilio_api import fake_twilio_api
from tests.support.waiting import wait_for

pytestmark = pytest.mark.e2e

NUMBER = "+15005550001"  # the simulator's default called number
OTHER_NUMBER = "+15005550002"
TARGET = "+15005550009"
ACCOUNT, TOKEN = "AC" + "1" * 32, "rest-token-123"
SECRET = "tool-secret-5678"
SILENCE = bytes(1600)  # 0.1 s of caller silence: the caller says nothing in these calls


@pytest.fixture
async def live():
    async with LocalLiveServer(options=LocalLiveOptions()) as server:
        yield server


def write_agents(tmp_path: Path, toml: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(textwrap.dedent(toml))
    return str(path)


def outcome(lines: list[dict], result: CallResult) -> str:
    ended = [x for x in lines if x["event"] == "call_ended" and x.get("call_sid") == result.call_sid]
    return ended[-1]["outcome"]


def kinds(result: CallResult) -> list[str]:
    return [e.kind for e in result.events]


def waiting_call(seconds: float = 30.0) -> CallScript:
    """A caller who says nothing and stays on the line until the gateway ends the call."""
    return CallScript(audio=SILENCE, trailing_silence_s=seconds, hang_up=False, max_duration_s=seconds)


async def tool_responses(session: PeerSession, count: int, timeout: float = 10.0) -> list[dict]:
    async with asyncio.timeout(timeout):
        while True:
            responses = [
                r
                for m in session.other
                if "toolResponse" in m
                for r in m["toolResponse"]["functionResponses"]
            ]
            if len(responses) >= count:
                return responses
            await asyncio.sleep(0.01)


async def send_tool_call(session: PeerSession, call_id: str, name: str, **args: str) -> None:
    await session.send({"toolCall": {"functionCalls": [{"id": call_id, "name": name, "args": args}]}})


# --- end_call ------------------------------------------------------------------------------------------


async def test_end_call_hangs_up_once_the_goodbye_has_been_heard(live, capsys):
    transcripts: list[tuple[str, str]] = []
    settings = settings_for(live.url(), AGENT_GREETING="Say goodbye to the caller.")
    async with running_gateway(
        settings, on_transcript=lambda _s, role, text: transcripts.append((role, text))
    ) as url:
        result = await place_call(url, waiting_call())
    lines = logged(capsys)

    assert ("agent", "Goodbye, and thank you for calling.") in transcripts
    assert result.closed_by == "gateway" and outcome(lines, result) == "agent_hung_up"
    assert "clear" not in kinds(result)
    # The hang-up mark went out after the whole goodbye; the simulator echoes a mark only once the audio
    # queued before it has played, and the gateway closed the stream only after that echo.
    echoes = [e for e in result.events if e.kind == "mark_echo"]
    assert echoes[-1].details["name"].startswith("hang_up-")
    closed = next(e for e in result.events if e.kind == "closed")
    assert closed.t >= echoes[-1].t
    assert result.media_bytes_received / 8000 > 1.0  # the goodbye itself, about two seconds of it


async def test_a_mark_flushed_by_a_clear_does_not_hang_up_and_talking_over_the_goodbye_withdraws_it(capsys):
    async def script(session: PeerSession) -> None:
        await session.send_audio(agent_tone(3.0))  # a goodbye the caller will hear for 3 s
        await send_tool_call(session, "bye-1", "end_call")
        await tool_responses(session, 1)
        await session.send({"serverContent": {"turnComplete": True}})
        await asyncio.sleep(0.5)
        await session.send({"serverContent": {"inputTranscription": {"text": "wait"}}})  # the caller talks

    async with LivePeer(script) as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none")) as url:
            result = await place_call(url, CallScript(audio=SILENCE, trailing_silence_s=4.0))
        session = await peer.session()
    lines = logged(capsys)

    (response,) = await tool_responses(session, 1)
    assert response["id"] == "bye-1" and "result" in response["response"]
    # The clear flushed the hang-up mark and Twilio echoed it at once: that echo proves nothing was heard.
    assert "clear" in kinds(result)
    assert any(e.kind == "mark_echo" and e.details["name"].startswith("hang_up-") for e in result.events)
    assert result.closed_by == "caller" and outcome(lines, result) == "caller_hung_up"
    assert any(
        x["event"] == "line_action_withdrawn" and x["reason"] == "caller_talked_over_it" for x in lines
    )


# --- transfer_call -------------------------------------------------------------------------------------

TRANSFER_AGENT = f"""
    [agents.desk]
    numbers = ["{NUMBER}"]
    greeting = "Transfer me to an operator."
    tools = ["end_call", "transfer_call"]
    transfer_targets = ["{TARGET}"]
"""


async def test_transfer_call_moves_the_call_with_the_rest_api_after_the_agent_has_been_heard(
    live, tmp_path, capsys
):
    async with fake_twilio_api(ACCOUNT, TOKEN) as (api_url, api):
        env = {
            "AGENTS_FILE": write_agents(tmp_path, TRANSFER_AGENT),
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
        }
        settings = dataclasses.replace(settings_for(live.url(), **env), twilio_api_base_url=api_url)
        async with running_gateway(settings) as url:
            result = await place_call(url, waiting_call(), auth_token=TOKEN)
    lines = logged(capsys)

    ((sid, form),) = api.updates
    assert sid == result.call_sid and f"<Dial>{TARGET}</Dial>" in form["Twiml"]
    assert result.closed_by == "gateway" and outcome(lines, result) == "transferred"
    # "I will transfer you now." was played to its end before the call moved.
    assert "clear" not in kinds(result)
    assert [e for e in result.events if e.kind == "mark_echo"][-1].details["name"].startswith("transfer-")
    assert result.media_bytes_received / 8000 > 0.8
    # The record names the agent AGENTS_FILE chose, and its model.
    store = open_store(settings.database_url)
    await store.open()
    try:
        record = await store.get_call(result.call_sid)
    finally:
        await store.close()
    assert record is not None and record.agent == f"desk ({settings.live.model})", record


async def test_transfer_call_refuses_targets_off_the_allowlist_and_lines_without_rest_credentials(tmp_path):
    async def script(session: PeerSession) -> None:
        await send_tool_call(session, "t-1", "transfer_call", target="+19995550100")
        await send_tool_call(session, "t-2", "transfer_call", target=TARGET)
        await send_tool_call(session, "t-3", "no_such_tool")

    async with LivePeer(script) as peer:
        settings = settings_for(
            peer.url, AGENT_GREETING="none", AGENTS_FILE=write_agents(tmp_path, TRANSFER_AGENT)
        )
        async with running_gateway(settings) as url:
            result = await place_call(url, CallScript(audio=SILENCE, trailing_silence_s=1.5))
        session = await peer.session()

    responses = {r["id"]: r["response"] for r in await tool_responses(session, 3)}
    assert "not a transfer target" in responses["t-1"]["error"] and TARGET in responses["t-1"]["error"]
    assert "not available" in responses["t-2"]["error"]
    assert "no tool named" in responses["t-3"]["error"]
    assert result.closed_by == "caller"  # a refused tool is an answer, not a dead call


@pytest.mark.parametrize("rest", ["refused", "call_already_ended"])
async def test_a_failed_transfer_is_told_to_the_agent_and_a_call_already_gone_just_ends(
    tmp_path, capsys, rest
):
    async def script(session: PeerSession) -> None:
        await send_tool_call(session, "t-1", "transfer_call", target=TARGET)

    # The stand-in knows another auth token than the gateway's, so it refuses the REST call (HTTP 401).
    api_token = "another-token" if rest == "refused" else TOKEN
    async with fake_twilio_api(ACCOUNT, api_token) as (api_url, api), LivePeer(script) as peer:
        env = {
            "AGENTS_FILE": write_agents(tmp_path, TRANSFER_AGENT),
            "TWILIO_ACCOUNT_SID": ACCOUNT,
            "TWILIO_AUTH_TOKEN": TOKEN,
            "AGENT_GREETING": "none",
        }
        settings = dataclasses.replace(settings_for(peer.url, **env), twilio_api_base_url=api_url)
        async with running_gateway(settings) as url:
            call_sid = "CA" + "7" * 32
            api.ended.add(call_sid)
            result = await place_call(url, waiting_call(6.0), auth_token=TOKEN, call_sid=call_sid)
        session = await peer.session()
    lines = logged(capsys)

    assert api.updates == []
    if rest == "refused":
        # The caller is still there: the agent is told, so it can say so, and the call goes on.
        assert any("transfer to " + TARGET + " failed" in turn for turn in session.client_turns)
        assert result.closed_by == "caller" and outcome(lines, result) == "caller_hung_up"
    else:
        assert result.closed_by == "gateway" and outcome(lines, result) == "caller_gone"


# --- custom tools over HTTP ----------------------------------------------------------------------------


def shop_agent(tool_url: str, timeout_s: float = 2.0) -> str:
    return f"""
        [agents.shop]
        numbers = ["{NUMBER}"]
        greeting = "Check the order status."
        tools = ["end_call", "order_status"]

        [tools.order_status]
        description = "Look up an order."
        url = "{tool_url}"
        timeout_s = {timeout_s}
        parameters = {{ type = "OBJECT", properties = {{ request = {{ type = "STRING" }} }} }}
    """


@pytest.mark.parametrize(
    ("service", "heard"),
    [
        (ToolService(reply={"status": "shipped"}), "shipped"),
        (ToolService(delay_s=3.0), "did not answer within 1 s"),
    ],
    ids=["answered", "timed_out"],
)
async def test_a_custom_tool_is_answered_by_a_signed_http_request(live, tmp_path, service, heard):
    transcripts: list[str] = []
    async with tool_service(service) as tool_url:
        env = {
            "AGENTS_FILE": write_agents(tmp_path, shop_agent(tool_url, timeout_s=1)),
            "TOOLS_SECRET": SECRET,
        }
        settings = settings_for(live.url(), **env)
        async with running_gateway(
            settings, on_transcript=lambda _s, role, text: transcripts.append(text)
        ) as url:
            said = lambda: any(heard in text for text in transcripts)  # noqa: E731
            script = CallScript(audio=SILENCE, trailing_silence_s=12.0, hang_up_when=said)
            result = await place_call(url, script)

    # The model heard the answer (or the failure) and said so; the call went on to the caller's hang-up.
    assert any(heard in text for text in transcripts), transcripts
    assert result.closed_by == "caller"
    ((headers, body),) = service.requests
    assert headers[SIGNATURE_HEADER.lower()] == sign(SECRET, headers[TIMESTAMP_HEADER.lower()], body)
    request = json.loads(body)
    assert request["tool"] == "order_status" and "order status" in request["args"]["request"].lower()
    assert request["call"]["call_sid"] == result.call_sid and request["call"]["to"] == NUMBER


async def test_a_slow_non_blocking_tool_does_not_freeze_the_conversation(live, tmp_path):
    # The tool service answers only once the agent's turn that asked for it is over: the conversation
    # cannot have waited for it. Its answer is then spoken in a turn of its own (scheduling when_idle).
    service = ToolService(reply={"status": "shipped"}, release=asyncio.Event())
    agent_lines: list[str] = []

    def on_transcript(_sid: str, role: str, text: str) -> None:
        if role == "agent":
            agent_lines.append(text)
            if "check order status" in text.lower():
                service.release.set()  # type: ignore[union-attr]

    agents = shop_agent("{url}", timeout_s=30) + 'behavior = "non_blocking"\nscheduling = "when_idle"\n'
    async with tool_service(service) as tool_url:
        env = {
            "AGENTS_FILE": write_agents(tmp_path, agents.replace("{url}", tool_url)),
            "TOOLS_SECRET": SECRET,
        }
        async with running_gateway(settings_for(live.url(), **env), on_transcript=on_transcript) as url:
            call = asyncio.create_task(place_call(url, CallScript(audio=SILENCE, trailing_silence_s=30.0)))
            await wait_for(lambda: any("shipped" in line for line in agent_lines), 30)
            call.cancel()  # the caller hangs up
            with contextlib.suppress(asyncio.CancelledError):
                await call

    assert len(service.requests) == 1
    asked = next(i for i, line in enumerate(agent_lines) if "check order status" in line.lower())
    assert any("shipped" in line for line in agent_lines[asked + 1 :]), agent_lines
    assert "shipped" not in agent_lines[asked]


async def test_a_cancelled_tool_call_gets_no_response(tmp_path, capsys):
    service = ToolService(delay_s=1.0)

    async def script(session: PeerSession) -> None:
        await send_tool_call(session, "slow-1", "order_status", request="order 7")
        async with asyncio.timeout(5):
            await service.received.wait()
        await session.send({"toolCallCancellation": {"ids": ["slow-1"]}})

    async with tool_service(service) as tool_url, LivePeer(script) as peer:
        env = {"AGENTS_FILE": write_agents(tmp_path, shop_agent(tool_url)), "TOOLS_SECRET": SECRET}
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="none", **env)) as url:
            await place_call(url, CallScript(audio=SILENCE, trailing_silence_s=3.0))
        session = await peer.session()
    lines = logged(capsys)

    assert len(service.requests) == 1
    assert not [m for m in session.other if "toolResponse" in m]
    assert any(x["event"] == "tool_calls_cancelled" and x["ids"] == ["slow-1"] for x in lines)


# --- DTMF ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model", ["gemini-2.5-flash-native-audio-preview-12-2025", "gemini-3.1-flash-live-preview"]
)
async def test_keypresses_reach_the_model_as_text_it_acts_on(live, model):
    # 2.5 models take the keypress as a client turn; 3.x models close the session (1007) on a mid-session
    # clientContent, so they must get it as realtimeInput text. The local backend enforces both.
    transcripts: list[tuple[str, str]] = []
    settings = settings_for(live.url(), AGENT_GREETING="none", GEMINI_MODEL=model)
    async with running_gateway(
        settings, on_transcript=lambda _s, role, text: transcripts.append((role, text))
    ) as url:
        result = await place_call(url, CallScript(audio=SILENCE, dtmf=[(0.3, "5")], trailing_silence_s=4.0))
    assert ("agent", "You pressed 5.") in transcripts
    assert result.closed_by == "caller"


# --- per-number agents ---------------------------------------------------------------------------------


async def test_the_called_number_chooses_the_agent_and_other_numbers_get_the_default(tmp_path):
    agents = f"""
        [agents.support]
        numbers = ["{NUMBER}"]
        instructions = "You answer for Acme support."
        voice = "Puck"
        greeting = "Greet the caller as Acme support."
        tools = ["end_call", "transfer_call"]
        transfer_targets = ["{TARGET}"]
    """
    async with LivePeer() as peer:
        env = {
            "AGENTS_FILE": write_agents(tmp_path, agents),
            "AGENT_GREETING": "Default hello",
            "AGENT_VOICE": "Kore",
        }
        async with running_gateway(settings_for(peer.url, **env)) as url:
            await place_call(url, CallScript(audio=SILENCE, trailing_silence_s=0.3), to=NUMBER)
            await place_call(url, CallScript(audio=SILENCE, trailing_silence_s=0.3), to=OTHER_NUMBER)
        support, default = await peer.session(0), await peer.session(1)
        async with asyncio.timeout(5):
            await support.got_turn.wait()
            await default.got_turn.wait()

    assert support.setup["systemInstruction"]["parts"][0]["text"] == "You answer for Acme support."
    assert (
        support.setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
        == "Puck"
    )
    declared = {d["name"]: d for d in support.setup["tools"][0]["functionDeclarations"]}
    assert set(declared) == {"end_call", "transfer_call"}
    assert declared["transfer_call"]["parameters"]["properties"]["target"]["enum"] == [TARGET]
    assert support.client_turns == ["Greet the caller as Acme support."]

    assert "Acme" not in default.setup["systemInstruction"]["parts"][0]["text"]
    assert (
        default.setup["generationConfig"]["speechConfig"]["voiceConfig"]["prebuiltVoiceConfig"]["voiceName"]
        == "Kore"
    )
    assert [d["name"] for d in default.setup["tools"][0]["functionDeclarations"]] == ["end_call"]
    assert default.client_turns == ["Default hello"]


# --- pre-warm ------------------------------------------------------------------------------------------


async def test_the_session_set_up_while_ringing_is_the_one_the_call_uses(capsys):
    async with LivePeer() as peer:
        async with running_gateway(settings_for(peer.url, AGENT_GREETING="hi")) as url:
            result = await place_call(url, CallScript(audio=SILENCE, trailing_silence_s=0.5))
        session = await peer.session()
        async with asyncio.timeout(5):
            await session.closed.wait()
    lines = logged(capsys)
    assert len(peer.sessions) == 1 and session.client_turns == ["hi"]
    chosen = next(x for x in lines if x["event"] == "agent_chosen")
    assert chosen["prewarmed"] is True and chosen["call_sid"] == result.call_sid


async def test_a_session_set_up_for_a_call_whose_stream_never_comes_is_closed_after_the_deadline():
    form = {"CallSid": "CAnostream", "From": "+15551230000", "To": NUMBER}
    async with LivePeer() as peer:
        async with running_gateway(settings_for(peer.url, LIVE_PREWARM_S="0.3")) as url:
            async with httpx.AsyncClient() as client:
                assert (await client.post(url + "/twilio/voice", data=form)).status_code == 200
            session = await peer.session()  # opened while "ringing", before any stream
            async with asyncio.timeout(5):
                await session.closed.wait()  # and closed by the gateway, which is still running
    assert len(peer.sessions) == 1


async def test_without_pre_warm_the_session_opens_when_the_stream_starts():
    async with LivePeer() as peer:
        async with running_gateway(settings_for(peer.url, LIVE_PREWARM_S="0")) as url:
            async with httpx.AsyncClient() as client:
                await client.post(url + "/twilio/voice", data={"CallSid": "CA1", "To": NUMBER})
            await asyncio.sleep(0.3)
            assert peer.sessions == []
            await place_call(url, CallScript(audio=SILENCE, trailing_silence_s=0.3))
        assert len(peer.sessions) == 1
