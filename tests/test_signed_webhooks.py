"""Signed and answered webhooks: ``wf.create_webhook(verify=wf.signatures.X(...),
respond=(status, body))``. A request whose signature is missing, wrong or stale gets
401 and is not recorded; the secret is read from the receiving process's
environment, never stored."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from pathlib import Path
from typing import Any

import pytest

import worldflow as wf
from worldflow import signatures
from worldflow.testing import http_call
from worldflow.worlds.local import LocalWorld

SECRET = "whsec_test_secret"


def test_githubs_published_example_verifies() -> None:
    """GitHub's documentation: secret "It's a Secret to Everybody", body "Hello, World!"."""
    spec = signatures.github(secret_env="GH_SECRET")
    env = {"GH_SECRET": "It's a Secret to Everybody"}
    good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    headers = {"x-hub-signature-256": good}
    assert signatures.check(spec, headers, b"Hello, World!", 0, env) is None
    assert signatures.check(spec, headers, b"Hello, World?", 0, env) is not None
    assert signatures.check(spec, {}, b"Hello, World!", 0, env) == "no X-Hub-Signature-256 header"
    with pytest.raises(signatures.SecretMissing, match="GH_SECRET"):
        signatures.check(spec, headers, b"Hello, World!", 0, {})


def test_bad_specs_are_refused_where_they_are_written() -> None:
    with pytest.raises(ValueError, match="environment variable"):
        signatures.stripe(secret_env="not a name")
    with pytest.raises(ValueError, match="tolerance"):
        signatures.slack(tolerance=0)
    with pytest.raises(ValueError, match="encoding"):
        signatures.hmac_sha256(secret_env="S", encoding="rot13")


def _stripe_header(body: bytes, t: int, secret: str = SECRET) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def _slack_headers(body: bytes, t: int, secret: str = SECRET) -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"v0:{t}:".encode() + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(t), "X-Slack-Signature": f"v0={mac}"}


@wf.workflow
async def paid(scheme: str) -> Any:
    verify = {
        "stripe": signatures.stripe(secret_env="TEST_WEBHOOK_SECRET"),
        "github": signatures.github(secret_env="TEST_WEBHOOK_SECRET"),
        "slack": signatures.slack(secret_env="TEST_WEBHOOK_SECRET"),
        "hmac": signatures.hmac_sha256(
            secret_env="TEST_WEBHOOK_SECRET", header="X-Acme-Signature", encoding="base64"
        ),
    }[scheme]
    webhook = wf.create_webhook(verify=verify, respond=(200, {"received": True}))
    request = await webhook
    return request.json()


def _signed(scheme: str, body: bytes, now: int) -> dict[str, str]:
    if scheme == "stripe":
        return {"Stripe-Signature": _stripe_header(body, now)}
    if scheme == "github":
        mac = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        return {"X-Hub-Signature-256": f"sha256={mac}"}
    if scheme == "slack":
        return _slack_headers(body, now)
    digest = hmac.new(SECRET.encode(), body, hashlib.sha256).digest()
    return {"X-Acme-Signature": base64.b64encode(digest).decode()}


def _wrong(scheme: str, body: bytes, now: int) -> list[dict[str, str]]:
    """Missing, forged and (where the scheme has a timestamp) stale signatures."""
    forged = {k: v for k, v in _signed(scheme, body + b" ", now).items()}
    wrong = [{}, forged]
    if scheme == "stripe":
        wrong.append({"Stripe-Signature": _stripe_header(body, now - 600)})
        wrong.append({"Stripe-Signature": _stripe_header(body, now, "whsec_other")})
    if scheme == "slack":
        wrong.append(_slack_headers(body, now - 600))
    return wrong


