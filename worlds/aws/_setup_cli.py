"""``worldflow setup aws``: create the table, queue, dead-letter queue and bucket."""

from __future__ import annotations

import argparse
import os
import shlex

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--name",
        default="worldflow",
        help="the table and queue name (the DLQ is NAME-dlq, the bucket NAME-payloads)",
    )
    parser.add_argument(
        "--endpoint-url",
        metavar="URL",
        default=None,
        help="an AWS-compatible endpoint (moto, LocalStack); default AWS_ENDPOINT_URL or AWS",
    )
    parser.add_argument("--region", default=None, help="default: boto3's (AWS_REGION, config)")


def run(args: argparse.Namespace) -> int:
    from worldflow.cli._common import say, write_json

    from ._setup import setup

    endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
    settings = setup(args.name, region=args.region, endpoint_url=endpoint)
    if endpoint:
        settings["AWS_ENDPOINT_URL"] = endpoint
    if args.json:
        write_json(settings)
    else:
        for key, value in settings.items():
            print(f"export {key}={shlex.quote(value)}")
        say(f"created (or found) the aws world's resources named {args.name!r}")
    return 0
