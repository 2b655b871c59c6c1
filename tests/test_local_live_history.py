"""The local backend over loopback, as the service behaves for 2026's clients: history seeded with
clientContent (`historyConfig.initialHistoryInClientContent`) starts no reply, and the blank
`realtimeInput.text` nudge clients send next makes the model take its turn without cutting it off;
non-blocking function calls let the turn end, and their answers are spoken per their scheduling."""

from __future__ import annotations

import json

import pytest

from gateway.local_live import LocalLiveOptions, LocalLiveServer
from tests.support.local_live import LiveClient, is_turn_complete, setup_message

pytestmark = pytest.mark.e2e


@pytest.fixture
async def fast_server():
    async with LocalLiveServer(options=LocalLiveOptions(audio_lead_s=60.0)) as srv:
        yield srv


def said(messages: list[dict]) -> list[str]:
    """The model's turns, in order, by their output transcription; an interrupted one is marked."""
    turns, current = [], ""
    for m in messages:
        content = m.get("serverContent", {})
        current += content.get("outputTranscription", {}).get("text", "")
        if content.get("interrupted"):
            current += "[interrupted]"
        if content.get("turnComplete"):
            turns.append(current.strip())
            current = ""
    return turns


@pytest.mark.parametrize("model", ["models/gemini-3.1-flash-live-preview", "models/gemini-3.8-live"])
async def test_seeded_history_starts_no_reply_and_the_nudge_is_not_a_new_turn(fast_server, model):
    client = await LiveClient.connect(
        fast_server.url(), setup_message(model=model, historyConfig={"initialHistoryInClientContent": True})
    )
    await client.send(
        {
            "clientContent": {
                "turns": [
                    {"role": "user", "parts": [{"text": "You answer the phone."}]},
                    {"role": "model", "parts": [{"text": "Understood."}]},
                    {"role": "user", "parts": [{"text": "What time is it?"}]},
                ],
                "turnComplete": True,
            }
        }
    )
    await client.send({"realtimeInput": {"text": ""}})  # the nudge: take your turn
    await client.send({"realtimeInput": {"text": " "}})  # a second one while it speaks: no new turn either
    got = await client.until(is_turn_complete)
    await client.send({"realtimeInput": {"text": "goodbye"}})  # a sentinel: anything spurious came before it
    turns = said(got) + await until_turn(client, "Goodbye")
    await client.close()
    assert len(turns) == 2 and turns[0].startswith("It is"), turns


async def until_turn(client: LiveClient, prefix: str) -> list[str]:
    """The model's turns until one starting with `prefix` has completed."""
    got: list[dict] = []
    while not (turns := said(got)) or not turns[-1].startswith(prefix):
        got += await client.until(is_turn_complete)
    return turns


async def test_a_non_blocking_call_ends_its_turn_and_the_answer_is_spoken_when_idle_or_not_if_silent(
    fast_server,
):
    setup = setup_message(
        model="models/gemini-3.8-live",  # functions are NON_BLOCKING by default
        tools=[{"functionDeclarations": [{"name": "order_status", "description": "Look up an order."}]}],
    )
    client = await LiveClient.connect(fast_server.url(), setup)
    for scheduling, answer in (("WHEN_IDLE", "The order status answer is"), ("SILENT", None)):
        await client.send({"realtimeInput": {"text": "check the order status"}})
        got = await client.until(lambda m: "toolCall" in m)
        (call,) = got[-1]["toolCall"]["functionCalls"]
        got += await client.until(is_turn_complete)  # the turn ends without the answer: nothing waits for it
        assert said(got) == ["Let me check order status."]
        response = {"id": call["id"], "name": call["name"], "response": {"status": "shipped"}}
        await client.send({"toolResponse": {"functionResponses": [{**response, "scheduling": scheduling}]}})
        if answer is not None:
            (turn,) = await until_turn(client, answer)  # a turn of its own, once the model is idle
            assert "shipped" in turn
        else:  # added to the context without a word: the next turn is the answer to what comes next
            await client.send({"realtimeInput": {"text": "what time is it"}})
            turns = await until_turn(client, "It is")
            assert len(turns) == 1, turns  # nothing was said about the order before it
    await client.close()


async def test_an_interrupting_answer_cuts_off_the_reply_in_progress():
    setup = setup_message(
        model="models/gemini-3.8-live",
        tools=[{"functionDeclarations": [{"name": "order_status", "description": "Look up an order."}]}],
    )
    async with LocalLiveServer(options=LocalLiveOptions()) as server:  # replies paced: one takes seconds
        client = await LiveClient.connect(server.url(), setup)
        await client.send({"realtimeInput": {"text": "check the order status"}})
        got = await client.until(lambda m: "toolCall" in m)
        (call,) = got[-1]["toolCall"]["functionCalls"]
        await client.until(is_turn_complete)
        await client.send(
            {"realtimeInput": {"text": "hello there, I am calling about my order from last week"}}
        )
        got = await client.until(lambda m: "inlineData" in json.dumps(m))  # that reply is playing now
        response = {"id": call["id"], "name": call["name"], "response": {"status": "shipped"}}
        await client.send({"toolResponse": {"functionResponses": [{**response, "scheduling": "INTERRUPT"}]}})
        turns = await until_turn(client, "The order status answer is")
        await client.close()
    assert turns[0].endswith("[interrupted]") and "shipped" in turns[-1], turns
