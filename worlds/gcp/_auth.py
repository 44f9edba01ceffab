"""Who may call the internal routes: Cloud Tasks' OIDC tokens, or a shared secret.

- ``oidc_audience`` set: the request's bearer token must be a Google-signed
  OIDC token for that audience (checked with google-auth against Google's
  public keys), and, when ``tasks_service_account`` is set, issued to that
  service account.
- ``shared_secret`` set (emulators, local development): the bearer token must
  equal it (compared in constant time).
- neither: every call is refused. An internal route is never open by default.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import urllib.request
from typing import Any

from ._settings import GcpSettings

__all__ = ["GOOGLE_CERTS_URL", "AuthResult", "check_bearer"]

AuthResult = tuple[int, str]  # (HTTP status, reason); status 0: allowed


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


GOOGLE_CERTS_URL = "https://www.googleapis.com/oauth2/v1/certs"
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
_CERTS_TTL = 3600.0  # Google rotates its keys over days; a key id not cached refetches at once
_certs: dict[str, tuple[float, dict[str, str]]] = {}


def _fetch_certs(url: str, refresh: bool) -> dict[str, str]:
    cached = _certs.get(url)
    if cached is not None and not refresh and time.monotonic() - cached[0] < _CERTS_TTL:
        return cached[1]
    with urllib.request.urlopen(url, timeout=10) as response:
        certs = json.loads(response.read())
    if not isinstance(certs, dict):
        raise ValueError(f"{url} did not answer a JSON object of certificates")
    _certs[url] = (time.monotonic(), certs)
    return certs


def _verify_oidc(token: str, audience: str, certs_url: str) -> dict[str, Any]:
    """google-auth's verification (signature, expiry, audience) against cached keys."""
    from google.auth import jwt

    try:
        header = jwt.decode_header(token)
    except Exception as exc:
        raise ValueError(f"not a JWT: {exc}") from exc
    certs = _fetch_certs(certs_url, refresh=False)
    if header.get("kid") not in certs:
        certs = _fetch_certs(certs_url, refresh=True)  # a key Google rotated in
    claims: dict[str, Any] = jwt.decode(
        token, certs=certs, audience=audience, clock_skew_in_seconds=10
    )
    if claims.get("iss") not in GOOGLE_ISSUERS:
        raise ValueError(f"wrong issuer {claims.get('iss')!r}")
    return claims


async def check_bearer(settings: GcpSettings, header: str | None) -> AuthResult:
    """``(0, "")`` when the Authorization header may call internal routes, else why not."""
    if not settings.oidc_audience and not settings.shared_secret:
        return 403, (
            "internal routes are closed: set WORLDFLOW_GCP_OIDC_AUDIENCE (Cloud Tasks "
            "OIDC tokens) or WORLDFLOW_GCP_SHARED_SECRET (emulators)"
        )
    token = _bearer(header)
    if token is None:
        return 401, "a bearer token is required"
    if settings.shared_secret and hmac.compare_digest(
        token.encode(), settings.shared_secret.encode()
    ):
        return 0, ""
    if settings.oidc_audience:
        try:
            claims = await asyncio.to_thread(
                _verify_oidc, token, settings.oidc_audience, settings.oidc_certs_url
            )
        except Exception as exc:  # a bad signature, expiry, audience, or a malformed token
            return 401, f"the OIDC token was refused: {exc}"
        expected = settings.tasks_service_account
        if expected and claims.get("email") != expected:
            return 403, f"the OIDC token is not {expected}'s"
        if expected and not claims.get("email_verified", False):
            return 403, "the OIDC token's email is not verified"
        return 0, ""
    return 403, "the bearer token does not match the shared secret"
