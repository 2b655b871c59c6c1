"""Where an outbound call may go: an E.164 number, in an allowed country, never premium-rate or a short code.

Numbers are read with Google's libphonenumber metadata (`phonenumbers`), which knows each country's
numbering plan: a `+1 876` number is Jamaica, not the United States, although both dial +1, so an allowlist
of calling codes would let through the Caribbean's well-known toll fraud; an allowlist of countries does not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType
from phonenumbers import timezone as number_timezones

_E164 = re.compile(r"^\+[1-9]\d{1,14}$")
_COUNTRY = re.compile(r"^[A-Z]{2}$")
# Types a gateway never dials: the callee's line bills the caller (premium rate, shared cost) or is not a
# person's (pagers, "universal access" numbers, voicemail access).
REFUSED_TYPES = {
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a universal access number",
    PhoneNumberType.PAGER: "a pager",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
}


class DestinationRefused(ValueError):
    """The number may not be called; the message says why (it is the API's answer).
    `forbidden`: a valid number this gateway may not call (403), rather than no valid number at all (400)."""

    def __init__(self, message: str, *, forbidden: bool = False) -> None:
        super().__init__(message)
        self.forbidden = forbidden


@dataclass(frozen=True)
class Destination:
    """A number that may be called: E.164 as dialled, its country (ISO 3166 alpha-2) and its time zone when
    the numbering plan says (one zone only; None when the country spans several)."""

    number: str
    country: str
    timezone: str | None


def country_of(number: str) -> str | None:
    """The country (ISO 3166 alpha-2) of a valid E.164 number, else None."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.region_code_for_number(parsed)


def parse_countries(text: str) -> frozenset[str]:
    """`OUTBOUND_COUNTRIES`: ISO 3166 alpha-2 codes separated by commas ("US,CA"). ValueError otherwise."""
    codes = {c.strip().upper() for c in text.split(",") if c.strip()}
    bad = sorted(c for c in codes if not _COUNTRY.match(c) or c not in phonenumbers.SUPPORTED_REGIONS)
    if bad:
        raise ValueError(f"{', '.join(bad)}: not ISO 3166 country codes like US, CA, GB")
    return frozenset(codes)


def check_destination(number: str, allowed: frozenset[str]) -> Destination:
    """The destination, or DestinationRefused saying why it may not be called."""
    if not isinstance(number, str) or not _E164.match(number):
        raise DestinationRefused(f"{str(number)[:32]!r} is not an E.164 number like +12025550123")
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        raise DestinationRefused(f"{number} is not a phone number") from None
    if not phonenumbers.is_valid_number(parsed):
        # Short codes, numbers too short or too long for their country, unassigned ranges.
        raise DestinationRefused(f"{number} is not a valid number in its country's numbering plan")
    kind = phonenumbers.number_type(parsed)
    if kind in REFUSED_TYPES:
        raise DestinationRefused(f"{number} is {REFUSED_TYPES[kind]}: never dialled", forbidden=True)
    country = phonenumbers.region_code_for_number(parsed)
    if country not in allowed:
        raise DestinationRefused(
            f"{number} is in {country}, not in OUTBOUND_COUNTRIES ({', '.join(sorted(allowed)) or 'none'})",
            forbidden=True,
        )
    zones = [z for z in number_timezones.time_zones_for_number(parsed) if z != "Etc/Unknown"]
    return Destination(number, country, zones[0] if len(zones) == 1 else None)
