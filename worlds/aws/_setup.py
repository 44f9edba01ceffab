"""``worldflow setup aws``: create what the AWS world needs, for development and tests.

The table (with its indexes and TTL on worker heartbeats), the queue and its
dead-letter queue (redrive after ``max_receives``), and the bucket for big
payloads, against the real AWS or an endpoint such as moto or LocalStack.
Creating what exists already is not an error. Production uses
``infra/aws/template.yaml``.
"""

from __future__ import annotations

import json
from typing import Any

from ._errors import aws_call, error_code
from ._store import table_definition

__all__ = ["setup"]


def setup(
    name: str = "worldflow",
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    session: Any = None,
    visibility: int = 60,
    max_receives: int = 10,
) -> dict[str, str]:
    """Create the resources; returns the settings to export (``WORLDFLOW_AWS_*``)."""
    import boto3

    session = session or boto3.session.Session()

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
    return {
        "WORLDFLOW_WORLD": "aws",
        "WORLDFLOW_AWS_TABLE": name,
        "WORLDFLOW_AWS_QUEUE_URL": queue_url,
        "WORLDFLOW_AWS_BUCKET": bucket,
    }
