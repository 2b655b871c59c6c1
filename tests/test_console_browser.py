"""The console in a real browser (Chromium through Playwright), against a gateway carrying a simulated call on
the local Live backend.

One gateway, one backend and one browser for the module; the tests run in order on one call: watched live
while its transcript grows and hung up from the console, then found in the list, opened (its transcript,
latency figures and picture checked against its record), and counted on the overview. Screenshots of every
page are kept in test-artifacts/console/.
"""

from __future__ import annotations

import asyncio
import re
import statistics
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
import pytest_asyncio

from gateway.cost import Prices
from gateway.devtools.simulator import RATE, CallResult, CallScript, place_call
from gateway.local_live import LocalLiveServer
from gateway.local_live.tts import synthesize
from gateway.server import running_gateway
from tests.support.browser import chromium, screenshot
from tests.support.gateway import settings_for

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="module")]

PASSWORD = "console-password-for-tests"
TOKEN = "calls-api-token-for-tests"
CALLER = "+15550007777"
SHOTS = "console"


@dataclass
class Console:
    url: str
    gateway: Any  # gateway.app.Gateway
    page: Any  # playwright Page, signed in
    http: httpx.AsyncClient  # the calls API with the bearer token
    call_sid: str = ""
    call: CallResult | None = None
    errors: list[str] = field(default_factory=list)  # the pages' script errors and refusals (CSP)


def caller_audio() -> bytes:
    """The caller talks over the end of the greeting (a barge-in), says two lines the local agent
    understands, waiting for each answer, then stays silent until hung up."""
    parts = [bytes(int(3.0 * RATE) * 2)]
    for text in ("Hello, my name is John.", "What time is it?"):
        parts.append(synthesize(text, rate=RATE, variant="m6", wpm=150))
        parts.append(bytes(int(3.5 * RATE) * 2))
    return b"".join(parts)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def console(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Console]:
    async with chromium() as browser, LocalLiveServer() as live:
        settings = settings_for(
            live.url(), CONSOLE_PASSWORD=PASSWORD, CALLS_API_TOKEN=TOKEN, RECORDING="gateway",
            RECORDINGS_URL=str(tmp_path_factory.mktemp("recordings")), RECORDING_NOTICE="off",
        )  # fmt: skip
        from gateway.app import create_app

        app = create_app(settings)
        async with (
            running_gateway(settings, app=app) as url,
            httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as http,
        ):
            context = await browser.new_context(viewport={"width": 1280, "height": 900})
            page = await context.new_page()
            console = Console(url, app.state.gateway, page, http)
            page.on("pageerror", lambda error: console.errors.append(str(error)))
            page.on(
                "console",
                lambda message: (
                    message.type == "error"
                    and not message.text.startswith("Failed to load resource")  # the refused sign-in's 401
                    and console.errors.append(message.text)
                ),
            )
            yield console
            await context.close()


