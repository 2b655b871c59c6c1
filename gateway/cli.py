"""The `gateway` command: serve, calls, twilio, telnyx, signalwire, vonage, plivo, live-local, call, load,
live-scripted, dial, campaign, demo."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable

import structlog

from gateway.config import ConfigError, load_database_url, load_settings
from gateway.logs import configure_logging


def _metrics_for_processes() -> None:
    """Several gateway processes (WEB_CONCURRENCY): Prometheus's multiprocess mode, every process's metrics
    added up at /metrics, in PROMETHEUS_MULTIPROC_DIR (a fresh temporary directory unless it is set; a set one
    is emptied of the previous run's files, as the client's documentation asks)."""
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        made = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
        atexit.register(shutil.rmtree, made, ignore_errors=True)  # at the supervisor's exit, not a worker's
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    for old in Path(directory).glob("*.db"):
        old.unlink(missing_ok=True)


def _whole(text: str) -> int:
    """An argparse argument that must be a whole number."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _port(text: str) -> int:
    """argparse type of --port: a TCP port, refused otherwise (an int is taken modulo 65536 by the OS)."""
    port = _whole(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a TCP port: use 1 to 65535")
    return port


def _positive(text: str) -> int:
    """argparse type of a count: a whole number of at least 1."""
    value = _whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a count: use 1 or more")
    return value


def _serve(args: argparse.Namespace) -> int:
    from gateway.server import PortUnavailable, serve_forever

    settings = load_settings()
    configure_logging(settings.log_format, settings.log_level, show_pii=settings.log_pii)
    log = structlog.get_logger("gateway")
    if settings.log_pii:
        log.warning(
            "personal_data_in_logs", note="LOG_PII=true: callers' numbers and keys pressed are in the logs"
        )
    if settings.twilio_auth_token and not settings.public_url:
        # Not an error: a Heroku button deploys with PUBLIC_URL empty, since the app's URL exists only after.
        log.warning(
            "public_url_not_set",
            note="TWILIO_AUTH_TOKEN is set but PUBLIC_URL is not: Twilio's signatures are checked against "
            "the URL each request arrived at (its Host and X-Forwarded-Proto), which is what Twilio signed "
            "only if every proxy in front passes both on unchanged, and calls cannot be moved to another "
            "instance at shutdown; set PUBLIC_URL to the https:// base URL the number's webhook points at",
        )
    try:
        serve_forever(settings, args.host, args.port or settings.port)
    except PortUnavailable as exc:
        hint = " (another process there? set PORT or --port)" if exc.in_use else ""
        print(f"gateway serve: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


def _calls(args: argparse.Namespace) -> int:
    from gateway.records import RecordsUnreadable, list_calls_command, parse_since, register_secrets

    database_url = load_database_url()  # only what it reads: a bad PORT or model is not its business
    register_secrets(database_url)
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    try:
        listing = asyncio.run(list_calls_command(database_url, since, args.limit, args.json))
    except RecordsUnreadable as exc:  # no database there, or it does not answer: one line, no traceback
        print(f"gateway: {exc}", file=sys.stderr)
        return 1
    try:
        print(listing, flush=True)
    except BrokenPipeError:  # `gateway calls --json | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 141
    return 0


def _admin_command(
    run: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    operator_errors: tuple[type[Exception], ...],
    api_error: type[Exception],
    say: Callable[[Exception], str] = str,
) -> int:
    """A carrier's `configure` command: one line on stderr for what went wrong, exit 2 for what the
    operator fixes (a setting, a number the account lacks), 1 for what the carrier's API answered."""
    try:
        return run(args)
    except operator_errors as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        return 2
    except api_error as exc:
        print(f"gateway: {say(exc)}", file=sys.stderr)
        return 1


def _telnyx(args: argparse.Namespace) -> int:
    from gateway.telnyx.admin import TelnyxAdminError, TelnyxApiError, run_telnyx_command

    return _admin_command(run_telnyx_command, args, (TelnyxAdminError, ValueError), TelnyxApiError)


def _signalwire(args: argparse.Namespace) -> int:
    from gateway.signalwire.admin import run_signalwire_command
    from gateway.twilio.admin import AdminError, TwilioApiError

    # SignalWire's Compatibility API answers as Twilio's does, and Twilio's errors say "Twilio".
    def say(exc: Exception) -> str:
        return str(exc).replace("Twilio", "SignalWire")

    return _admin_command(run_signalwire_command, args, (AdminError, ValueError), TwilioApiError, say)


def _vonage(args: argparse.Namespace) -> int:
    from gateway.vonage.admin import AdminError, VonageApiError, run_vonage_command

    return _admin_command(run_vonage_command, args, (AdminError,), VonageApiError)


def _plivo(args: argparse.Namespace) -> int:
    from gateway.plivo.admin import AdminError, PlivoApiError, run_plivo_command

    return _admin_command(run_plivo_command, args, (AdminError,), PlivoApiError)


def _twilio(args: argparse.Namespace) -> int:
    from gateway.twilio.admin import AdminError, TwilioApiError, run_twilio_command

    return _admin_command(run_twilio_command, args, (AdminError,), TwilioApiError)


def _live_local(args: argparse.Namespace) -> int:
    from gateway.local_live import LocalLiveOptions, run_local_live

    configure_logging(args.log_format, "info")
    options = LocalLiveOptions(goaway_after_s=args.goaway_after)
    run_local_live(args.host, args.port, options)
    return 0


def _call(args: argparse.Namespace) -> int:
    from gateway.devtools.simulator import run_call_command

    configure_logging(args.log_format, "warning")
    return asyncio.run(run_call_command(args))


def _demo(args: argparse.Namespace) -> int:
    from gateway.devtools.demo import run_demo

    # The demo serves on free loopback ports: a PORT meant for `gateway serve` (even a bad one, in the
    # environment or .env) is not its business. Empty here means "the default" to every settings read.
    os.environ["PORT"] = ""
    configure_logging(args.log_format, "warning")
    return asyncio.run(run_demo(args))


def _load(args: argparse.Namespace) -> int:
    from gateway.devtools.load import run_load_command

    configure_logging(args.log_format, "warning")
    return run_load_command(args)


def _live_scripted(args: argparse.Namespace) -> int:
    from gateway.devtools.load import _run
    from gateway.devtools.scripted_peer import options_from_args, run_scripted_peer

    configure_logging(args.log_format, "warning")
    _run(run_scripted_peer(args.host, args.port, options_from_args(args)))
    return 0


def _dial(args: argparse.Namespace) -> int:
    if args.simulate:
        from gateway.devtools.dial import run_dial_simulation

        os.environ["PORT"] = ""  # as the demo: it serves on free loopback ports
        configure_logging(args.log_format, "warning")
        return asyncio.run(run_dial_simulation(args))
    from gateway.outbound.client import run_dial

    return asyncio.run(run_dial(args))


def _campaign(args: argparse.Namespace) -> int:
    from gateway.outbound.campaign_run import run_campaign_command

    configure_logging(args.log_format, "warning")
    return asyncio.run(run_campaign_command(args, load_database_url()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gateway", description="Twilio Media Streams <-> Gemini Live gateway"
    )
    parser.add_argument(
        "--log-format",
        choices=["auto", "json", "console"],
        default="auto",
        help="every command's but serve's (serve reads LOG_FORMAT); before the command",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (uvicorn) on $PORT")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=_port, default=None, help="default: $PORT or 8080")
    serve.set_defaults(func=_serve)

    calls = sub.add_parser("calls", help="list call records from the database (DATABASE_URL)")
    calls.add_argument("--since", metavar="WHEN", help="90m, 2h, 7d, or an ISO date/time in UTC")
    calls.add_argument("--limit", type=_positive, default=100, help="at most this many (default 100)")
    calls.add_argument("--json", action="store_true", help="records as JSON")
    calls.set_defaults(func=_calls)

    twilio = sub.add_parser("twilio", help="point Twilio numbers at this service (REST API)")
    from gateway.twilio.admin import add_twilio_arguments

    add_twilio_arguments(twilio)
    twilio.set_defaults(func=_twilio)

    telnyx = sub.add_parser("telnyx", help="point Telnyx numbers at this service (REST API)")
    from gateway.telnyx.admin import add_telnyx_arguments

    add_telnyx_arguments(telnyx)
    telnyx.set_defaults(func=_telnyx)

    signalwire = sub.add_parser("signalwire", help="point SignalWire numbers at this service (REST API)")
    from gateway.signalwire.admin import add_signalwire_arguments

    add_signalwire_arguments(signalwire)
    signalwire.set_defaults(func=_signalwire)

    vonage = sub.add_parser("vonage", help="point a Vonage application and number at this service")
    from gateway.vonage.admin import add_vonage_arguments

    add_vonage_arguments(vonage)
    vonage.set_defaults(func=_vonage)

    plivo = sub.add_parser("plivo", help="point a Plivo number at this service")
    from gateway.plivo.admin import add_plivo_arguments

    add_plivo_arguments(plivo)
    plivo.set_defaults(func=_plivo)

    live = sub.add_parser("live-local", help="run the offline local Live backend alone")
    live.add_argument("--host", default="127.0.0.1")
    live.add_argument("--port", type=int, default=8765)
    live.add_argument(
        "--goaway-after",
        type=float,
        default=None,
        metavar="SECONDS",
        help="send goAway this long after each connection opens (long-call testing)",
    )
    live.set_defaults(func=_live_local)

    call = sub.add_parser("call", help="place one simulated call against a running gateway")
    from gateway.devtools.simulator import add_call_arguments

    add_call_arguments(call)
    call.set_defaults(func=_call)

    load = sub.add_parser("load", help="many concurrent simulated calls against a running gateway")
    from gateway.devtools.load import add_load_arguments

    add_load_arguments(load)
    load.set_defaults(func=_load)

    scripted = sub.add_parser(
        "live-scripted", help="a minimal-cost scripted Live peer (energy VAD, canned replies) for load runs"
    )
    from gateway.devtools.scripted_peer import add_peer_arguments

    add_peer_arguments(scripted)
    scripted.set_defaults(func=_live_scripted)

    dial = sub.add_parser("dial", help="the agent calls a number (POST /calls on a running gateway)")
    from gateway.outbound.client import add_dial_arguments

    add_dial_arguments(dial)
    dial.set_defaults(func=_dial)

    campaign = sub.add_parser("campaign", help="call a list of numbers through a running gateway")
    from gateway.outbound.campaign_run import add_campaign_arguments

    add_campaign_arguments(campaign)
    campaign.set_defaults(func=_campaign)

    demo = sub.add_parser("demo", help="everything on one machine, no keys: gateway + local backend + a call")
    from gateway.devtools.demo import add_demo_arguments

    add_demo_arguments(demo)
    demo.set_defaults(func=_demo)
    return parser


def _command(argv: list[str]) -> str | None:
    """The command `argv` names, read before the parser is built (`--log-format` may come first)."""
    words = iter(argv)
    for word in words:
        if word == "--log-format":
            next(words, None)
        elif not word.startswith("-"):
            return word
    return None


def main(argv: list[str] | None = None) -> int:
    if _command(argv if argv is not None else sys.argv[1:]) == "serve":
        with contextlib.suppress(ConfigError):  # reported by `serve` itself
            if load_settings().web_concurrency > 1:
                # Before prometheus_client is imported (the parser imports it): it picks its mode then.
                _metrics_for_processes()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
