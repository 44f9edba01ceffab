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
from typing import Any

from ._settings import GcpSettings

__all__ = ["AuthResult", "check_bearer"]

AuthResult = tuple[int, str]  # (HTTP status, reason); status 0: allowed


def _bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _verify_oidc(token: str, audience: str) -> dict[str, Any]:
    from google.auth.transport import requests as google_requests
    from google.oauth2 import id_token

    claims: dict[str, Any] = id_token.verify_oauth2_token(
        token, google_requests.Request(), audience=audience
    )
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
            claims = await asyncio.to_thread(_verify_oidc, token, settings.oidc_audience)
        except Exception as exc:  # a bad signature, expiry, audience, or a malformed token
            return 401, f"the OIDC token was refused: {exc}"
        expected = settings.tasks_service_account
        if expected and claims.get("email") != expected:
            return 403, f"the OIDC token is not {expected}'s"
        if expected and not claims.get("email_verified", False):
            return 403, "the OIDC token's email is not verified"
        return 0, ""
    return 403, "the bearer token does not match the shared secret"
