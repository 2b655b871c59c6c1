"""`gateway signalwire configure`: point a SignalWire number's voice webhook at this service.

SignalWire's Compatibility API is Twilio's REST API at the space (gateway.signalwire.rest), so the number
is updated as `gateway twilio configure` does it (`IncomingPhoneNumbers` update), with SignalWire's paths:
`PUBLIC_URL/signalwire/voice`, and no status callback (the gateway needs none from SignalWire).
"""

from __future__ import annotations

import argparse

from gateway.carriers import service_url
from gateway.config import load_carrier_admin_settings
from gateway.signalwire.answer import VOICE_PATH
from gateway.signalwire.rest import LAML_PATH
from gateway.twilio.admin import AdminError, _api_call, admin_client, configure_number, describe_changes


def add_signalwire_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="signalwire_command", required=True)
    configure = sub.add_parser("configure", help="point a number's voice webhook here")
    configure.add_argument("--number", required=True, help="the number, E.164 (+15551234567)")
    configure.add_argument("--url", help="the service's public base URL (default: PUBLIC_URL)")


def run_signalwire_command(args: argparse.Namespace) -> int:
    settings = load_carrier_admin_settings()
    carriers = settings.carriers
    project, token, space = (
        carriers["signalwire_project_id"],
        carriers["signalwire_api_token"],
        carriers["signalwire_space_url"],
    )
    if not (project and token and space):
        raise AdminError(
            "set SIGNALWIRE_PROJECT_ID, SIGNALWIRE_API_TOKEN and SIGNALWIRE_SPACE_URL (your space's API page)"
        )
    url = service_url(args.url, settings.public_url, "SignalWire")
    client = admin_client(project, token, space + LAML_PATH)
    before, after = _api_call(
        client,
        lambda: configure_number(
            client, args.number, url, voice_path=VOICE_PATH, status_path=None, command="your SignalWire space"
        ),
    )
    print(describe_changes(before, after))
    return 0
