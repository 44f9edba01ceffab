"""infra/aws/template.yaml: cfn-lint passes on it and on its SAM translation (which
catches bad references inside serverless resources), and the translated stack is
created in moto's CloudFormation wherever moto supports the resource types."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.decode import decode
from moto.cloudformation.parsing import resource_class_from_type
from samtranslator.parser.parser import Parser
from samtranslator.translator.translator import Translator

from worldflow.worlds.aws.testing import MotoServer

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "aws" / "template.yaml"
PACKAGED = ROOT / "worlds" / "aws" / "template.yaml"


def _cfn_lint(path: Path) -> subprocess.CompletedProcess[str]:
    exe = shutil.which("cfn-lint")
    assert exe is not None, "cfn-lint is not installed (it comes with worldflow[dev])"
    return subprocess.run([exe, str(path)], capture_output=True, text=True, check=False)


def _translate(path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """SAM -> CloudFormation with aws-sam-translator, as `sam deploy` has it done."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    template, problems = decode(str(path))
    assert not problems, problems
    assert template is not None
    function = template["Resources"]["WorkflowFunction"]["Properties"]
    function["CodeUri"] = "s3://worldflow-code/function.zip"  # what `sam deploy` uploads
    translated: dict[str, Any] = Translator(managed_policy_map={}, sam_parser=Parser()).translate(
        sam_template=template,
        parameter_values={"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"},
    )
    return translated


def test_the_packaged_template_is_the_infra_template() -> None:
    # `worldflow package aws` ships worlds/aws/template.yaml; infra/aws/ is what users read.
    assert PACKAGED.read_text() == TEMPLATE.read_text()


