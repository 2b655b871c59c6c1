"""Plivo's V3 request signature (https://docs.plivo.com/docs/voice/xml/request/validation), with the
functions of Plivo's own SDK (`plivo.utils.signature_v3`), both ways: checking what Plivo sends, and signing
as Plivo does (the caller simulator and the REST stand-in's callbacks). No I/O.

Plivo sends `X-Plivo-Signature-V3-Nonce` and `X-Plivo-Signature-V3` (base64 HMAC-SHA256 with the account's
auth token, of the URL it requested, then `.` and the nonce; for a POST the URL is followed by `.` and the
form parameters sorted by name, each name then value, concatenated). A signature header may carry several
signatures separated by commas (one per key, during a token rotation): any one of them will do.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Mapping

from plivo.utils.signature_v3 import construct_get_url, construct_post_url, get_signature_v3

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"


def _base(method: str, url: str, params: Mapping[str, str]) -> str:
    if method.upper() == "GET":
        return bytes(construct_get_url(url, dict(params))).decode()
    return bytes(construct_post_url(url, dict(params))).decode()


def signature(
    auth_token: str, method: str, url: str, nonce: str, params: Mapping[str, str] | None = None
) -> str:
    """The V3 signature Plivo sends for this request."""
    digest = get_signature_v3(auth_token.encode(), _base(method, url, params or {}), nonce.encode())
    return bytes(digest).decode()


def valid(
    auth_token: str,
    method: str,
    url: str,
    nonce: str | None,
    given: str | None,
    params: Mapping[str, str] | None = None,
) -> bool:
    """Whether `given` (the header's value) signs this request with `auth_token`."""
    if not nonce or not given:
        return False
    expected = signature(auth_token, method, url, nonce, params).encode()
    return any(hmac.compare_digest(expected, one.strip().encode()) for one in given.split(","))


def signed_headers(
    auth_token: str, method: str, url: str, params: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The headers Plivo adds to a request to `url` (a fresh nonce each time)."""
    nonce = secrets.token_hex(10)
    return {NONCE_HEADER: nonce, SIGNATURE_HEADER: signature(auth_token, method, url, nonce, params)}
