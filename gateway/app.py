"""The web app: the voice webhook, the media WebSocket, health and metrics.

The lifespan owns what calls share: the settings, and the embedded local Live backend when no Gemini key or
Live URL is configured.

Admission (see gateway.admission): a media socket becomes a call, and takes a place in
`MAX_CONCURRENT_CALLS`, only once its `start` carries a valid stream token; until then it waits in the small
budget of unverified sockets. A webhook answers a CallSid once: asked again, it gives the same answer, or
refuses a replay. Every refusal is one log line (rate-limited) and a metric.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import hmac
import importlib
import os
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from urllib.parse import urlparse

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator, add_port, remove_port
from twilio.twiml.voice_response import VoiceResponse

from gateway import audio, dispatch, machine
from gateway.admission import Pacer, RefusalLog, UnverifiedStreams
from gateway.agents import Agent
from gateway.audio import resample_block
from gateway.browser.phone import routes as phone_routes
from gateway.call import Call, CallAgent, CallLimits, CallWatcher, Outcome, TranscriptObserver
from gateway.call.call import CallPreparer, OutboundRole
from gateway.call.line import Ended, Line, Started
from gateway.call.turns import TurnRules
from gateway.carriers import CallControl as CarrierControl
from gateway.carriers import Carrier, UpgradeRefusal, media_endpoint, media_url, more_carriers
from gateway.config import CONSOLE_PASSWORD_MIN, Settings
from gateway.console import pages as console_pages
from gateway.console.auth import ConsoleAuth, session_of
from gateway.console.live import LiveFeed
from gateway.drain import MOVED_QUERY, Drain
from gateway.live import protocol as lp
from gateway.live.session import LiveSession, LiveUnreachable
from gateway.live.vertex_auth import CredentialsError, VertexAuth
from gateway.logs import register_secret
from gateway.metrics import METRICS
from gateway.outbound.dialer import Outbound, Refused, plan_call
from gateway.prewarm import Prewarmer
from gateway.recording.notice import with_notice
from gateway.recording.recordings import RECORDING_CALLBACK_PATH, Recordings
from gateway.records import CallRecord, Records, StoreUnavailable
from gateway.records import register_secrets as register_database_secrets
from gateway.stream_tokens import PARAMETER as TOKEN_PARAMETER
from gateway.stream_tokens import Previous, StreamTokens, key_from_auth_token
from gateway.tools import Toolbox
from gateway.twilio.line import TwilioLine
from gateway.twilio.rest import CallControl

log = structlog.get_logger("gateway.app")

MEDIA_PATH = "/twilio/media"
# Why a media socket never became a call: the `reason` of its line and of gateway_admission_refused_total.
NO_START, EVICTED, CLOSED_BEFORE_START = "no_start", "evicted", "closed_before_start"
# A rejected signature is logged with the URL it was checked against: Twilio signs the exact URL it requested.
SIGNATURE_HINT = (
    "Twilio signed the URL the number points at: PUBLIC_URL must be its base (`gateway twilio numbers` shows "
    "it), and TWILIO_AUTH_TOKEN the account's"
)


# Modules a serving gateway needs and no other command does, imported as it starts (in a thread: together a
# second and a half, and about 65 MB). scipy.signal is out of every command's start (the resampler's taps
# ship designed), but a call can still need it: the spoken apology, a recording notice at another rate, a
# ratio whose taps do not ship. With several processes the supervisor imports them before it forks, so the
# workers share one copy (`gateway.server.share_with_workers`).
SERVING_MODULES = ("scipy.signal", "gateway.local_live.tts")


def import_for_serving() -> None:
    for name in SERVING_MODULES:
        importlib.import_module(name)


class Gateway:
    """Shared state of one running service."""

    def __init__(self, settings: Settings, on_transcript: TranscriptObserver | None = None) -> None:
        self.settings = settings
        self.records = Records.for_settings(settings)  # never on a call's path unbounded; may be down
        self._observer = on_transcript
        self.live_url = settings.live_url()
        self.calls: set[Call] = set()
        self.drain = Drain(settings, self.calls, self.records.save_handle)
        self.validator = RequestValidator(settings.twilio_auth_token) if settings.twilio_auth_token else None
        # Several processes on one port (WEB_CONCURRENCY) share a key, the redeemed tokens and the call limit.
        self.machine = machine.current()
        key = key_from_auth_token(settings.stream_token_secret)
        if self.machine is not None and not settings.stream_token_secret:
            key = self.machine.key  # development: a random key, but the same on every process
        self.tokens = StreamTokens(key, shared=self.machine)
        self.refusals = RefusalLog()
        self.pacer = Pacer()  # what unverified sockets cost: accepting one, refusing one
        self.unverified = UnverifiedStreams(settings.max_unverified_streams)
        self._stream_signatures: dict[str, tuple[str, ...]] = {}  # stream URL -> the signatures Twilio sends
        self.apology_pcm = b""  # 8 kHz; spoken when Live cannot be brought back, instead of dead air
        self.agents = settings.agent_book
        self.prewarm = Prewarmer(
            self.open_live, settings.prewarm_s, settings.prewarm_max_sessions, refusals=self.refusals
        )
        self.control: CallControl | None = None  # set in the lifespan when REST credentials are configured
        self.carriers: tuple[Carrier, ...] = (TWILIO, *more_carriers())
        self.controls: dict[str, CarrierControl] = {}  # the other carriers' REST clients, by carrier name
        self.toolbox = Toolbox()
        self.outbound = Outbound(settings.max_outbound_calls, self.machine)  # the calls this process placed
        # Set in the lifespan on Vertex AI (GEMINI_PLATFORM=vertex).
        self.vertex_auth: VertexAuth | None = None
        self.recordings = Recordings(settings, self.records)  # RECORDING: see gateway.recording
        # The console's live view: calls in progress, transcripts as they grow.
        self.live_feed = LiveFeed(self.machine.slot if self.machine is not None else 0)

    async def start_tools(self, stack: contextlib.AsyncExitStack) -> None:
        """The shared HTTP client for custom tools and the REST client for transfers, closed at shutdown."""
        settings = self.settings
        http = None
        if self.agents.uses_http_tools:
            import httpx

            http = await stack.enter_async_context(httpx.AsyncClient(follow_redirects=False))
        if settings.twilio_account_sid and settings.twilio_auth_token:
            self.control = CallControl(
                settings.twilio_account_sid, settings.twilio_auth_token, base_url=settings.twilio_api_base_url
            )
            stack.push_async_callback(self.control.close)
        for carrier in self.carriers:
            if carrier.name != TWILIO.name and (control := carrier.control(settings)) is not None:
                self.controls[carrier.name] = control
                stack.push_async_callback(control.close)
        # A line transfers through its own carrier's API: one without credentials answers the agent an error.
        can_transfer = self.control is not None or bool(self.controls)
        self.toolbox = Toolbox(http=http, secret=settings.tools_secret, can_transfer=can_transfer)
        stack.push_async_callback(self.prewarm.close)

    def prewarm_call(self, params: dict[str, str]) -> None:
        """While the phone rings: start setting up the Live session of the agent for the number called."""
        call_sid = params.get("CallSid", "")
        self.prewarm.start(call_sid, self.agent_for(call_sid, params.get("To", "")).live)

    def agent_for(self, call_sid: str, called: str) -> Agent:
        """The agent of a call: the one an outbound call was placed with, else the number called's."""
        plan = self.outbound.get(call_sid)
        return plan.agent if plan is not None else self.agents.for_number(called)

    async def prepare_call(self, start: Started, take_prewarmed: bool = True) -> CallAgent:
        """Once the line starts: the agent for the number called, with the session set up while it rang."""
        agent = self.agent_for(start.call_sid, start.called)
        live = None
        if take_prewarmed:
            live = await self.prewarm.take(start.call_sid, agent.live)
        else:
            self.prewarm.discard(start.call_sid, "resumed")
        return CallAgent(agent, self.toolbox, live)

    def outbound_status(self, params: dict[str, str]) -> None:
        """A status callback of an outbound call (placed here, or by another instance): into its record. A
        call that never connected ends here, with its status as its outcome (busy, no_answer, ...)."""
        call_sid, status = params.get("CallSid", ""), params.get("CallStatus", "")
        plan = self.outbound.status(call_sid, status)
        if not call_sid or (plan is None and not params.get("Direction", "").startswith("outbound")):
            return
        outcome = _NOT_CONNECTED.get(status, "")
        self.records.save(CallRecord(call_sid, direction="outbound", call_status=status, outcome=outcome))

    def on_transcript(self, call_sid: str, role: str, text: str) -> None:
        self.records.transcript(call_sid, role, text)
        self.live_feed.line(call_sid, role, text)
        if self._observer is not None:
            self._observer(call_sid, role, text)

    def call_ended(self, call: Call) -> None:
        self.calls.discard(call)
        if self.machine is not None:
            self.machine.publish(len(self.calls))
        # Only a verified stream becomes a Call (see `media`): a socket refused before has no record.
        summary = self.recordings.call_ended(call.line, call.summary())
        cost = self.settings.live_prices.cost_usd(
            summary.prompt_tokens, summary.response_tokens, summary.tokens_by_modality
        )
        METRICS.cost.inc(cost)
        self.records.call_ended(summary, cost_usd=cost)
        self.live_feed.ended(call.call_sid, summary.outcome.value)
        self.drain.call_ended()

    async def prepare_apology(self) -> None:
        """Synthesise the failure message once, offline (espeak-ng ships with the local backend)."""
        if not self.settings.failure_message:
            return
        from gateway.local_live.tts import synthesize

        self.apology_pcm = await asyncio.to_thread(
            synthesize,
            self.settings.failure_message,
            rate=8000,
            voice_name=self.settings.live.voice,
            language=self.settings.live.language,
        )
        self.drain.apology_s = len(self.apology_pcm) / 16000  # the drain plans for it to be heard whole

    async def apologise(self, call: Call) -> None:
        if self.apology_pcm:
            log.info("apologising_to_caller", outcome=call.stats.outcome.value)
            pcm = resample_block(self.apology_pcm, 8000, call.line.audio.out_rate)
            await call.play_and_wait(pcm, timeout_s=len(self.apology_pcm) / 16000 + 3.0)

    async def open_live(self, config: lp.LiveConfig, resumption_handle: str | None = None) -> LiveSession:
        began = time.monotonic()
        headers = None
        if self.vertex_auth is not None:
            try:
                headers = await self.vertex_auth.headers()
            except CredentialsError as exc:
                raise LiveUnreachable(str(exc)) from None
        session = await LiveSession.open(
            self.live_url,
            lp.build_setup(config, resumption_handle),
            api_key=None if self.vertex_auth is not None else self.settings.gemini_api_key,
            headers=headers,
            timeout_s=self.settings.live_setup_timeout_s,
        )
        resumed = "true" if resumption_handle else "false"
        METRICS.live_connect.labels(resumed=resumed).observe(time.monotonic() - began)  # successes only
        return session

    # --- URLs Twilio sees ---

    def public_base(self, conn: HTTPConnection) -> str:
        """PUBLIC_URL, or (development) the base URL the request came to."""
        if self.settings.public_url:
            return self.settings.public_url
        return f"{conn.url.scheme.replace('ws', 'http')}://{conn.url.netloc}"

    def routed(self, path: str) -> str:
        """`path`, routed to this process when several serve the port (gateway.dispatch): for the URLs of a
        call this process holds something of (its pre-warmed Live session, an outbound call's plan)."""
        return path if self.machine is None else dispatch.routed(path, self.machine.slot)

    def stream_url(self, conn: HTTPConnection) -> str:
        """Where Twilio streams the call: routed to this process, where its Live session is pre-warmed."""
        return media_url(self, conn, self.routed(MEDIA_PATH))

    def unsigned_ok(self, carrier: str, variable: str) -> bool:
        """A carrier whose signing secret (`variable`) is not set: its requests are taken unsigned in
        development (no carrier's secret set at all), and refused once any carrier's is (production)."""
        if self.settings.signs_requests:
            return False
        log.warning(f"{carrier}_signature_not_checked", note=f"development mode: {variable} is not set")
        return True

    def signature_ok(self, url: str, params: dict[str, str], signature: str | None) -> bool:
        if self.validator is None:
            return self.unsigned_ok("twilio", "TWILIO_AUTH_TOKEN")
        return bool(signature) and self.validator.validate(url, params, signature)

    def stream_signature_ok(self, conn: HTTPConnection) -> bool:
        """The media upgrade's signature. Twilio signs the stream URL with no parameters, so the signature is
        the same for every stream: it is computed once per URL, and each upgrade costs one comparison."""
        if self.validator is None:
            return self.unsigned_ok("twilio", "TWILIO_AUTH_TOKEN")
        # The URL Twilio requested (routed to a process or not) is the one it signed.
        url = media_url(self, conn, conn.url.path)
        accepted = self._stream_signatures.get(url)
        if accepted is None:
            if len(self._stream_signatures) >= 16:  # without PUBLIC_URL the host comes from the request
                self._stream_signatures.clear()
            parsed = urlparse(url)  # Twilio's validator accepts the URL with and without its port: so do we
            variants = (remove_port(parsed), add_port(parsed))
            accepted = tuple(self.validator.compute_signature(variant, {}) for variant in variants)
            self._stream_signatures[url] = accepted
        given = (conn.headers.get("x-twilio-signature") or "").encode()
        return any(hmac.compare_digest(given, signature.encode()) for signature in accepted)

    # --- admission ---

    def at_capacity(self, call_sid: str = "") -> bool:
        """Calls in progress plus calls answered whose stream is on its way, against the limit. On one of
        several processes, the machine's: a place is then held for `call_sid` at once, or the answer is no."""
        if self.machine is not None:
            now = self.tokens.now()
            limit = self.settings.max_concurrent_calls
            return not self.machine.reserve(call_sid, now + self.tokens.pending_s, now, limit)
        return len(self.calls) + self.tokens.outstanding() >= self.settings.max_concurrent_calls

    def calls_in_progress(self) -> int:
        """This process's calls, or the machine's on one of several processes."""
        return self.machine.calls() if self.machine is not None else len(self.calls)

    def admit_stream(self, start: Started) -> tuple[str, str] | None:
        """Why this stream is refused, as (reason, detail), or None: it becomes a call. Checked before any
        Live session is opened; unverified sockets hold no place among the calls, so the limit is checked
        here (a stream for a token another instance issued may find this one full)."""
        refusal = self.tokens.redeem(start.call_sid, start.parameters.get(TOKEN_PARAMETER))
        if refusal is not None:
            return "token", refusal
        limit = self.settings.max_concurrent_calls
        if self.machine is not None:  # the machine's calls; the call is counted at once if it is admitted
            if not self.machine.start_call(start.call_sid, len(self.calls), limit):
                return "at_capacity", "the machine is at MAX_CONCURRENT_CALLS"
        elif len(self.calls) >= limit:
            return "at_capacity", "the gateway is at MAX_CONCURRENT_CALLS"
        return None

    def admit_call(self, start: Started) -> str | None:
        """Why a call on a line without a stream token (the browser's: the console session is its
        credential) is refused, or None: it becomes a call. The same limit as any call's, counting the calls
        answered whose stream is on its way; none while this instance drains."""
        if self.drain.active:
            return "this instance is shutting down: call again"
        if self.at_capacity(start.call_sid):
            return "the gateway is at MAX_CONCURRENT_CALLS"
        limit = self.settings.max_concurrent_calls
        if self.machine is not None and not self.machine.start_call(start.call_sid, len(self.calls), limit):
            return "the machine is at MAX_CONCURRENT_CALLS"
        return None

    async def receive_start(self, ws: WebSocket, line: Line) -> Started | str:
        """Accept a media socket and read its `start`, holding a place among the unverified sockets meanwhile
        (never one among the calls). Returns the `start`, or why it never came: NO_START (the deadline
        passed), EVICTED (its place went to a newer socket), CLOSED_BEFORE_START (the peer left)."""
        place, _evicted = self.unverified.enter()
        try:
            try:
                await ws.accept()
            except Exception:  # the peer left during the handshake
                return CLOSED_BEFORE_START
            async with asyncio.timeout(self.settings.start_timeout_s) as deadline:
                place.waiting(deadline)
                while True:
                    event = await line.receive()
                    if isinstance(event, Started):
                        return event
                    if isinstance(event, Ended):
                        return CLOSED_BEFORE_START
                    # media, marks, keys before `start`: nobody to give them to yet
        except TimeoutError:
            return EVICTED if place.evicted else NO_START
        finally:
            self.unverified.leave(place)

    async def refuse_stream(self, ws: WebSocket, line: Line, reason: str, detail: str = "") -> None:
        """Close a media socket that did not become a call, with one log line (and a metric)."""
        await self.pacer.turn()
        settings = self.settings
        METRICS.calls.labels(outcome=_OUTCOMES.get(reason, Outcome.REFUSED).value).inc()
        if reason == NO_START:
            self.refusals.refused("stream", reason, "no_start_event", timeout_s=settings.start_timeout_s)
            await line.close()
        elif reason == EVICTED:
            self.refusals.refused(
                "stream", reason, "stream_evicted", max_unverified=settings.max_unverified_streams
            )
            await _close(ws, 1013, "too many streams waiting for start")  # try again later
        elif reason == CLOSED_BEFORE_START:
            self.refusals.refused("stream", reason, "stream_closed_before_start")
            await line.close()
        else:
            self.refusals.refused("stream", reason, "stream_refused", detail=detail)
            await line.close(detail)

    async def refuse_upgrade(
        self, ws: WebSocket, reason: str, event: str, entry: str = "stream", **fields: object
    ) -> None:
        """Refuse a media upgrade before accepting it: HTTP 403, one log line, nothing else spent."""
        await self.pacer.turn()
        self.refusals.refused(entry, reason, event, **fields)
        await ws.close(code=1008)

    async def run_call(self, line: Line, start: Started, watcher: CallWatcher | None = None) -> Call:
        """Carry one admitted call on `line` (any carrier's, the browser's) until it ends; record it. A
        `watcher` follows it as it goes (the browser softphone's page)."""
        settings = self.settings
        plan = self.outbound.get(start.call_sid)  # placed by this instance: waits for the callee
        line, prepare, role = await self.recorded(line, start, plan.role if plan is not None else None)
        call = Call(
            line,
            start,
            self.open_live,
            settings.live,
            greeting=settings.greeting,
            input_rate=settings.live_input_rate,
            limits=CallLimits(
                idle_timeout_s=settings.media_idle_timeout_s,
                live_setup_s=settings.live_setup_timeout_s,
                live_stall_s=settings.live_stall_s,
                max_duration_s=settings.max_call_duration_s,
                quiet_chunk_ms=settings.live_quiet_chunk_ms,
                speech_chunk_ms=settings.live_speech_chunk_ms,
            ),
            turns=TurnRules(barge_in=settings.barge_in, stall_timeout_s=settings.stall_timeout_s),
            on_transcript=self.on_transcript,
            on_failure=self.apologise,
            prepare=prepare,
            resume=self.records.resumption_handle,
            outbound=role,
            watcher=watcher,
        )
        if plan is not None and plan.amd is not None:  # Twilio's AMD result came before the stream
            call.answered_by(*plan.amd)
        self.calls.add(call)
        self.live_feed.started(start.call_sid, start.caller, start.called, start.carrier)
        try:
            await call.run()
        finally:
            self.call_ended(call)
        return call

    async def recorded(
        self, line: Line, start: Started, role: OutboundRole | None
    ) -> tuple[Line, CallPreparer, OutboundRole | None]:
        """A recorded call's line, and its notice (see gateway.recording): this instance's recording part
        when the gateway records; the notice before the agent speaks when anyone does, unless the call was
        moved here by a drain (it was told already)."""
        mode = self.recordings.mode_for(self.agent_for(start.call_sid, start.called).recording)
        if mode == "twilio" and start.carrier == "browser":
            mode = "gateway"  # no carrier carries a browser call: only the gateway can record it
        if mode == "gateway":
            line = self.recordings.record(line, start, datetime.now(UTC))
        notice = self.recordings.notice_text()
        if mode == "off" or start.moved:
            return line, self.prepare_call, role
        if pcm := self.recordings.notice_audio(line.audio.out_rate):
            await line.play(pcm)  # queued first: the agent's first words follow it on the line
            return line, self.prepare_call, role
        if not notice:
            return line, self.prepare_call, role
        if role is not None:  # an outbound call: said to whoever answers, before the opening
            opening = f"{notice} {role.opening}".strip()
            return line, self.prepare_call, dataclasses.replace(role, opening=opening)

        async def prepare(start: Started, take_prewarmed: bool = True) -> CallAgent:
            chosen = await self.prepare_call(start, take_prewarmed)
            agent = dataclasses.replace(chosen.agent, greeting=with_notice(notice, chosen.agent.greeting))
            return dataclasses.replace(chosen, agent=agent)

        return line, prepare, role

    def refuse_again(self, call_sid: str, previous: Previous) -> Response:
        """A CallSid this instance answered before, and whose answer cannot lead to a call any more: a replay
        (its token was used, or has expired) is refused; a call refused busy is refused again."""
        if previous.state == "busy":
            self.refusals.refused("webhook", "busy", "call_rejected_busy", call_sid=call_sid, repeated=True)
            response = VoiceResponse()
            response.reject(reason="busy")
            return Response(str(response), media_type="application/xml")
        self.refusals.refused(
            "webhook", "replayed", "webhook_replay_refused", call_sid=call_sid, state=previous.state
        )
        return Response("this call was answered already", status_code=409)


