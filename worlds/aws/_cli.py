"""The AWS world's commands: ``worldflow setup aws`` and ``worldflow package aws``.

Registered in the package's ``CLI_COMMANDS``; boto3 and pip are used only
when a command runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
from pathlib import Path

from worldflow.cli import CliError, say, write_json

__all__ = ["PACKAGE", "SETUP"]


class Setup:
    help = "create the AWS world's table, queues, bucket and schedule group"
    description = (
        "Create (or find) the DynamoDB table, the SQS queue with its dead-letter queue, "
        "the S3 bucket, and the EventBridge Scheduler group with the role its schedules "
        "send to the queue as, against AWS or an endpoint such as moto or LocalStack, "
        "and print the settings to export. boto3 finds the region in AWS_DEFAULT_REGION "
        "(worldflow also takes AWS_REGION) or ~/.aws/config, and credentials in "
        "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ~/.aws/credentials "
        "(any values against moto or LocalStack). Production uses infra/aws/template.yaml."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
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
        parser.add_argument(
            "--region",
            default=None,
            help="default: AWS_DEFAULT_REGION, the profile's region in ~/.aws/config, "
            "then AWS_REGION",
        )
        parser.add_argument(
            "--no-scheduler",
            action="store_true",
            help="make no schedule group or role (IAM not allowed): sleeps past 15 "
            "minutes then hop on SQS every 15 minutes",
        )

    def run(self, args: argparse.Namespace) -> int:
        from ._setup import setup

        endpoint = args.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")
        settings = setup(
            args.name, region=args.region, endpoint_url=endpoint, scheduler=not args.no_scheduler
        )
        if endpoint:
            settings["AWS_ENDPOINT_URL"] = endpoint
        if args.json:
            write_json(settings)
        else:
            for key, value in settings.items():
                print(f"export {key}={shlex.quote(value)}")
            say(f"created (or found) the aws world's resources named {args.name!r}")
        return 0


class Package:
    help = "build the Lambda zip and SAM template of a project, print how to deploy it"
    description = (
        "Build function.zip (your modules, worldflow, and their dependencies for Lambda's "
        "platform) and template.yaml, and print the `sam deploy` command."
    )

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument(
            "modules",
            metavar="MODULE",
            nargs="+",
            help="the modules holding your workflows (importable from the current directory)",
        )
        parser.add_argument(
            "--out",
            default=".worldflow-build/aws",
            metavar="DIR",
            help="where function.zip and template.yaml go (default .worldflow-build/aws)",
        )
        parser.add_argument(
            "--requirements",
            metavar="FILE",
            help="your project's dependencies (a pip requirements file) to put in the zip",
        )
        parser.add_argument(
            "--python",
            default="3.12",
            help="the function's Python version, as in the template's Runtime (default 3.12)",
        )
        parser.add_argument(
            "--no-deps",
            action="store_true",
            help="put only your code and worldflow in the zip (dependencies come from a layer)",
        )
        parser.add_argument(
            "--function-timeout",
            type=int,
            default=300,
            metavar="S",
            help="the function's timeout in seconds, 1 to 900 (the template's FunctionTimeout; "
            "default 300): a step whose timeout is longer is refused",
        )
        parser.add_argument(
            "--no-check",
            action="store_true",
            help="do not import the handler and the modules from the zip in a fresh Python",
        )
        parser.add_argument("--stack-name", default="worldflow", help="for the printed commands")

    def run(self, args: argparse.Namespace) -> int:
        from worldflow.packaging import PackagingError

        from ._package import build

        if not 1 <= args.function_timeout <= 900:
            raise CliError(
                f"--function-timeout must be from 1 to 900 seconds (Lambda's limit), "
                f"got {args.function_timeout}",
                2,
            )
        out = Path(args.out)
        try:
            built = build(
                args.modules,
                out,
                requirements=args.requirements,
                python=args.python,
                deps=not args.no_deps,
                function_timeout=args.function_timeout,
                check=not args.no_check,
            )
        except PackagingError as exc:
            raise CliError(f"package aws: {exc}") from None
        archive, template = built.archive, built.template
        command = [
            "sam",
            "deploy",
            "--template-file",
            str(template),
            "--stack-name",
            args.stack_name,
            "--resolve-s3",
            "--capabilities",
            "CAPABILITY_IAM",
            "--parameter-overrides",
            f"WorkflowModules={','.join(args.modules)}",
            f"FunctionTimeout={args.function_timeout}",
        ]
        size = archive.stat().st_size
        if args.json:
            write_json(
                {
                    "zip": str(archive),
                    "bytes": size,
                    "template": str(template),
                    "checked_with": built.checked_with,
                    "deploy": command,
                }
            )
            return 0
        say(f"built {archive} ({size / 1e6:.1f} MB) and {template}")
        say(
            f"checked: the handler and {', '.join(args.modules)} import from the zip alone ({built.checked_with})"
            if not args.no_check
            else "not checked (--no-check)"
        )
        print(shlex.join(command))
        print(
            "# then, for webhooks: WORLDFLOW_PUBLIC_URL is the stack's FunctionUrl output:\n"
            f"aws cloudformation describe-stacks --stack-name {shlex.quote(args.stack_name)} "
            "--query \"Stacks[0].Outputs[?OutputKey=='FunctionUrl'].OutputValue\" --output text"
        )
        if os.environ.get("AWS_ENDPOINT_URL"):
            say("note: AWS_ENDPOINT_URL is set; sam deploys to the real AWS regardless")
        return 0


SETUP = Setup()
PACKAGE = Package()
