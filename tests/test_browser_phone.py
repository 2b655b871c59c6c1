"""The console's softphone in a real browser: headless Chromium (Playwright), its microphone a WAV file made
with espeak-ng, calling a gateway process that runs the local backend.

One gateway and one browser for the module. The caller's WAV is silence, then "What time is it?" while the
agent's greeting still plays (so the caller talks over it: the gateway's barge-in clears the page's playout),
then silence while the agent answers. What is asserted does not depend on the recognizer's luck: that the
greeting arrived, that the caller's turn was transcribed at all, that the agent answered it, that the page
cleared its playout, and that the call's record says it came from the browser with both sides' transcript.
The path latencies the page measures are printed, never asserted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from gateway.audio import pcm16_to_ulaw, ulaw_to_pcm16
from tests.support.browser import artifacts_dir
from tests.support.softphone import caller_wav, chromium, gateway_serving

pytestmark = pytest.mark.e2e

PASSWORD = "console-password-for-tests"
TOKEN = "calls-api-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
# The greeting ("Hello! You are speaking with ...") lasts about four seconds from its start, well under a
# second into the call: the caller's question at 2.5 s falls inside it.
CALLER = [(2.5, "What time is it?"), (6.0, "")]
POSITIVE = "(selector) => Number(document.querySelector(selector).textContent) > 0"
# audio.js, run in the page: its codec over every sample, and its resampler on tones.
AUDIO_CHECK = """async () => {
    const a = await import('/console/phone/static/audio.js');
    const samples = Int16Array.from({length: 65536}, (_, i) => i - 32768);
    const tone = (freq, n, rate) =>
        Float32Array.from({length: n}, (_, i) => 0.5 * Math.sin(2 * Math.PI * freq * i / rate));
    const rms = (x) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
    const down = (freq) => rms(new a.Resampler(48000, 8000).process(tone(freq, 48000, 48000)).slice(400));
    const input = tone(300, 800, 8000);
    const whole = new a.Resampler(8000, 48000).process(input);
    const chunked = new a.Resampler(8000, 48000);
    const parts = [];
    for (let i = 0; i < input.length; i += 37) parts.push(...chunked.process(input.slice(i, i + 37)));
    return {
        encoded: Array.from(a.ulawEncode(samples)),
        decoded: Array.from(a.ulawDecode(Uint8Array.from({length: 256}, (_, i) => i))),
        inBand: down(1000),
        folded: down(6000),
        chunkingMatters: Math.abs(whole.length - parts.length) > 1
            || parts.some((v, i) => i < whole.length && Math.abs(v - whole[i]) > 1e-6),
    };
}"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("phone")
    # RECORDING=twilio: Twilio records the phone calls, and the gateway the browser's (no carrier has them).
    recordings = f"file://{tmp / 'recordings'}"
    env = {"RECORDING": "twilio", "RECORDINGS_URL": recordings}
    with gateway_serving(tmp, CONSOLE_PASSWORD=PASSWORD, CALLS_API_TOKEN=TOKEN, **env) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    microphone = caller_wav(tmp_path_factory.mktemp("microphone") / "caller.wav", CALLER)
    with chromium(microphone) as browser:
        yield browser


def signed_in(browser: Any, url: str) -> Any:
    """A fresh browser context signed in to the console (its session cookie set by the real sign-in)."""
    context = browser.new_context(base_url=url)
    response = context.request.post("/console/login", form={"password": PASSWORD}, max_redirects=0)
    assert response.status == 303, response.status
    return context


def number(page: Any, selector: str) -> int:
    return int(page.text_content(selector))


def place_call(page: Any, quality: str) -> str:
    page.goto("/console/phone")
    page.check(f"input[name=quality][value={quality}]")
    page.get_by_role("button", name="Call", exact=True).click()
    page.wait_for_selector("#phone[data-state=in-call]", timeout=15000)
    return page.text_content("#call-sid")


def talk_to_the_agent(page: Any) -> dict[str, Any]:
    """The call's story as the page shows it; returns what it measured."""
    # The greeting arrives before the caller says anything.
    page.wait_for_function(POSITIVE, arg="#frames-received", timeout=15000)
    # The caller talks over it: the gateway's barge-in clears the page's playout.
    page.wait_for_function(POSITIVE, arg="#clears", timeout=15000)
    # The caller's turn is transcribed (whatever the recognizer made of it) and the agent answers it: its
    # audio arrives after the caller's line, and its own line follows.
    page.wait_for_selector("#transcript li.caller ~ li.agent", timeout=15000)
    assert number(page, "#frames-received") > int(page.get_attribute("#clears", "data-frames-before"))
    page.wait_for_selector("#turns td[data-ms]", timeout=15000)
    assert number(page, "#frames-sent") > 100  # two seconds and more of microphone
    assert number(page, "#bytes-received") > 0 and number(page, "#bytes-sent") > 0
    return page.evaluate(
        """() => ({
            micToGateway: document.querySelector('#mic-to-gateway').dataset.ms,
            gatewayToSpeaker: document.querySelector('#gateway-to-speaker').dataset.ms,
            rtt: document.querySelector('#rtt').dataset.ms,
            turns: [...document.querySelectorAll('#turns tr')]
                .map(row => [...row.cells].map(cell => cell.dataset.ms)),
        })"""
    )