_OUTCOMES = {NO_START: Outcome.NO_START, CLOSED_BEFORE_START: Outcome.CLOSED_BEFORE_START}
# Twilio's final statuses of an outbound call that never connected, and the outcome its record says.
_NOT_CONNECTED = {"busy": "busy", "no-answer": "no_answer", "failed": "failed", "canceled": "canceled"}


def _gateway(conn: HTTPConnection) -> Gateway:
    return conn.app.state.gateway


async def _close(ws: WebSocket, code: int, reason: str) -> None:
    """Close an accepted socket, giving up on a peer that does not read (the keepalive then drops it)."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(10.0):
            await ws.close(code=code, reason=reason)


async def voice(request: Request) -> Response:
    """Twilio's voice webhook: answer TwiML that streams the call to us, then hangs up when we close."""
    gw = _gateway(request)
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    url = gw.public_base(request) + request.url.path + (f"?{request.url.query}" if request.url.query else "")
    if not gw.signature_ok(url, params, request.headers.get("X-Twilio-Signature")):
        gw.refusals.refused(
            "webhook",
            "signature",
            "webhook_signature_rejected",
            path=request.url.path,
            url=url,
            hint=SIGNATURE_HINT,
        )
        return Response("invalid signature", status_code=403)
    call_sid = params.get("CallSid", "")
    if gw.drain.active:  # this instance is shutting down: the call goes to another one
        log.info("call_sent_elsewhere", call_sid=call_sid, reason="draining")
        return Response(gw.drain.fallback_twiml(gw.public_base(request)), media_type="application/xml")
    if not call_sid:
        return Response("CallSid is required", status_code=400)
    moved = request.query_params.get(MOVED_QUERY) == "1"  # a drain sent it here: it resumes its session
    # One CallSid, one answer: Twilio's signature has no timestamp, so a captured webhook can be replayed.
    previous = gw.tokens.previous(call_sid)
    if moved and previous is not None and previous.state in ("used", "expired") and not previous.moved:
        # Answered here before, its stream went to another instance, and that one moved it here: once.
        previous = None
    if previous is not None and previous.state != "waiting":
        return gw.refuse_again(call_sid, previous)
    response = VoiceResponse()
    if previous is None and gw.at_capacity(call_sid):
        # Refusing before answering: the caller hears a busy tone and the call costs nothing.
        gw.tokens.answered_busy(call_sid)
        max_calls = gw.settings.max_concurrent_calls
        gw.refusals.refused("webhook", "busy", "call_rejected_busy", call_sid=call_sid, max_calls=max_calls)
        response.reject(reason="busy")
        return Response(str(response), media_type="application/xml")
    recording = gw.recordings.mode_for(gw.agent_for(call_sid, params.get("To", "")).recording)
    if recording == "twilio" and not moved:
        # RECORDING=twilio: Twilio records the whole call (not the stream), so a call a drain moves keeps one
        # recording and is not started again; its status callback brings the URL to the record.
        response.start().recording(
            channels="dual",
            recording_status_callback=gw.public_base(request).rstrip("/") + RECORDING_CALLBACK_PATH,
            recording_status_callback_event="completed absent",
        )
    stream = response.connect().stream(url=gw.stream_url(request))
    # Per-call values travel as <Parameter>s: Twilio forbids a query string on the stream URL.
    for name in ("From", "To"):
        if params.get(name):
            stream.parameter(name=name, value=params[name][:200])
    token = previous.token if previous else gw.tokens.issue(call_sid, moved=moved)
    stream.parameter(name=TOKEN_PARAMETER, value=token)
    if moved:
        stream.parameter(name=MOVED_QUERY, value="1")
    response.hangup()
    if previous is not None:  # asked again while its stream is on the way (a retry): the same answer
        gw.refusals.refused("webhook", "repeated", "webhook_repeated", call_sid=call_sid)
        return Response(str(response), media_type="application/xml")
    if not moved:  # a moved call resumes its own session: one set up now would not know the conversation
        gw.prewarm_call(params)
    log.info("call_answered", call_sid=call_sid)
    return Response(str(response), media_type="application/xml")


