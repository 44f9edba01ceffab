"""infra/gcp is consistent: the Terraform parses (python-hcl2), every reference
resolves, the least-privilege bindings are what docs/gcp.md says, the indexes
match firestore.indexes.json and the queries the world makes, and the
Dockerfile serves the app that exists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

INFRA = Path(__file__).resolve().parents[2] / "infra" / "gcp"

REFERENCE = re.compile(r"\b(var|local|data\.[a-z0-9_]+|google_[a-z0-9_]+)\.([a-z0-9_]+)")
EXPRESSION = re.compile(r"\$\{(.*?)\}")


def _unquote(key: str) -> str:
    return key.strip('"')


def normalize(value: Any) -> Any:
    """python-hcl2 keeps the quotes of string literals (and of block labels): drop them."""
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, dict):
        return {normalize(k): normalize(v) for k, v in value.items()}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    return value


def load() -> dict[str, list[Any]]:
    merged: dict[str, list[Any]] = {}
    for path in sorted(INFRA.glob("*.tf")):
        with path.open() as fh:
            doc = normalize(hcl2.load(fh))
        for key, value in doc.items():
            if not key.startswith("__"):
                merged.setdefault(key, []).extend(value)
    return merged


def declared(doc: dict[str, list[Any]]) -> set[tuple[str, str]]:
    names: set[tuple[str, str]] = set()
    for block in doc.get("resource", []):
        for rtype, items in block.items():
            for name in items:
                names.add((_unquote(rtype), _unquote(name)))
    for block in doc.get("data", []):
        for rtype, items in block.items():
            for name in items:
                names.add((f"data.{_unquote(rtype)}", _unquote(name)))
    for block in doc.get("variable", []):
        for name in block:
            names.add(("var", _unquote(name)))
    for block in doc.get("locals", []):
        for name in block:
            if not name.startswith("__"):
                names.add(("local", name))
    return names


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k != "__comments__" for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def resources(doc: dict[str, list[Any]], rtype: str) -> dict[str, dict[str, Any]]:
    found = {}
    for block in doc.get("resource", []):
        for kind, items in block.items():
            if _unquote(kind) == rtype:
                for name, body in items.items():
                    found[_unquote(name)] = body
    return found


def test_every_reference_resolves() -> None:
    doc = load()
    names = declared(doc)
    assert len(names) > 20
    unresolved = set()
    used = set()
    for text in strings(doc):
        for expression in EXPRESSION.findall(text):
            for prefix, name in REFERENCE.findall(expression):
                used.add((prefix, name))
                if (prefix, name) not in names:
                    unresolved.add(f"{prefix}.{name}")
    assert not unresolved, f"references to nothing declared: {sorted(unresolved)}"
    variables = {n for p, n in names if p == "var"}
    assert variables <= {n for p, n in used if p == "var"}, "a variable nothing uses"


def test_a_planted_dangling_reference_is_caught(tmp_path: Path) -> None:
    # The check above can fail: a reference to an undeclared resource is found.
    text = 'resource "google_x" "a" {\n  name = google_y.missing.name\n}\n'
    doc = hcl2.loads(text)
    found = [r for s in strings(doc) for e in EXPRESSION.findall(s) for r in REFERENCE.findall(e)]
    assert ("google_y", "missing") in found


def test_least_privilege_bindings() -> None:
    doc = load()
    project_roles = {
        body["role"]: body["member"]
        for body in resources(doc, "google_project_iam_member").values()
    }
    # Project-wide, the service gets Firestore data access only; nothing is owner/editor.
    assert set(project_roles) == {"roles/datastore.user"}
    assert "google_service_account.run.email" in project_roles["roles/datastore.user"]
    queue = resources(doc, "google_cloud_tasks_queue_iam_member")
    assert [b["role"] for b in queue.values()] == ["roles/cloudtasks.enqueuer"]
    bucket = resources(doc, "google_storage_bucket_iam_member")
    assert [b["role"] for b in bucket.values()] == ["roles/storage.objectUser"]
    invokers = resources(doc, "google_cloud_run_v2_service_iam_member")
    members = sorted(b["member"] for b in invokers.values())
    assert members == ["allUsers", "serviceAccount:${google_service_account.tasks.email}"]
    (bucket_body,) = resources(doc, "google_storage_bucket").values()
    assert bucket_body["public_access_prevention"] == "enforced"
    assert bucket_body["uniform_bucket_level_access"] is True


def test_the_service_gets_every_setting_the_world_reads() -> None:
    doc = load()
    (service,) = resources(doc, "google_cloud_run_v2_service").values()
    (template,) = service["template"]
    (container,) = template["containers"]
    env = {e["name"] for e in container["env"]}
    assert {
        "WORLDFLOW_WORLD",
        "WORLDFLOW_MODULES",
        "WORLDFLOW_GCP_PROJECT",
        "WORLDFLOW_GCP_LOCATION",
        "WORLDFLOW_GCP_QUEUE",
        "WORLDFLOW_GCP_BUCKET",
        "WORLDFLOW_GCP_SERVICE_URL",
        "WORLDFLOW_GCP_OIDC_AUDIENCE",
        "WORLDFLOW_GCP_TASKS_SERVICE_ACCOUNT",
        "WORLDFLOW_PUBLIC_URL",
    } <= env
    from worldflow.worlds.gcp import GcpSettings

    known = {f"WORLDFLOW_GCP_{f.upper()}" for f in GcpSettings.__dataclass_fields__}
    assert {e for e in env if e.startswith("WORLDFLOW_GCP_")} <= known


def _variable_default(doc: dict[str, list[Any]], name: str) -> Any:
    (found,) = [block[name] for block in doc["variable"] if name in block]
    return found["default"]


def test_the_queue_retries_a_bounded_number_of_times_above_max_deliveries() -> None:
    """The engine gives up on a message after max_deliveries (a dead letter); the queue's
    own bound is a backstop above it, with a backoff, never -1 (for ever)."""
    doc = load()
    (queue,) = resources(doc, "google_cloud_tasks_queue").values()
    (retry,) = queue["retry_config"]
    assert retry["max_attempts"] == "${var.task_max_attempts}"
    attempts = _variable_default(doc, "task_max_attempts")
    deliveries = _variable_default(doc, "max_deliveries")
    assert deliveries == 16 and 16 < attempts <= 1000
    (lifecycle,) = queue["lifecycle"]
    (check,) = lifecycle["precondition"]
    assert check["condition"] == "${var.task_max_attempts > var.max_deliveries}"
    assert (retry["min_backoff"], retry["max_backoff"], retry["max_doublings"]) == ("1s", "300s", 8)
    # `worldflow setup gcp` makes the queue the same way.
    from worldflow.worlds.gcp._setup import QUEUE_RETRY

    assert QUEUE_RETRY["max_attempts"] == attempts and QUEUE_RETRY["max_doublings"] == 8
    assert retry["max_retry_duration"] == f"{QUEUE_RETRY['max_retry_duration']['seconds']}s"
    assert (QUEUE_RETRY["min_backoff"], QUEUE_RETRY["max_backoff"]) == (
        {"seconds": 1},
        {"seconds": 300},
    )
    (service,) = resources(doc, "google_cloud_run_v2_service").values()
    env = {e["name"]: e["value"] for e in service["template"][0]["containers"][0]["env"]}
    assert env["WORLDFLOW_MAX_DELIVERIES"] == "${tostring(var.max_deliveries)}"


def test_the_request_timeout_reaches_cloud_run_and_the_service_alike() -> None:
    doc = load()
    (service,) = resources(doc, "google_cloud_run_v2_service").values()
    (template,) = service["template"]
    assert template["timeout"] == "${var.request_timeout}s"
    env = {e["name"]: e["value"] for e in template["containers"][0]["env"]}
    assert env["WORLDFLOW_GCP_REQUEST_TIMEOUT"] == "${tostring(var.request_timeout)}"
    assert 15 <= _variable_default(doc, "request_timeout") <= 1800
    assert template["max_instance_request_concurrency"] == "${var.concurrency}"
    assert template["scaling"][0]["max_instance_count"] == "${var.max_instances}"


def test_retention_ttl_policies_and_the_bucket_lifecycle() -> None:
    """Finished runs' documents expire (a TTL policy on the field the world writes), blobs
    are deleted by age, and the bucket keeps no old versions."""
    doc = load()
    fields = resources(doc, "google_firestore_field").values()
    ttl = {(f["collection"], f["field"]) for f in fields if "ttl_config" in f}
    assert ttl == {
        ("runs", "expire_at"),
        ("events", "expire_at"),
        ("streams", "expire_at"),
        ("chunks", "expire_at"),
    }
    (service,) = resources(doc, "google_cloud_run_v2_service").values()
    env = {e["name"]: e["value"] for e in service["template"][0]["containers"][0]["env"]}
    assert "var.run_ttl_days" in env["WORLDFLOW_GCP_RUN_TTL"]
    assert _variable_default(doc, "run_ttl_days") == 0  # kept, as on the other worlds
    from worldflow.worlds.gcp._settings import DEFAULT_RUN_TTL

    assert DEFAULT_RUN_TTL is None  # the world's default is Terraform's
    (bucket,) = resources(doc, "google_storage_bucket").values()
    assert bucket["versioning"][0]["enabled"] is False
    rules = bucket["lifecycle_rule"]
    by_age = [r for r in rules if "age" in r["condition"][0]]
    (rule,) = by_age
    assert rule["condition"][0]["age"] == "${var.blob_retention_days}"
    assert sorted(rule["condition"][0]["matches_prefix"]) == ["messages/", "runs/"]
    assert all(r["action"][0]["type"] == "Delete" for r in rules)
    assert _variable_default(doc, "blob_retention_days") > _variable_default(doc, "run_ttl_days")


def _index_fields(fields: list[dict[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((f["fieldPath"], f.get("order") or f["arrayConfig"]) for f in fields)


def test_indexes_match_the_json_and_the_queries() -> None:
    declared_json = json.loads((INFRA / "firestore.indexes.json").read_text())
    from_json = {
        _index_fields(i["fields"])
        for i in declared_json["indexes"]
        if i["collectionGroup"] == "runs"
    }
    doc = load()
    from_tf = set()
    for body in resources(doc, "google_firestore_index").values():
        assert body["collection"] == "runs"
        fields = [
            {"fieldPath": f["field_path"], "order": f.get("order") or f["array_config"]}
            for f in body["fields"]
        ]
        from_tf.add(_index_fields(fields))
    assert from_tf == from_json
    # list_runs filters on status and/or workflow and orders by created_at, newest first.
    for filters in (["status"], ["workflow"], ["status", "workflow"]):
        wanted = (*tuple((f, "ASCENDING") for f in filters), ("created_at", "DESCENDING"))
        assert wanted in from_json, filters
    # list_runs(tags=): array-contains on tag_list, newest first.
    assert (("tag_list", "CONTAINS"), ("created_at", "DESCENDING")) in from_json


def test_dockerfile_serves_the_app() -> None:
    text = (INFRA / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.1[1-3]", text, re.M)
    assert "worldflow.worlds.gcp.app:app" in text
    assert re.search(r"^USER (?!root)", text, re.M)
    from worldflow.worlds.gcp import app

    assert callable(app.app)


@pytest.mark.parametrize("name", ["main.tf", "variables.tf", "outputs.tf"])
def test_each_file_parses(name: str) -> None:
    with (INFRA / name).open() as fh:
        assert hcl2.load(fh)


def test_checkov_finds_nothing_unjustified() -> None:
    """checkov's static checks over the Terraform and the Dockerfile (its own venv,
    made by scripts/_gcp.sh); a finding must be fixed or skipped with its reason."""
    import subprocess

    checkov = INFRA.parents[1] / ".venv-checkov" / "bin" / "checkov"
    if not checkov.exists():
        pytest.skip("checkov is not installed: bash scripts/_gcp.sh makes .venv-checkov")
    args = [str(checkov), "-d", str(INFRA), "--framework", "terraform", "dockerfile"]
    args += ["--compact", "--quiet", "--skip-download", "--output", "json"]
    done = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    reports = json.loads(done.stdout)
    reports = reports if isinstance(reports, list) else [reports]
    failed = [
        (c["check_id"], c["resource"], c["check_name"])
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert not failed, failed
    assert {r["check_type"] for r in reports} == {"terraform", "dockerfile"}
    assert sum(r["summary"]["passed"] for r in reports) > 20  # it really checked something
    assert all(r["summary"]["parsing_errors"] == 0 for r in reports)
