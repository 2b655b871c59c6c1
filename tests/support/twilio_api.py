"""A stand-in for Twilio's REST API on loopback: it lives in `gateway.devtools.twilio_api` (so that
`gateway dial --simulate` has it too); the tests import it from here, as they import every helper."""

from gateway.devtools.twilio_api import FakeTwilioApi, fake_twilio_api

__all__ = ["FakeTwilioApi", "fake_twilio_api"]