async def status(request: Request) -> Response:
    gw = _gateway(request)
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    url = gw.public_base(request) + request.url.path
    if not gw.signature_ok(url, params, request.headers.get("X-Twilio-Signature")):
        log.warning("status_signature_rejected", url=url, hint=SIGNATURE_HINT)
        return Response("invalid signature", status_code=403)
    log.info(
        "call_status",
        call_sid=params.get("CallSid", ""),
        status=params.get("CallStatus", ""),
        stream_event=params.get("StreamEvent", ""),
    )
    gw.outbound_status(params)
    return Response(status_code=204)


def twilio_upgrade_refusal(gw: Gateway, ws: WebSocket) -> UpgradeRefusal | None:
    """Twilio signs the media upgrade (X-Twilio-Signature over the stream URL): unsigned, it is refused."""
    if gw.stream_signature_ok(ws):
        return None
    fields = {"url": gw.stream_url(ws), "hint": SIGNATURE_HINT}
    return UpgradeRefusal("signature", "stream_signature_rejected", fields)


async def healthz(request: Request) -> Response:
    gw = _gateway(request)
    if gw.drain.active:  # readiness fails, so load balancers stop sending calls here
        return JSONResponse({"status": "draining", **_load(gw)}, status_code=503)
    if (records := gw.records.health()) is not None:  # still 200: calls are carried without the database
        return JSONResponse({"status": "degraded", **_load(gw), "records": records})
    return JSONResponse({"status": "ok", **_load(gw)})


