"""A SignalWire media stream as the caller's line.

SignalWire's `<Connect><Stream>` speaks Twilio's Media Streams protocol (connected, start with
`customParameters`, media, dtmf, mark, stop; and media, mark, clear back: mu-law at 8 kHz by default), so
the line is Twilio's, with SignalWire's REST API (its Compatibility API, which Twilio's client speaks at
the space's URL) for transfers. Marks are echoed once played, so `end_call` and barge-in work as on Twilio.
"""

from __future__ import annotations

from gateway.twilio.line import TwilioLine


class SignalWireLine(TwilioLine):
    """One SignalWire media WebSocket as the caller's line."""

    carrier = "signalwire"
