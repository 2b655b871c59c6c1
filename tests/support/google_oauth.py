"""Google credentials offline: a service-account key file with a locally generated RSA key, and a stand-in for
Google's OAuth token endpoint (its `token_uri`) speaking the real wire format.

google-auth signs a JWT (RS256, `iss` the client email, `aud` Google's token audience, `scope`) with the key
and POSTs it as `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&assertion=JWT`; the endpoint checks
the signature with the public key and answers `{"access_token", "expires_in", "token_type": "Bearer"}`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from gateway.server import serving
from tests.support.tls import rsa_key_pem

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# google-auth signs for Google's token audience whatever the key file's token_uri says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
CLIENT_EMAIL = "phone-gateway@phone-line-1.iam.gserviceaccount.com"


def _b64url(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


@dataclass
class TokenEndpoint:
    """Issues `ya29.local-N` tokens to JWTs signed by `public_key`; `expires_in` is what it promises."""

    public_key: rsa.RSAPublicKey
    expires_in: int = 3600
    issued: list[str] = field(default_factory=list)
    assertions: list[dict[str, Any]] = field(default_factory=list)  # the JWT claims it accepted
    url: str = ""
    _numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    def accepts(self, token: str) -> bool:
        return token in self.issued

    async def token(self, request: Request) -> JSONResponse:
        form = await request.form()
        if form.get("grant_type") != JWT_BEARER:
            return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
        try:
            header_b64, claims_b64, signature_b64 = str(form.get("assertion", "")).split(".")
            header, claims = json.loads(_b64url(header_b64)), json.loads(_b64url(claims_b64))
            self.public_key.verify(
                _b64url(signature_b64),
                f"{header_b64}.{claims_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature):
            return JSONResponse(
                {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}, 400
            )
        if (
            header.get("alg") != "RS256"
            or claims.get("aud") not in (self.url, GOOGLE_TOKEN_AUDIENCE)
            or claims.get("exp", 0) < time.time()
        ):
            return JSONResponse({"error": "invalid_grant", "error_description": "Invalid JWT."}, 400)
        if "https://www.googleapis.com/auth/cloud-platform" not in str(claims.get("scope", "")).split():
            return JSONResponse({"error": "invalid_scope"}, status_code=400)
        self.assertions.append(claims)
        token = f"ya29.local-{next(self._numbers)}"
        self.issued.append(token)
        return JSONResponse({"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"})


@contextlib.asynccontextmanager
async def google_credentials(
    directory: Path, expires_in: int = 3600
) -> AsyncIterator[tuple[str, TokenEndpoint]]:
    """A service-account key file whose token_uri is a local token endpoint: (key file path, endpoint)."""
    key, key_pem = rsa_key_pem()
    endpoint = TokenEndpoint(key.public_key(), expires_in)
    app = Starlette(routes=[Route("/token", endpoint.token, methods=["POST"])])
    async with serving(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")) as url:
        endpoint.url = url + "/token"
        info = {
            "type": "service_account",
            "project_id": "phone-line-1",
            "private_key_id": "local-key-1",
            "private_key": key_pem,
            "client_email": CLIENT_EMAIL,
            "client_id": "1",
            "token_uri": endpoint.url,
        }
        path = directory / "service-account.json"
        path.write_text(json.dumps(info))
        yield str(path), endpoint