def hang_up(page: Any) -> str:
    page.get_by_role("button", name="Hang up", exact=True).click()
    page.wait_for_selector("#phone[data-state=ended]", timeout=10000)
    return page.text_content("#outcome")


def record_of(url: str, call_sid: str) -> dict[str, Any]:
    for _ in range(100):  # the record is written off the call's path, a moment after it ends
        response = httpx.get(f"{url}/calls/{call_sid}", headers=BEARER)
        if response.status_code == 200 and response.json()["ended_at"]:
            return response.json()
        asyncio.run(asyncio.sleep(0.1))
    raise AssertionError(f"no record of {call_sid}: {response.status_code} {response.text}")


@pytest.mark.parametrize("quality", ["phone", "wideband"])
def test_a_call_from_the_browser_reaches_the_agent_and_is_recorded(
    gateway: str, browser: Any, quality: str, capsys: pytest.CaptureFixture[str]
) -> None:
    context = signed_in(browser, gateway)
    page = context.new_page()
    errors: list[str] = []  # the page's own (a script the CSP refuses, say), and every failed load
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    try:
        call_sid = place_call(page, quality)
        assert call_sid.startswith("BR")
        measured = talk_to_the_agent(page)
        if quality == "phone":
            # A keypad button is a keypress to the agent (DTMF), which the local agent reads back; the page
            # acknowledges the marks after the agent's turns once it has played them.
            page.get_by_role("button", name="5", exact=True).click()
            page.wait_for_selector("#transcript li.agent:has-text('pressed 5')", timeout=15000)
            page.wait_for_function(POSITIVE, arg="#marks", timeout=15000)
            assert page.text_content("#digits") == "5"
        page.screenshot(path=str(artifacts_dir() / f"browser-phone-{quality}.png"), full_page=True)
        assert hang_up(page) == "caller_hung_up"
        # Once the call has ended nothing is muted or playing: the controls say so.
        assert (
            page.text_content("#mute") == "Mute"
            and page.eval_on_selector("#agent-level", "m => m.value") == 0
        )
    finally:
        context.close()
    assert errors == [], errors
    record = record_of(gateway, call_sid)
    assert record["carrier"] == "browser"
    assert record["outcome"] == "caller_hung_up"
    assert {line["role"] for line in record["transcript"]} == {"caller", "agent"}
    assert record["recording_url"]
    recording = httpx.get(f"{gateway}/calls/{call_sid}/recording", headers=BEARER)
    assert recording.status_code == 200 and len(recording.content) > 10000
    with capsys.disabled():
        print(
            f"\n[{quality}] microphone->gateway {measured['micToGateway']} ms, gateway->speaker "
            f"{measured['gatewayToSpeaker']} ms, round trip {measured['rtt']} ms; turns (gateway, heard in "
            f"the page) {measured['turns']}"
        )


def test_the_page_and_its_socket_need_the_console_session(gateway: str, browser: Any) -> None:
    context = browser.new_context(base_url=gateway)
    try:
        response = context.request.get("/console/phone", max_redirects=0)
        assert response.status == 303 and "/console/login" in response.headers["location"]
        assert context.request.get("/console/phone/static/phone.js").status == 403
        page = context.new_page()
        page.goto("/healthz")
        refused = page.evaluate(
            """() => new Promise(done => {
                const ws = new WebSocket(location.origin.replace('http', 'ws') + '/console/phone/ws');
                ws.onopen = () => done('open');
                ws.onclose = (event) => done('closed ' + event.code);
            })"""
        )
        assert refused == "closed 1006"  # the upgrade was answered 403: the page never had a socket
    finally:
        context.close()


def test_the_page_s_codec_and_resampler_are_the_gateway_s(gateway: str, browser: Any) -> None:
    """audio.js, run in the browser: its mu-law is bit-exact with the gateway's, and its resampler keeps
    what is in band, removes what would fold into it, and does not depend on how its input is chunked."""
    context = signed_in(browser, gateway)
    page = context.new_page()
    try:
        page.goto("/console/phone")
        result = page.evaluate(AUDIO_CHECK)
    finally:
        context.close()
    every_sample = np.arange(-32768, 32768, dtype="<i2").tobytes()
    assert bytes(result["encoded"]) == pcm16_to_ulaw(every_sample)
    assert np.array_equal(result["decoded"], np.frombuffer(ulaw_to_pcm16(bytes(range(256))), "<i2"))
    assert result["inBand"] > 0.3  # a 1 kHz tone of amplitude 0.5 (rms 0.35) goes through
    assert result["folded"] < 0.35 * 10 ** (-60 / 20)  # 6 kHz would fold to 2 kHz: 60 dB down at least
    assert not result["chunkingMatters"]