def _load(gw: Gateway) -> dict[str, int]:
    """The calls in progress: the machine's, and which process answered, when several serve the port."""
    if gw.machine is None:
        return {"active_calls": len(gw.calls)}
    return {"active_calls": gw.calls_in_progress(), "process": gw.machine.slot}


def _api_refusal(gw: Gateway, request: Request, what: str) -> Response | None:
    """The answer to a calls API request without the CALLS_API_TOKEN bearer token; None when it has it. A
    GET (reading a record, a recording) also takes a signed-in console session."""
    if request.method == "GET" and session_of(request) is not None:
        return None
    token = gw.settings.calls_api_token
    if not token:
        return JSONResponse({"error": f"set CALLS_API_TOKEN to {what} over HTTP"}, status_code=403)
    given = request.headers.get("authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        return JSONResponse(
            {"error": "bearer token required"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    return None


async def call_record(request: Request) -> Response:
    """One call's record and transcript, for whoever holds CALLS_API_TOKEN."""
    gw = _gateway(request)
    if (refusal := _api_refusal(gw, request, "read call records")) is not None:
        return refusal
    try:
        record = await gw.records.get_call(request.path_params["sid"])
    except (StoreUnavailable, TimeoutError):
        return JSONResponse(
            {"error": "the records database is unavailable; records are kept and written when it is back"},
            status_code=503,
            headers={"Retry-After": "10"},
        )
    if record is None or record.started_at is None:
        return JSONResponse({"error": "no such call"}, status_code=404)
    return JSONResponse(record.public())


async def place_call(request: Request) -> Response:
    """`POST /calls`: the agent calls someone (see gateway.outbound). 201 with the CallSid once Twilio has
    taken the call; every refusal says why, and nothing is dialled."""
    gw = _gateway(request)
    if (refusal := _api_refusal(gw, request, "place calls")) is not None:
        return refusal
    settings = gw.settings

    def refused(status: int, reason: str, **headers: str) -> Response:
        log.info("call_not_placed", status=status, why=reason)
        METRICS.outbound_calls.labels(result=str(status)).inc()
        return JSONResponse({"error": reason}, status_code=status, headers=headers or None)

    if gw.drain.active:
        return refused(503, "this instance is shutting down: place the call again", **{"Retry-After": "5"})
    if gw.control is None or not settings.public_url:
        return refused(
            503,
            "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN (Twilio's REST API) and PUBLIC_URL "
            "(where Twilio fetches the call's webhook)",
        )
    try:
        body = await request.json()
    except ValueError:
        return refused(400, "the body must be JSON")
    try:
        plan = plan_call(
            body,
            gw.agents,
            from_number=settings.twilio_from_number,
            countries=settings.outbound_countries,
            amd_timeout_s=settings.amd_timeout_s,
        )
    except Refused as exc:
        return refused(exc.status, exc.reason)
    if not gw.outbound.dial(time.monotonic()):
        return refused(
            429,
            f"MAX_OUTBOUND_CALLS ({settings.max_outbound_calls}) outbound calls are in progress",
            **{"Retry-After": "5"},
        )
    call_sid = None
    try:
        # With several processes, Twilio's requests for the call (its webhook, and so its stream; its status
        # and machine-detection callbacks) are routed back to this process, which holds the call's plan.
        call_sid = await gw.control.create(
            plan.to, plan.from_, settings.public_url, amd_timeout_s=settings.amd_timeout_s, route=gw.routed
        )
    except TwilioRestException as exc:  # Twilio refused it: a number the account may not call, say
        status = 502 if (exc.status or 500) >= 500 else 422
        return refused(status, f"Twilio refused the call ({exc.code}): {exc.msg}")
    except Exception as exc:  # network: nothing is known to have been dialled
        return refused(502, f"Twilio's API could not be reached: {type(exc).__name__}")
    finally:
        gw.outbound.dial_ended(plan, call_sid, time.monotonic())
    gw.records.save(
        CallRecord(
            call_sid,
            from_number=plan.from_,
            to_number=plan.to,
            agent=plan.agent.live.model,
            started_at=datetime.now(UTC),
            direction="outbound",
            call_status="queued",
            campaign=plan.campaign,
        )
    )
    log.info("call_placed", call_sid=call_sid, to=plan.to, agent=plan.agent.name, machine=plan.role.machine)
    METRICS.outbound_calls.labels(result="placed").inc()
    return JSONResponse(
        {
            "call_sid": call_sid,
            "to": plan.to,
            "from": plan.from_,
            "agent": plan.agent.name,
            "machine": plan.role.machine,
            "status": "queued",
        },
        status_code=201,
    )


async def amd_result(request: Request) -> Response:
    """Twilio's asynchronous answering-machine detection result for an outbound call (signed like the
    webhook): told to the call, or kept for it if its stream has not started yet."""
    gw = _gateway(request)
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    url = gw.public_base(request) + request.url.path
    if not gw.signature_ok(url, params, request.headers.get("X-Twilio-Signature")):
        gw.refusals.refused("amd", "signature", "amd_signature_rejected", url=url, hint=SIGNATURE_HINT)
        return Response("invalid signature", status_code=403)
    call_sid, answered_by = params.get("CallSid", ""), params.get("AnsweredBy", "")
    if not call_sid or not answered_by:
        return Response("CallSid and AnsweredBy are required", status_code=400)
    duration = params.get("MachineDetectionDuration", "")
    duration_ms = int(duration) if duration.isdigit() else None
    call = next((c for c in gw.calls if c.call_sid == call_sid), None)
    plan = gw.outbound.get(call_sid)
    if call is not None:
        call.answered_by(answered_by, duration_ms)
    elif plan is not None:
        plan.amd = (answered_by, duration_ms)
    log.info(
        "amd_result", call_sid=call_sid, answered_by=answered_by, duration_ms=duration_ms, known=call or plan
    )
    return Response(status_code=204)


async def call_recording(request: Request) -> Response:
    """`GET /calls/{sid}/recording[?part=N]`: a call's recording in its stored format, for whoever may read
    call records (see gateway.recording.recordings)."""
    gw = _gateway(request)
    if (refusal := _api_refusal(gw, request, "listen to recordings")) is not None:
        return refusal
    return await gw.recordings.response(request.path_params["sid"], request.query_params.get("part"))


async def recording_status(request: Request) -> Response:
    """Twilio's recording status callback (RECORDING=twilio), signed like the webhook: the recording's URL
    and duration go to the call's record."""
    gw = _gateway(request)
    form = await request.form()
    params = {k: str(v) for k, v in form.items()}
    url = gw.public_base(request) + request.url.path
    if not gw.signature_ok(url, params, request.headers.get("X-Twilio-Signature")):
        gw.refusals.refused(
            "recording", "signature", "recording_signature_rejected", url=url, hint=SIGNATURE_HINT
        )
        return Response("invalid signature", status_code=403)
    call_sid, status = params.get("CallSid", ""), params.get("RecordingStatus", "")
    media, duration = params.get("RecordingUrl", ""), params.get("RecordingDuration", "")
    if not call_sid or not status:
        return Response("CallSid and RecordingStatus are required", status_code=400)
    log.info("recording_status", call_sid=call_sid, status=status, recording=params.get("RecordingSid", ""))
    if status == "completed" and media.startswith("https://"):
        seconds = float(duration) if duration.isdigit() else None
        gw.records.save(CallRecord(call_sid, recording_url=media, recording_s=seconds, recording_parts=1))
    return Response(status_code=204)


TWILIO = Carrier(
    name="twilio",
    answer_path="/twilio/voice",
    answer=voice,
    media_path=MEDIA_PATH,
    line=lambda ws, gw: TwilioLine(ws, gw.control),
    upgrade_refusal=twilio_upgrade_refusal,
    routes=(
        Route("/twilio/status", status, methods=["POST"]),
        Route("/twilio/amd", amd_result, methods=["POST"]),
    ),
)
media = media_endpoint(TWILIO)  # one Media Streams WebSocket: a Call once its `start` carries a valid token


async def metrics(request: Request) -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # several processes: every process's metrics, added up
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, on_transcript: TranscriptObserver | None = None) -> Starlette:
    gateway = Gateway(settings, on_transcript)
    register_secret(settings.gemini_api_key)
    register_secret(settings.twilio_auth_token)
    register_secret(settings.calls_api_token)
    register_database_secrets(settings.database_url)
    register_secret(settings.tools_secret)
    register_secret(settings.console_password)
    for secret in settings.carrier_secrets:
        register_secret(secret)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.gateway = gateway
        async with contextlib.AsyncExitStack() as stack:
            await gateway.records.start()  # bounded; a database that is away leaves the service degraded
            stack.push_async_callback(gateway.records.stop)
            await gateway.recordings.start(stack, settings)
            if settings.uses_local_backend:
                from gateway.local_live import LocalLiveServer

                server = await stack.enter_async_context(LocalLiveServer())
                gateway.live_url = server.url()
                log.info(
                    "using_local_live_backend",
                    url=gateway.live_url,
                    note="no GEMINI_API_KEY or GEMINI_LIVE_URL: calls talk to the offline local agent",
                )
            await asyncio.to_thread(import_for_serving)
            await gateway.prepare_apology()
            await gateway.start_tools(stack)
            if settings.live.platform == "vertex":
                gateway.vertex_auth = VertexAuth.load(settings.google_credentials_file)
                stack.push_async_callback(gateway.vertex_auth.close)
                log.info(
                    "using_vertex_ai",
                    project=settings.live.project,
                    location=settings.live.location,
                    credentials="key file" if settings.google_credentials_file else "google-auth default",
                )
                if settings.gemini_api_key:
                    log.warning(
                        "gemini_api_key_ignored",
                        note="GEMINI_PLATFORM=vertex authenticates with Google credentials: the Developer API"
                        " key is never sent; unset GEMINI_API_KEY",
                    )
            if "transfer_call" in {t for a in gateway.agents.by_number.values() for t in a.tools}:
                if gateway.control is None and not gateway.controls:
                    log.warning(
                        "transfers_unavailable",
                        note="no carrier's REST credentials are set (TWILIO_ACCOUNT_SID and "
                        "TWILIO_AUTH_TOKEN, TELNYX_API_KEY, ...): transfer_call answers an error the agent "
                        "can tell the caller",
                    )
            caps = settings.live.caps
            if not caps.known:
                log.warning(
                    "unknown_model",
                    model=settings.live.model,
                    note="not in the capability table: sending the configured fields as they are",
                )
            if not settings.signs_requests:
                log.warning(
                    "development_mode",
                    note="no carrier's signing secret is set (TWILIO_AUTH_TOKEN, TELNYX_PUBLIC_KEY, ...): "
                    "signatures are NOT checked, anyone who can reach this service can place calls through "
                    "it; never run it like this in production",
                )
            if settings.signs_requests and not settings.stream_token_secret:
                log.warning(
                    "stream_tokens_per_instance",
                    note="no carrier secret to key stream tokens with (TWILIO_AUTH_TOKEN, TELNYX_API_KEY or "
                    "SIGNALWIRE_SIGNING_KEY): a stream that reaches another instance than its webhook's is "
                    "refused",
                )
            if not audio.COMPILED_FIR:
                log.warning(
                    "resampler_not_compiled",
                    note="gateway/_fir.c was not built (no C compiler at install): calls resample in numpy, "
                    "the same audio for about a third more CPU per call; install gcc and reinstall",
                )
            stack.callback(gateway.refusals.close)
            stack.callback(gateway.live_feed.close)
            stack.push_async_callback(gateway.live_feed.aclose)
            log.info("gateway_ready", live_url=gateway.live_url, model=settings.live.model)
            # What start-up built (modules, the local backend's models, the agents) lives as long as the
            # process: out of the collector's sight, a full collection scans only what calls and sockets
            # made since, in milliseconds instead of a pause of 100 ms and more that stalls every call's
            # audio (a burst of refused sockets, whose objects are freed only by the collector, brings one).
            gc.freeze()
            stack.callback(gc.unfreeze)
            yield

    app = Starlette(
        routes=[
            *(route for carrier in gateway.carriers for route in carrier.all_routes()),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/calls/{sid}", call_record, methods=["GET"]),
            Route("/calls", place_call, methods=["POST"]),
            *console_pages.routes(),
            *phone_routes(),
            Route("/calls/{sid}/recording", call_recording, methods=["GET"]),
            Route(RECORDING_CALLBACK_PATH, recording_status, methods=["POST"]),
        ],
        lifespan=lifespan,
    )
    app.state.gateway = gateway  # before start-up too: the server's drain needs it
    if settings.console_secret:  # else the console is off (404)
        secure = (settings.public_url or "").startswith("https://")
        shared = gateway.machine.console_tables if gateway.machine is not None else None
        app.state.console_auth = ConsoleAuth(settings.console_secret, secure_cookie=secure, tables=shared)
    else:
        short = " (CALLS_API_TOKEN is too short to sign in to it)" if settings.calls_api_token else ""
        note = f"set CONSOLE_PASSWORD ({CONSOLE_PASSWORD_MIN} characters or more) to turn /console on{short}"
        log.info("console_off", note=note)
    return app
