"""``worldflow setup aws``: create what the AWS world needs, for development and tests.

The table (with its indexes and TTL on worker heartbeats), the queue and its
dead-letter queue (redrive after ``max_receives``: 20, a backstop above the
engine's ``WORLDFLOW_MAX_DELIVERIES``, 16, which dead-letters with a reason
first), the bucket for big payloads, and for sleeps past SQS's 15 minutes an
EventBridge Scheduler schedule group and the role its schedules send to the
queue as (``sqs:SendMessage`` on this queue only), against the real AWS or an
endpoint such as moto or LocalStack. Creating what exists already is not an
error. Production uses ``infra/aws/template.yaml``.
"""

from __future__ import annotations

import json
from typing import Any

from ._errors import AwsWorldError, aws_call, error_code
from ._session import require_credentials, resolve_region
from ._store import table_definition

__all__ = ["setup"]


def setup(
    name: str = "worldflow",
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    session: Any = None,
    visibility: int = 60,
    max_receives: int = 20,
    scheduler: bool = True,
) -> dict[str, str]:
    """Create the resources; returns the settings to export (``WORLDFLOW_AWS_*``)."""
    import boto3

    session = session or boto3.session.Session()
    region = resolve_region(session, region)
    require_credentials(session)

    def client(service: str) -> Any:
        return session.client(service, region_name=region, endpoint_url=endpoint_url)

    dynamodb, sqs, s3 = client("dynamodb"), client("sqs"), client("s3")
    with aws_call("DynamoDB CreateTable", f"table {name!r}"):
        try:
            dynamodb.create_table(**table_definition(name))
            dynamodb.get_waiter("table_exists").wait(
                TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
            )
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"},
            )
        except Exception as exc:
            if error_code(exc) != "ResourceInUseException":
                raise
    with aws_call("SQS CreateQueue", f"queue {name + '-dlq'!r}"):
        dlq_url = sqs.create_queue(
            QueueName=f"{name}-dlq", Attributes={"MessageRetentionPeriod": "1209600"}
        )["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
    with aws_call("SQS CreateQueue", f"queue {name!r}"):
        queue_url = sqs.create_queue(
            QueueName=name,
            Attributes={
                "VisibilityTimeout": str(visibility),
                "MessageRetentionPeriod": "1209600",
                "RedrivePolicy": json.dumps(
                    {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": str(max_receives)}
                ),
            },
        )["QueueUrl"]
    bucket = f"{name}-payloads"
    with aws_call("S3 CreateBucket", f"bucket {bucket!r}"):
        try:
            kwargs: dict[str, Any] = {"Bucket": bucket}
            actual_region = s3.meta.region_name
            if actual_region and actual_region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": actual_region}
            s3.create_bucket(**kwargs)
        except Exception as exc:
            if error_code(exc) not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise
    settings = {
        "WORLDFLOW_WORLD": "aws",
        "WORLDFLOW_AWS_TABLE": name,
        "WORLDFLOW_AWS_QUEUE_URL": queue_url,
        "WORLDFLOW_AWS_DLQ_URL": dlq_url,
        "WORLDFLOW_AWS_BUCKET": bucket,
    }
    if scheduler:
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        settings.update(_scheduler(name, client("scheduler"), client("iam"), queue_arn))
    return settings


def _scheduler(name: str, scheduler: Any, iam: Any, queue_arn: str) -> dict[str, str]:
    """The schedule group and the role EventBridge Scheduler sends to the queue as; an
    error that says which permissions that takes, if they are missing."""
    try:
        return _make_scheduler(name, scheduler, iam, queue_arn)
    except AwsWorldError as exc:
        if exc.code not in ("AccessDenied", "AccessDeniedException"):
            raise
        raise AwsWorldError(
            f"{exc}. Making the scheduler's group and role takes scheduler:CreateScheduleGroup, "
            "iam:CreateRole, iam:GetRole and iam:PutRolePolicy; without them, run "
            "`worldflow setup aws --no-scheduler` (sleeps past 15 minutes then hop on SQS)",
            exc.code,
        ) from exc


def _make_scheduler(name: str, scheduler: Any, iam: Any, queue_arn: str) -> dict[str, str]:
    with aws_call("EventBridge Scheduler CreateScheduleGroup", f"schedule group {name!r}"):
        try:
            scheduler.create_schedule_group(Name=name)
        except Exception as exc:
            if error_code(exc) != "ConflictException":
                raise
    role = f"{name}-scheduler"
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "scheduler.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }
        ],
    }
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "sqs:SendMessage", "Resource": queue_arn}],
    }
    with aws_call("IAM CreateRole", f"role {role!r}"):
        try:
            arn = iam.create_role(RoleName=role, AssumeRolePolicyDocument=json.dumps(trust))[
                "Role"
            ]["Arn"]
        except Exception as exc:
            if error_code(exc) != "EntityAlreadyExists":
                raise
            arn = iam.get_role(RoleName=role)["Role"]["Arn"]
    with aws_call("IAM PutRolePolicy", f"role {role!r}"):
        iam.put_role_policy(
            RoleName=role, PolicyName="send-to-the-queue", PolicyDocument=json.dumps(policy)
        )
    return {
        "WORLDFLOW_AWS_SCHEDULE_GROUP": name,
        "WORLDFLOW_AWS_SCHEDULER_ROLE": str(arn),
    }
