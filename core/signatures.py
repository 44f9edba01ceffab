"""Webhook signatures: ``wf.create_webhook(verify=wf.signatures.stripe())``.

Each function returns a *description* of how to check a request (which
scheme, which environment variable holds the secret, how old a timestamp
may be), recorded with the webhook; the secret itself is never stored. The
process that receives the request (the local server, the Lambda handler,
the Cloud Run service, an ASGI app) reads the secret from its environment
and checks the signature before anything is recorded: a request whose
signature is missing, wrong or stale is answered ``401`` and never reaches
the run. Signatures are compared in constant time.

- :func:`stripe`: the ``Stripe-Signature`` header (``t=<unix time>,v1=<hex>``,
  HMAC-SHA256 of ``"<t>.<body>"``), with a tolerance on ``t``.
- :func:`github`: ``X-Hub-Signature-256`` (``sha256=<hex>``, HMAC-SHA256 of the body).
- :func:`slack`: ``X-Slack-Signature`` (``v0=<hex>``, HMAC-SHA256 of
  ``"v0:<timestamp>:<body>"``) and ``X-Slack-Request-Timestamp``, with a
  tolerance (Slack's replay window: 5 minutes).
- :func:`hmac_sha256`: any header carrying an HMAC-SHA256 of the body, hex or
  base64, with an optional prefix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from typing import Any

__all__ = ["check", "github", "hmac_sha256", "slack", "stripe"]


def _env_name(secret_env: str) -> str:
    if not isinstance(secret_env, str) or not secret_env.isidentifier():
        raise ValueError(f"secret_env must name an environment variable, got {secret_env!r}")
    return secret_env


def _tolerance(seconds: float) -> float:
    if not isinstance(seconds, int | float) or not 0 < seconds <= 86400:
        raise ValueError(f"tolerance must be a number of seconds from 0 to 86400, got {seconds!r}")
    return float(seconds)


def stripe(*, secret_env: str = "STRIPE_SIGNING_SECRET", tolerance: float = 300) -> dict[str, Any]:
    """Stripe's scheme; the endpoint's signing secret (``whsec_...``) in ``secret_env``."""
    return {
        "scheme": "stripe",
        "secret_env": _env_name(secret_env),
        "tolerance": _tolerance(tolerance),
    }


def github(*, secret_env: str = "GITHUB_WEBHOOK_SECRET") -> dict[str, Any]:
    """GitHub's ``X-Hub-Signature-256``; the webhook's secret in ``secret_env``."""
    return {"scheme": "github", "secret_env": _env_name(secret_env)}


def slack(*, secret_env: str = "SLACK_SIGNING_SECRET", tolerance: float = 300) -> dict[str, Any]:
    """Slack's ``v0`` scheme with its replay window; the app's signing secret in ``secret_env``."""
    return {
        "scheme": "slack",
        "secret_env": _env_name(secret_env),
        "tolerance": _tolerance(tolerance),
    }


def hmac_sha256(
    *, secret_env: str, header: str = "X-Signature", prefix: str = "", encoding: str = "hex"
) -> dict[str, Any]:
    """An HMAC-SHA256 of the body in ``header`` (``prefix`` before it, e.g. ``"sha256="``),
    ``encoding`` ``"hex"`` or ``"base64"``."""
    if encoding not in ("hex", "base64"):
        raise ValueError(f"encoding must be 'hex' or 'base64', got {encoding!r}")
    if not isinstance(header, str) or not header:
        raise ValueError(f"header must be a header name, got {header!r}")
    return {
        "scheme": "hmac-sha256",
        "secret_env": _env_name(secret_env),
        "header": header.lower(),
        "prefix": str(prefix),
        "encoding": encoding,
    }


class SecretMissing(Exception):
    """The receiving process has no secret to check with (a set-up error, not the caller's)."""


def _secret(spec: Mapping[str, Any], env: Mapping[str, str]) -> bytes:
    name = str(spec.get("secret_env"))
    value = env.get(name)
    if not value:
        raise SecretMissing(f"the webhook's signing secret is not set here: set {name}")
    return value.encode()


def _mac(secret: bytes, message: bytes) -> bytes:
    return hmac.new(secret, message, hashlib.sha256).digest()


def _fresh(timestamp: str, now: float, tolerance: float) -> str | None:
    try:
        when = int(timestamp)
    except ValueError:
        return "the signature's timestamp is not a number"
    if abs(now - when) > tolerance:
        return (
            f"the signature's timestamp is {abs(now - when):.0f}s away (more than {tolerance:.0f}s)"
        )
    return None


def check(
    spec: Mapping[str, Any],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    env: Mapping[str, str] | None = None,
) -> str | None:
    """Why the request's signature does not hold (for the 401), or None if it does.
    ``headers`` have lower-case names. Raises :class:`SecretMissing` when the secret
    is not in ``env`` (default: the process's environment)."""
    env = os.environ if env is None else env
    scheme = spec.get("scheme")
    if scheme == "stripe":
        secret = _secret(spec, env)
        parts: dict[str, list[str]] = {}
        for item in headers.get("stripe-signature", "").split(","):
            key, _, value = item.strip().partition("=")
            parts.setdefault(key, []).append(value)
        if not parts.get("t") or not parts.get("v1"):
            return "no Stripe-Signature header with t= and v1="
        stale = _fresh(parts["t"][0], now, float(spec.get("tolerance", 300)))
        if stale:
            return stale
        expected = _mac(secret, parts["t"][0].encode() + b"." + body).hex()
        if any(hmac.compare_digest(expected, v) for v in parts["v1"]):
            return None
        return "the Stripe-Signature does not match"
    if scheme == "github":
        secret = _secret(spec, env)
        given = headers.get("x-hub-signature-256", "")
        if not given.startswith("sha256="):
            return "no X-Hub-Signature-256 header"
        expected = "sha256=" + _mac(secret, body).hex()
        return (
            None
            if hmac.compare_digest(expected, given)
            else "the X-Hub-Signature-256 does not match"
        )
    if scheme == "slack":
        secret = _secret(spec, env)
        timestamp = headers.get("x-slack-request-timestamp", "")
        given = headers.get("x-slack-signature", "")
        if not timestamp or not given.startswith("v0="):
            return "no X-Slack-Signature and X-Slack-Request-Timestamp headers"
        stale = _fresh(timestamp, now, float(spec.get("tolerance", 300)))
        if stale:
            return stale
        expected = "v0=" + _mac(secret, b"v0:" + timestamp.encode() + b":" + body).hex()
        return (
            None if hmac.compare_digest(expected, given) else "the X-Slack-Signature does not match"
        )
    if scheme == "hmac-sha256":
        secret = _secret(spec, env)
        name = str(spec.get("header", "x-signature"))
        given = headers.get(name, "")
        prefix = str(spec.get("prefix", ""))
        if not given or not given.startswith(prefix):
            return f"no {name} header" + (f" starting with {prefix!r}" if prefix else "")
        digest = _mac(secret, body)
        encoded = (
            digest.hex()
            if spec.get("encoding", "hex") == "hex"
            else base64.b64encode(digest).decode()
        )
        return (
            None if hmac.compare_digest(prefix + encoded, given) else f"the {name} does not match"
        )
    return f"unknown signature scheme {scheme!r}"
