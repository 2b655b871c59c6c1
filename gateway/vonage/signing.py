"""Vonage's JWTs, both ways: the signed webhooks and stream upgrades Vonage sends us, and the application JWT
our Voice API requests carry. No I/O: the clock is passed in; keys are read by `load_private_key`.

- Signed webhooks (https://developer.vonage.com/en/getting-started/concepts/webhooks#decoding-signed-
  webhooks): Vonage sends `Authorization: Bearer <JWT>`, HS256 with the account's signature secret, with
  `iat`, `jti`, `iss` ("Vonage"), `api_key`, `application_id` and, for a request with a body, `payload_hash`
  (the SHA-256 of the body, hex). The same JWT comes on the media socket's upgrade when our NCCO's websocket
  endpoint asks for `"authorization": {"type": "vonage"}` (there is no body, so no hash).
- Voice API requests (https://developer.vonage.com/en/getting-started/concepts/authentication#json-web-
  tokens): `Authorization: Bearer <JWT>`, RS256 with the application's private key, `application_id`,
  `iat`, `jti`, `exp`; minted with Vonage's own `vonage-jwt`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from vonage_jwt import JwtClient

ISSUER = "Vonage"
MAX_AGE_S = 300.0  # a signed request older than this is a replay, not a webhook in flight
CLOCK_SKEW_S = 30.0
APPLICATION_JWT_S = 900  # what vonage-jwt gives its tokens: 15 minutes


class SignatureError(ValueError):
    """Why a request's Vonage signature is refused (said in the log line; never the token itself)."""


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer ...` header, or SignatureError."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise SignatureError("no Authorization: Bearer JWT")
    return token.strip()


def verify(
    authorization: str | None,
    secret: str,
    now: float,
    body: bytes = b"",
    api_key: str | None = None,
) -> dict[str, Any]:
    """The claims of a request Vonage signed with `secret`, or SignatureError saying why not: no token, a
    bad signature, not Vonage's, too old (or from the future), another account's, or a body that is not the
    one signed."""
    token = bearer(authorization)
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],  # never what the token's header says: "none" or RS256 with the secret
            options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.InvalidSignatureError:
        raise SignatureError(
            "bad signature (VONAGE_SIGNATURE_SECRET is not the one Vonage signs with)"
        ) from None
    except jwt.PyJWTError as exc:
        raise SignatureError(f"not a valid JWT ({type(exc).__name__})") from None
    if claims.get("iss", ISSUER) != ISSUER:
        raise SignatureError("not issued by Vonage")
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or isinstance(iat, bool):
        raise SignatureError("no issue time")
    if not now - MAX_AGE_S <= iat <= now + CLOCK_SKEW_S:
        raise SignatureError(f"issued {now - iat:.0f} s ago")
    exp = claims.get("exp")
    if isinstance(exp, int | float) and not isinstance(exp, bool) and exp < now - CLOCK_SKEW_S:
        raise SignatureError("expired")
    if api_key and "api_key" in claims and claims["api_key"] != api_key:
        raise SignatureError("signed for another account (api_key)")
    # A body the signature does not cover could be any body: a JWT is replayable for MAX_AGE_S.
    if "payload_hash" in claims:
        digest = hashlib.sha256(body).hexdigest()
        if not hmac.compare_digest(str(claims["payload_hash"]).lower(), digest):
            raise SignatureError("the body is not the one signed (payload_hash)")
    elif body:
        raise SignatureError("a body without a payload_hash")
    return claims


def sign(secret: str, now: float, body: bytes = b"", api_key: str = "", application_id: str = "") -> str:
    """A JWT as Vonage signs a webhook (the caller simulator and tests sign with it)."""
    claims: dict[str, Any] = {"iat": int(now), "jti": secrets.token_hex(16), "iss": ISSUER}
    if api_key:
        claims["api_key"] = api_key
    if application_id:
        claims["application_id"] = application_id
    if body:
        claims["payload_hash"] = hashlib.sha256(body).hexdigest()
    return jwt.encode(claims, secret, algorithm="HS256")


class PrivateKeyError(ValueError):
    """VONAGE_PRIVATE_KEY cannot be used (the message never quotes the key)."""


def load_private_key(value: str) -> str:
    """VONAGE_PRIVATE_KEY as PKCS#8 PEM text: the PEM itself (newlines may be written `\\n`, as platforms
    that take one-line variables need), or the path of the file Vonage's dashboard downloads."""
    text = value.replace("\\n", "\n") if "-----BEGIN" in value else None
    if text is None:
        try:
            text = Path(value).expanduser().read_text()
        except OSError as exc:
            raise PrivateKeyError(f"neither a PEM key nor a readable file ({exc.strerror})") from None
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        raise PrivateKeyError("not an unencrypted PEM private key") from None
    if not isinstance(key, RSAPrivateKey):
        raise PrivateKeyError("not an RSA key (Vonage applications use RSA)")
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return pem.decode()


class ApplicationJwt:
    """Mints the application JWTs of Voice API requests (RS256, the application's key)."""

    def __init__(self, application_id: str, private_key_pem: str) -> None:
        self.application_id = application_id
        self._client = JwtClient(application_id, private_key_pem)

    def mint(self, now: float) -> str:
        iat = int(now)
        token = self._client.generate_application_jwt({"iat": iat, "exp": iat + APPLICATION_JWT_S})
        return token.decode()


def verify_application_jwt(
    token: str, public_key_pem: str, application_id: str, now: float
) -> dict[str, Any]:
    """An application JWT checked as Vonage's API checks it (the REST stand-in uses this)."""
    try:
        claims: dict[str, Any] = jwt.decode(
            token, public_key_pem, algorithms=["RS256"], options={"verify_exp": False, "verify_iat": False}
        )
    except jwt.PyJWTError as exc:
        raise SignatureError(f"not a valid application JWT ({type(exc).__name__})") from None
    if claims.get("application_id") != application_id:
        raise SignatureError("another application's JWT")
    if not claims.get("iat", 0) - CLOCK_SKEW_S <= now <= claims.get("exp", 0) + CLOCK_SKEW_S:
        raise SignatureError("expired application JWT")
    return claims