@pytest.mark.parametrize("scheme", ["stripe", "github", "slack", "hmac"])
def test_only_requests_signed_right_are_recorded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    monkeypatch.setenv("TEST_WEBHOOK_SECRET", SECRET)
    body = b'{"paid": 1200}'

    async def main() -> Any:
        async with wf.worker(LocalWorld(tmp_path)):
            run = await wf.start(paid, scheme)
            for _ in range(500):
                created = [e for e in await run.events() if e.kind == "hook_created"]
                if created:
                    break
                await asyncio.sleep(0.01)
            url = created[0].data["url"]
            assert SECRET not in str(created[0].data)  # only the variable's name is recorded
            now = int(time.time())
            for headers in _wrong(scheme, body, now):
                status, reply = await http_call("POST", url, body, headers)
                assert status == 401, (headers, reply)
            await asyncio.sleep(0.1)
            received = [e for e in await run.events() if e.kind == "hook_received"]
            assert received == []  # nothing refused was recorded
            status, reply = await http_call("POST", url, body, _signed(scheme, body, now))
            assert (status, reply) == (200, b'{"received": true}')  # the webhook's own answer
            return await run.result(timeout=10)

    assert asyncio.run(main()) == {"paid": 1200}


def test_a_process_without_the_secret_refuses_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("TEST_WEBHOOK_SECRET", raising=False)

    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path)):
            run = await wf.start(paid, "github")
            for _ in range(500):
                created = [e for e in await run.events() if e.kind == "hook_created"]
                if created:
                    break
                await asyncio.sleep(0.01)
            status, _ = await http_call("POST", created[0].data["url"], b"{}", {})
            assert status == 503
            await run.cancel()

    asyncio.run(main())
    assert any("set TEST_WEBHOOK_SECRET" in r.getMessage() for r in caplog.records)


@wf.workflow
async def bad_spec() -> None:
    wf.create_webhook(respond=(302, {"to": "elsewhere"}))


def test_a_bad_respond_fails_the_run_saying_why(tmp_path: Path) -> None:
    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path)):
            with pytest.raises(wf.RunFailed, match="2xx status"):
                await (await wf.start(bad_spec)).result(timeout=10)

    asyncio.run(main())


@wf.workflow
async def bad_manual(case: str) -> str:
    if case == "respond_timeout without manual":
        wf.create_webhook(respond_timeout="5s")
    elif case == "no timeout":
        wf.create_webhook(respond="manual", respond_timeout=0)
    elif case == "too long":
        wf.create_webhook(respond="manual", respond_timeout="16m")
    elif case == "not a duration":
        wf.create_webhook(respond="manual", respond_timeout="soon")
    elif case == "unknown mode":
        wf.create_webhook(respond="auto")  # type: ignore[arg-type]
    return "created"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("respond_timeout without manual", "respond_timeout= is for webhooks created with"),
        ("no timeout", "more than 0 s up to 15 minutes"),
        ("too long", "more than 0 s up to 15 minutes"),
        ("not a duration", "respond_timeout"),
        ("unknown mode", "respond= takes"),
    ],
)
def test_bad_manual_webhooks_fail_the_run_saying_why(
    tmp_path: Path, case: str, message: str
) -> None:
    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path)):
            with pytest.raises(wf.RunFailed, match=message):
                await (await wf.start(bad_manual, case)).result(timeout=10)

    asyncio.run(main())


@wf.workflow
async def bad_answer(case: str) -> str:
    hook = wf.create_webhook(respond="manual" if case != "not manual" else None)
    request = await hook
    if case == "status":
        await request.respond(99, {})
    elif case == "body":
        await request.respond(200, ["a", "list"])  # type: ignore[arg-type]
    elif case == "not json":
        await request.respond(200, {"when": object()})
    else:
        await request.respond(200, {})
    return "answered"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("status", "the status must be an int from 200 to 599"),
        ("body", "the body must be a JSON object"),
        ("not json", "the body is not JSON"),
        ("not manual", "create it with wf.create_webhook"),
    ],
)
def test_a_bad_answer_fails_the_run_and_the_caller_gets_the_default(
    tmp_path: Path, case: str, message: str
) -> None:
    async def main() -> None:
        async with wf.worker(LocalWorld(tmp_path)):
            run = await wf.start(bad_answer, case)
            for _ in range(500):
                created = [e for e in await run.events() if e.kind == "hook_created"]
                if created:
                    break
                await asyncio.sleep(0.01)
            status, body = await http_call("POST", created[0].data["url"], b"{}")
            assert status == 202, body
            with pytest.raises(wf.RunFailed, match=message):
                await run.result(timeout=10)

    asyncio.run(main())
