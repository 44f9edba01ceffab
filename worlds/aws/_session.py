"""Region and credentials, resolved as boto3 resolves them, with one clear error each.

boto3 (botocore 1.4x) takes the region from an explicit ``region_name``, then
``AWS_DEFAULT_REGION``, then the profile's ``region`` in ``~/.aws/config``; it
does not read ``AWS_REGION`` (only Lambda's runtime sets both). worldflow
takes ``AWS_REGION`` as well, after those, since the other AWS SDKs and many
guides use it. Credentials are boto3's own chain (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``, ``~/.aws/credentials``, an
instance or task role).
"""

from __future__ import annotations

import os
from typing import Any

from ._errors import AwsWorldError

__all__ = ["CREDENTIALS_HELP", "REGION_HELP", "require_credentials", "resolve_region"]

REGION_HELP = (
    "set AWS_DEFAULT_REGION (the variable boto3 reads; worldflow also takes AWS_REGION), "
    "or WORLDFLOW_AWS_REGION, or `region` in ~/.aws/config"
)
CREDENTIALS_HELP = (
    "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any values against moto or "
    "LocalStack), or AWS_PROFILE, or use an instance or task role"
)


def resolve_region(session: Any, region: str | None) -> str:
    """The region to use: ``region``, else boto3's, else ``AWS_REGION``; a clear
    :class:`AwsWorldError` if there is none."""
    found = region or session.region_name or os.environ.get("AWS_REGION")
    if not found:
        raise AwsWorldError(f"no AWS region is configured: {REGION_HELP}", "NoRegionError")
    return str(found)


def require_credentials(session: Any) -> None:
    """A clear :class:`AwsWorldError` if boto3 finds no credentials."""
    if session.get_credentials() is None:
        raise AwsWorldError(f"no AWS credentials found: {CREDENTIALS_HELP}", "NoCredentialsError")