async def test_sign_in_through_the_form(console: Console) -> None:
    page = console.page
    await page.goto(console.url + "/console/live")
    assert "/console/login" in page.url  # no session: the sign-in page, and back here afterwards
    await page.fill("input[name=password]", "not the password")
    await page.click("button[type=submit]")
    assert await page.locator(".error").text_content() == "Wrong password."
    await screenshot(page, SHOTS, "0-sign-in-refused")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_url("**/console/live")
    cookie = next(c for c in await page.context.cookies() if c["name"] == "gateway_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


async def test_a_live_call_s_transcript_grows_and_it_is_hung_up_from_the_console(console: Console) -> None:
    page = console.page
    await page.wait_for_selector("#live-status:text('live')")
    script = CallScript(caller_audio(), trailing_silence_s=0, hang_up=False, max_duration_s=60)
    call = asyncio.create_task(place_call(console.url, script, from_=CALLER))
    box = page.locator(".live-call")
    await box.wait_for(timeout=15_000)
    console.call_sid = await box.get_attribute("data-sid") or ""
    lines = box.locator("ol.transcript li")
    await lines.first.wait_for(timeout=20_000)  # the agent's greeting
    first_count = await lines.count()
    await lines.nth(first_count).wait_for(timeout=20_000)  # the transcript grows as the call goes on
    # Both lines said and answered: the second caller line, and an agent line after it.
    await page.locator("li.line.caller ~ li.line.caller ~ li.line.agent").first.wait_for(timeout=30_000)
    await screenshot(page, SHOTS, "1-live")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await box.locator("button.hang-up").click()
    async with asyncio.timeout(10):
        console.call = await call
    await page.locator(".live-call.ended").wait_for(timeout=10_000)
    await console.gateway.records.flush(10)
    record = (await console.http.get(f"/calls/{console.call_sid}")).json()
    assert record["outcome"] == "operator_hung_up" and record["from_number"] == CALLER
    # Its cost: the tokens Live reported at LIVE_PRICES' defaults, counted in the metric too.
    assert record["cost_usd"] == pytest.approx(
        Prices().cost_usd(record["prompt_tokens"], record["response_tokens"], record["tokens_by_modality"])
    )
    assert record["cost_usd"] > 0
    metrics = (await console.http.get("/metrics")).text
    counted = float(re.search(r"^gateway_cost_usd_total (\S+)$", metrics, re.M)[1])  # type: ignore[index]
    assert counted >= record["cost_usd"]  # (this process's other calls count too)


async def record_of(console: Console) -> dict[str, Any]:
    response = await console.http.get(f"/calls/{console.call_sid}")
    assert response.status_code == 200
    return response.json()


async def test_the_call_is_listed_and_found_by_its_number(console: Console) -> None:
    page = console.page
    await page.goto(console.url + "/console/calls")
    row = page.locator(f"tr[data-sid='{console.call_sid}']")
    await row.wait_for()
    assert "operator_hung_up" in (await row.text_content() or "")
    await screenshot(page, SHOTS, "2-calls")
    await page.fill("input[name=number]", CALLER[-6:])
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**number=**")
    assert await page.locator("tbody tr[data-sid]").count() == 1
    await page.select_option("select[name=outcome]", "transferred")
    await page.click("form.filters button[type=submit]")
    await page.wait_for_url("**outcome=transferred**")
    assert await page.locator("tbody tr[data-sid]").count() == 0


async def test_the_call_page_shows_the_record_s_transcript_latencies_and_picture(console: Console) -> None:
    record = await record_of(console)
    page = console.page
    await page.goto(console.url + f"/console/calls/{console.call_sid}")
    said = [
        (await row.locator("td").nth(1).text_content(), await row.locator("td.text").text_content())
        for row in await page.locator("#timeline tr.line").all()
    ]
    assert said == [(line["role"], line["text"]) for line in record["transcript"]]
    assert any(role == "caller" for role, _ in said) and any(role == "agent" for role, _ in said)
    latencies = [e["latency_ms"] for e in record["events"] if e["kind"] == "response"]
    assert latencies, "the agent answered the caller at least once"
    shown = [int(text) for text in await page.locator("#timeline tr.response .latency").all_text_contents()]
    assert shown == latencies
    assert await page.locator("#latency-median").text_content() == str(int(statistics.median_low(latencies)))
    # The picture: a rectangle per stretch of speech on each lane, as the record's events say.
    kinds = [e["kind"] for e in record["events"]]
    starts = {side: kinds.count(f"{side}_start") for side in ("caller", "agent")}
    assert starts["caller"] >= 1 and starts["agent"] >= 2
    assert await page.locator("#picture rect.caller-speech").count() == starts["caller"]
    assert await page.locator("#picture rect.agent-speech").count() == starts["agent"]
    box = await page.locator("#picture").bounding_box()
    assert box is not None and box["width"] > 600 and box["height"] > 50
    await screenshot(page, SHOTS, "3-call")


async def test_the_call_s_recording_plays_and_lasts_as_long_as_the_call(console: Console) -> None:
    record = await record_of(console)
    assert record["recording_url"] and record["recording_parts"] == 1
    page = console.page
    audio = page.locator("audio#recording")
    assert await audio.get_attribute("src") == f"/calls/{console.call_sid}/recording?part=1"
    # The browser fetches it with the console session (no bearer token), decodes it, and plays it.
    heard = await page.evaluate(
        """async () => {
            const audio = document.getElementById("recording");
            audio.muted = true;
            if (audio.readyState < 1) await new Promise((ok, no) => {
                audio.addEventListener("loadedmetadata", ok, { once: true });
                const failed = () => no(new Error("cannot load the recording"));
                audio.addEventListener("error", failed, { once: true });
            });
            await audio.play();
            await new Promise((ok) => setTimeout(ok, 600));
            audio.pause();
            return { duration: audio.duration, played: audio.currentTime };
        }"""
    )
    call_s = datetime.fromisoformat(record["ended_at"]) - datetime.fromisoformat(record["started_at"])
    assert heard["duration"] == pytest.approx(record["recording_s"], abs=0.05)
    assert heard["duration"] == pytest.approx(call_s.total_seconds(), abs=0.5)
    assert heard["played"] > 0.1


async def test_the_overview_draws_its_charts(console: Console) -> None:
    page = console.page
    await page.goto(console.url + "/console/overview")
    await page.wait_for_selector("body[data-charts-drawn=true]")
    assert int(await page.locator("#total-calls").text_content() or "0") >= 1
    for chart in ("per-hour", "outcomes", "latency", "cost"):  # each canvas has something drawn on it
        drawn = await page.evaluate(
            "id => { const c = document.getElementById(id); const d = c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data; return d.some(v => v !== 0); }",
            f"chart-{chart}",
        )
        assert drawn, chart
    await screenshot(page, SHOTS, "4-overview")


async def test_no_page_had_a_script_error_or_a_refused_resource(console: Console) -> None:
    assert console.errors == []


async def test_signing_out_ends_the_session(console: Console) -> None:
    page = console.page
    await page.click("form.signout button")
    await page.wait_for_url("**/console/login")
    response = await page.goto(console.url + "/console/calls")
    assert response is not None and "/console/login" in page.url
