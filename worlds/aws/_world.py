"""The AWS world, put together: DynamoDB storage and heartbeats, an SQS queue, S3 blobs.

:class:`AwsWorld` is only its parts (:class:`._store.DynamoStore` is Storage
and Workers, :class:`._queue.SqsQueue` the Queue, :class:`._blobs.S3Blobs`
the Blobs) and the capabilities that tell the engine what to bridge: SQS
delays stop at 15 minutes (the engine hops), items at 400 KB and messages at
256 KB (the engine moves bigger values to S3), and messages are not in the
store's transaction (the engine keeps an outbox in the table). A plain
process does not serve work (``embedded=False``): Lambda (:mod:`._host`) or
``worldflow worker`` does.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from worldflow.world import Capabilities, Clock, SystemClock, World

from ._blobs import S3Blobs
from ._dlq import SqsDeadLetters
from ._queue import MAX_DELAY, SqsQueue
from ._scheduler import EventBridgeScheduler
from ._session import resolve_region
from ._store import DynamoStore

__all__ = ["CAPABILITIES", "AwsWorld", "create_world"]

log = logging.getLogger("worldflow.aws")

CAPABILITIES = Capabilities(
    max_delay=float(MAX_DELAY),
    # DynamoDB's item limit is 400 KB with attribute names: keep a margin.
    max_event_bytes=350_000,
    # SQS takes 256 KB a message on many accounts (1 MiB since 2025).
    max_message_bytes=200_000,
    transactional_messages=False,
    embedded=False,
)


class AwsWorld(World):
    """Runs in a DynamoDB table, messages on an SQS queue, big values in an S3 bucket.

    >>> world = AwsWorld("worldflow", "https://sqs.eu-west-1.amazonaws.com/123/worldflow",
    ...                  bucket="worldflow-payloads")

    ``endpoint_url``/``region``/``session`` are boto3's (``AWS_ENDPOINT_URL``
    works too). ``poll=False``: a serving process here takes no message from
    the queue (Lambda's event source mapping feeds it). ``poll_wait`` is the
    SQS long poll's wait and ``visibility`` the visibility timeout a worker
    takes messages with; ``heartbeat``/``lease`` say how often a worker
    proves it is alive and for how long (a step running on a worker whose
    proof ran out is run again); ``hold``: how long a worker keeps a message
    that came early before sending it again for later. ``public_url``: the
    base of webhook URLs; on Lambda without one, the function's own URL.
    ``dlq_url``: the dead-letter queue (default: the one the queue's redrive
    policy names). ``scheduler_role`` (an IAM role ARN EventBridge Scheduler
    may assume to send to the queue) and ``schedule_group``: delays past SQS's
    15 minutes become one EventBridge one-time schedule each instead of a hop
    every 15 minutes (``worldflow setup aws`` and the template make both).
    ``function_timeout`` (seconds): the Lambda function's timeout, the longest
    a step attempt may run here. ``expire_finished`` (seconds): when a run ends,
    its items get a ``ttl`` that far ahead, and DynamoDB's TTL deletes them
    (None: kept).
    """

    def __init__(
        self,
        table: str,
        queue_url: str,
        bucket: str | None = None,
        *,
        clock: Clock | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        public_url: str | None = None,
        session: Any = None,
        poll: bool = True,
        poll_wait: int = 20,
        visibility: int = 60,
        heartbeat: float = 10.0,
        lease: float = 30.0,
        hold: float = 60.0,
        max_webhook_bytes: int = 1 << 20,
        dlq_url: str | None = None,
        scheduler_role: str | None = None,
        schedule_group: str = "default",
        queue_arn: str | None = None,
        function_timeout: float | None = None,
        expire_finished: float | None = None,
    ) -> None:
        if not table or not queue_url:
            raise ValueError(
                "the aws world needs a DynamoDB table and an SQS queue: set "
                "WORLDFLOW_AWS_TABLE and WORLDFLOW_AWS_QUEUE_URL (or run `worldflow setup aws`)"
            )
        import boto3  # the heaviest import of the world: only when a World is built
        from botocore.config import Config

        clock = clock or SystemClock()
        session = session or boto3.session.Session()
        config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            max_pool_connections=50,
            connect_timeout=5,
            read_timeout=max(30, poll_wait + 10),  # outlasts a long poll
        )

        region = resolve_region(session, region)

        def client(service: str) -> Any:
            return session.client(
                service, region_name=region, endpoint_url=endpoint_url, config=config
            )

        self._client = client
        self._url_looked_up = public_url is not None
        store = DynamoStore(client("dynamodb"), table, clock, expire_after=expire_finished)
        queue = SqsQueue(
            client("sqs"),
            queue_url,
            clock,
            real_time=isinstance(clock, SystemClock),
            poll=poll,
            poll_wait=poll_wait,
            visibility=visibility,
        )
        letters = SqsDeadLetters(queue.client, queue, dlq_url)
        queue.dead_letters = letters
        scheduler = None
        if scheduler_role:
            scheduler = EventBridgeScheduler(
                client("scheduler"),
                queue,
                clock,
                group=schedule_group,
                role_arn=scheduler_role,
                queue_arn=queue_arn,
            )
        capabilities = CAPABILITIES
        if function_timeout is not None:
            capabilities = dataclasses.replace(
                CAPABILITIES,
                max_attempt_seconds=function_timeout,
                host_limit="Lambda's function timeout",
            )
        super().__init__(
            storage=store,
            queue=queue,
            workers=store,
            blobs=S3Blobs(lambda: client("s3"), bucket) if bucket else None,
            scheduler=scheduler,
            dead_letters=letters,
            clock=clock,
            capabilities=capabilities,
            public_url=public_url.rstrip("/") if public_url else None,
            heartbeat=heartbeat,
            lease=lease,
            hold=hold,
            max_webhook_bytes=max_webhook_bytes,
            name="aws",
        )
        self.store = store
        self.sqs = queue
        self.dlq = letters

    def __repr__(self) -> str:
        return f"<AwsWorld table={self.store.table!r} queue={self.sqs.url!r}>"

    def webhook_url(self, token: str) -> str:
        if not self._url_looked_up:
            self._url_looked_up = True
            self.public_url = self._function_url()
        return super().webhook_url(token)

    def _function_url(self) -> str | None:
        """On Lambda without WORLDFLOW_PUBLIC_URL: the function's own URL, looked up once
        per process (a template cannot pass a function its own URL)."""
        name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
        if not name:
            return None
        try:
            config = self._client("lambda").get_function_url_config(FunctionName=name)
        except Exception as exc:
            log.warning("worldflow: cannot look up the function URL of %r (%s)", name, exc)
            return None
        return str(config["FunctionUrl"]).rstrip("/")


def create_world(settings: dict[str, Any]) -> AwsWorld:
    """The factory behind ``WORLDFLOW_WORLD=aws``: settings from ``WORLDFLOW_AWS_*``."""
    missing = [name for name in ("table", "queue_url") if not settings.get(name)]
    if missing:
        names = ", ".join(f"WORLDFLOW_AWS_{m.upper()}" for m in missing)
        raise ValueError(
            f"the aws world needs {names} (environment variables, or keys under "
            "[tool.worldflow.aws] in pyproject.toml); `worldflow setup aws` creates "
            "the resources and prints them"
        )

    def number(name: str, default: float) -> float:
        value = settings.get(name)
        if value is None or value == "":
            return default
        try:
            return float(value)
        except ValueError:
            raise ValueError(f"WORLDFLOW_AWS_{name.upper()}={value!r}: expected a number") from None

    return AwsWorld(
        settings["table"],
        settings["queue_url"],
        settings.get("bucket") or None,
        region=settings.get("region") or None,
        endpoint_url=settings.get("endpoint_url") or os.environ.get("AWS_ENDPOINT_URL") or None,
        public_url=settings.get("public_url") or None,
        poll=str(settings.get("poll", "1")).lower() not in ("0", "false", "no"),
        poll_wait=int(number("poll_wait", 20)),
        visibility=int(number("visibility", 60)),
        heartbeat=number("heartbeat", 10.0),
        lease=number("worker_lease", 30.0),
        hold=number("hold", 60.0),
        max_webhook_bytes=int(number("max_webhook_bytes", 1 << 20)),
        dlq_url=settings.get("dlq_url") or None,
        scheduler_role=settings.get("scheduler_role") or None,
        schedule_group=settings.get("schedule_group") or "default",
        queue_arn=settings.get("queue_arn") or None,
        function_timeout=number("function_timeout", 0.0) or None,
        expire_finished=number("expire_finished_days", 0.0) * 86400 or None,
    )