def test_cfn_lint_passes_on_the_sam_template() -> None:
    done = _cfn_lint(TEMPLATE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cfn_lint_passes_on_the_translated_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    translated = _translate(TEMPLATE, monkeypatch)
    kinds = {r["Type"] for r in translated["Resources"].values()}
    assert {"AWS::Lambda::EventSourceMapping", "AWS::Lambda::Url", "AWS::IAM::Role"} <= kinds
    mapping = next(
        r
        for r in translated["Resources"].values()
        if r["Type"] == "AWS::Lambda::EventSourceMapping"
    )
    assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    out = tmp_path / "translated.json"
    out.write_text(json.dumps(translated, indent=1))
    done = _cfn_lint(out)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_bad_reference_in_the_function_is_caught(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        TEMPLATE.read_text().replace(
            "WORLDFLOW_AWS_TABLE: !Ref Table", "WORLDFLOW_AWS_TABLE: !Ref NoSuchTable"
        )
    )
    out = tmp_path / "bad.json"
    out.write_text(json.dumps(_translate(bad, monkeypatch)))
    done = _cfn_lint(out)
    assert done.returncode != 0 and "NoSuchTable" in done.stdout


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


def test_the_stack_is_created_in_moto(moto: MotoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    moto.reset()
    translated = _translate(TEMPLATE, monkeypatch)
    resources = translated["Resources"]
    supported = {k: r for k, r in resources.items() if resource_class_from_type(r["Type"])}
    skipped = sorted({r["Type"] for k, r in resources.items() if k not in supported})
    # The function URL, its permissions, the alarm and the schedule group: moto's
    # CloudFormation does not model them (cfn-lint checked them above). The group is
    # made with moto's Scheduler API instead, and references to it are its name.
    assert set(skipped) <= {
        "AWS::Lambda::Url",
        "AWS::Lambda::Permission",
        "AWS::CloudWatch::Alarm",
        "AWS::Scheduler::ScheduleGroup",
    }, skipped
    text = json.dumps(supported)
    text = text.replace('{"Ref": "ScheduleGroup"}', '"wf-worldflow"')
    text = text.replace("${ScheduleGroup}", "wf-worldflow")
    translated["Resources"] = json.loads(text)
    translated["Outputs"]["ScheduleGroup"] = {"Value": "wf-worldflow"}
    session = moto.session()
    session.client("scheduler", endpoint_url=moto.url).create_schedule_group(Name="wf-worldflow")
    translated["Outputs"] = {k: v for k, v in translated["Outputs"].items() if k != "FunctionUrl"}

    s3 = session.client("s3", endpoint_url=moto.url)
    s3.create_bucket(Bucket="worldflow-code")
    code = io.BytesIO()
    with zipfile.ZipFile(code, "w") as archive:
        archive.writestr("handler.py", "def lambda_handler(event, context):\n    return {}\n")
    s3.put_object(Bucket="worldflow-code", Key="function.zip", Body=code.getvalue())

    cfn = session.client("cloudformation", endpoint_url=moto.url)
    cfn.create_stack(
        StackName="wf",
        TemplateBody=json.dumps(translated),
        Parameters=[{"ParameterKey": "WorkflowModules", "ParameterValue": "shop.flows"}],
        Capabilities=["CAPABILITY_IAM"],
    )
    stack = cfn.describe_stacks(StackName="wf")["Stacks"][0]
    assert stack["StackStatus"] == "CREATE_COMPLETE", stack
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}

    table = session.client("dynamodb", endpoint_url=moto.url).describe_table(
        TableName=outputs["Table"]
    )["Table"]
    assert {i["IndexName"] for i in table["GlobalSecondaryIndexes"]} == {
        "by_time",
        "by_status",
        "by_workflow",
        "by_holder",
        "by_expiry",
    }
    sqs = session.client("sqs", endpoint_url=moto.url)
    attributes = sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])
    redrive = json.loads(attributes["Attributes"]["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"].endswith(outputs["DeadLetterQueueUrl"].rsplit("/")[-1])
    function = session.client("lambda", endpoint_url=moto.url).get_function(
        FunctionName="wf-worldflow"
    )["Configuration"]
    assert function["Handler"] == "worldflow.worlds.aws.lambda_handler"
    variables = function["Environment"]["Variables"]
    assert variables["WORLDFLOW_AWS_TABLE"] == outputs["Table"]
    assert variables["WORLDFLOW_AWS_DLQ_URL"] == outputs["DeadLetterQueueUrl"]
    assert variables["WORLDFLOW_AWS_SCHEDULER_ROLE"] == outputs["SchedulerRoleArn"]
    assert str(variables["WORLDFLOW_AWS_FUNCTION_TIMEOUT"]) == "300"
    assert redrive["maxReceiveCount"] in (20, "20")  # a backstop above max_deliveries (16)
    logs = session.client("logs", endpoint_url=moto.url).describe_log_groups(
        logGroupNamePrefix="/aws/lambda/wf-worldflow"
    )["logGroups"]
    assert [g.get("retentionInDays") for g in logs] == [30]
    mappings = session.client("lambda", endpoint_url=moto.url).list_event_source_mappings(
        FunctionName="wf-worldflow"
    )["EventSourceMappings"]
    assert [m["FunctionResponseTypes"] for m in mappings] == [["ReportBatchItemFailures"]]


def test_setup_makes_the_table_the_template_declares() -> None:
    """`worldflow setup aws` (table_definition) and the template agree on the keys and
    indexes, the new ones (runs by holder, heartbeats by expiry) included."""
    from worldflow.worlds.aws._store import table_definition

    template, problems = decode(str(TEMPLATE))
    assert not problems and template is not None
    declared = json.loads(json.dumps(template["Resources"]["Table"]["Properties"]))
    made = table_definition("t")

    def by(key: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        return {item[key]: item for item in items}

    assert by("AttributeName", declared["AttributeDefinitions"]) == by(
        "AttributeName", made["AttributeDefinitions"]
    )
    assert declared["KeySchema"] == made["KeySchema"]
    assert by("IndexName", declared["GlobalSecondaryIndexes"]) == by(
        "IndexName", made["GlobalSecondaryIndexes"]
    )
