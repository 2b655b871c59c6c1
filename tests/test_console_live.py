"""The live view's feed (gateway.console.live): calls in progress, their lines, their end, as server-sent
events; a page that falls behind is dropped; a stream ends when the gateway stops."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.console import live
from gateway.console.live import LiveFeed


async def next_event(stream: Any) -> dict[str, Any]:
    async with asyncio.timeout(2):
        while True:
            chunk = await anext(stream)
            if chunk.startswith("data: "):
                return json.loads(chunk.removeprefix("data: "))


async def test_a_page_gets_a_snapshot_then_each_line_and_end() -> None:
    feed = LiveFeed()
    feed.started("CA1", "+1555", "+1666", "twilio")
    feed.line("CA1", "agent", "Hello!")
    stream = feed.stream()
    snapshot = await next_event(stream)
    assert snapshot["type"] == "snapshot" and snapshot["calls"][0]["lines"][0]["text"] == "Hello!"
    feed.started("CA2", "+1777", "+1666", "browser")
    feed.line("CA2", "caller", "hi")
    feed.line("CAgone", "caller", "not a call in progress")  # ignored
    feed.ended("CA1", "caller_hung_up")
    assert (await next_event(stream))["call"]["call_sid"] == "CA2"
    assert (await next_event(stream))["text"] == "hi"
    assert await next_event(stream) == {"type": "ended", "call_sid": "CA1", "outcome": "caller_hung_up"}
    assert list(feed.calls) == ["CA2"]
    await stream.aclose()
    assert not feed._watchers


async def test_a_page_that_falls_behind_is_dropped_and_a_closed_feed_ends_every_stream(monkeypatch) -> None:
    monkeypatch.setattr(live, "QUEUE_SIZE", 3)
    feed = LiveFeed()
    slow = feed.stream()
    await next_event(slow)  # the snapshot: now watching
    feed.started("CA1", "", "", "twilio")
    for i in range(5):
        feed.line("CA1", "agent", str(i))
    assert not feed._watchers  # dropped; its stream ends after what it had
    chunks = [chunk async for chunk in slow]
    assert len(chunks) <= 3
    other = feed.stream()
    await next_event(other)
    feed.close()
    assert [chunk async for chunk in other] == []


async def test_a_stream_ends_when_the_gateway_stops(monkeypatch) -> None:
    monkeypatch.setattr(live, "CHECK_S", 0.01)
    stopping = False
    feed = LiveFeed()
    stream = feed.stream(stopping=lambda: stopping)
    await next_event(stream)
    stopping = True
    async with asyncio.timeout(2):
        assert [chunk async for chunk in stream] == []


@pytest.mark.e2e
async def test_a_page_s_stream_ends_cleanly_when_the_gateway_stops() -> None:
    """uvicorn waits for responses in progress when it stops; an event stream never ends by itself, so the
    server ends them first: the page's stream completes (no cut connection, no wait for uvicorn's bound)."""
    import httpx

    from gateway.server import running_gateway
    from tests.support.gateway import UNUSED_LIVE_URL, settings_for

    settings = settings_for(UNUSED_LIVE_URL, CONSOLE_PASSWORD="a-long-console-password")
    received: list[str] = []
    async with httpx.AsyncClient(timeout=30) as client:
        gateway = running_gateway(settings)
        url = await gateway.__aenter__()
        try:
            await client.post(url + "/console/login", data={"password": "a-long-console-password"})

            async def watch() -> None:
                async with client.stream("GET", url + "/console/live/events") as response:
                    async for chunk in response.aiter_text():
                        received.append(chunk)

            watching = asyncio.create_task(watch())
            async with asyncio.timeout(5):
                while not received:
                    await asyncio.sleep(0.01)
        finally:
            await gateway.__aexit__(None, None, None)
        await watching  # ended by the server, not cut: no RemoteProtocolError
    assert received[0].startswith("data: ") and '"snapshot"' in received[0]


async def test_other_processes_feeds_are_relayed_and_one_that_cannot_be_read_shows_no_calls(
    monkeypatch,
) -> None:
    """With several processes the page's one stream carries every process's calls; a process whose feed
    fails is shown absent, then asked again, and its fresh snapshot replaces what the page had of it."""
    monkeypatch.setattr(live, "RETRY_S", 0.01)
    feed = LiveFeed(process=0)
    feed.started("CA0", "+1555", "+1666", "twilio")
    other = LiveFeed(process=1)
    other.started("CA1", "+1777", "+1666", "twilio")
    reads = 0

    async def process_1() -> Any:
        nonlocal reads
        reads += 1
        if reads == 1:  # the first read breaks after the snapshot (the process is being replaced)
            yield other.snapshot()
            raise OSError("connection reset")
        yield {"type": "snapshot", "process": 1, "calls": []}  # its successor: the call died with it
        yield {"type": "bogus"}  # not news: never relayed
        await asyncio.sleep(3600)

    stream = feed.stream(others={1: process_1})
    own = await next_event(stream)
    assert own["process"] == 0 and [c["call_sid"] for c in own["calls"]] == ["CA0"]
    assert own["calls"][0]["process"] == 0
    relayed = await next_event(stream)
    assert relayed["process"] == 1 and relayed["calls"][0]["call_sid"] == "CA1"
    assert relayed["calls"][0]["process"] == 1
    assert await next_event(stream) == live.absent(1)
    assert await next_event(stream) == {"type": "snapshot", "process": 1, "calls": []}
    feed.line("CA0", "caller", "still here")
    assert (await next_event(stream))["text"] == "still here"  # the bogus item was not passed on
    await stream.aclose()  # the relay is cancelled with the page's stream
    assert not feed._watchers and reads == 2


def test_a_process_asked_for_another_s_feed_says_it_is_absent_and_when_to_ask_again() -> None:
    text = live.absent_stream(3)
    assert text.startswith("retry: 2000\n")
    assert json.loads(text.split("data: ", 1)[1]) == live.absent(3)


async def test_a_draining_process_tells_its_page_the_others_are_no_longer_relayed() -> None:
    feed = LiveFeed(process=0)
    draining = False

    async def process_1() -> Any:
        yield {"type": "snapshot", "process": 1, "calls": []}
        await asyncio.sleep(3600)

    stream = feed.stream(stopping=lambda: draining, others={1: process_1})
    assert (await next_event(stream))["process"] == 0
    assert (await next_event(stream))["process"] == 1
    draining = True
    assert await next_event(stream) == live.absent(1)  # else the page would keep process 1's calls
    assert [chunk async for chunk in stream] == []
