"""Where S3 requests go: the endpoint of a region in every AWS partition, path or
virtual-hosted addressing, and the regions buckets redirected us to.

botocore answers the first two with its S3 endpoint rule set, which needs its client
machinery (part of the ~0.45 CPU-s aiobotocore import). For S3 the rule set's answer
is plain: `s3.<region>.<DNS suffix of the region's partition>` (`s3.amazonaws.com`
for us-east-1 and aws-global), the bucket in front as a host label when it is one.
The partitions (aws, aws-cn, aws-us-gov, aws-iso*, aws-eusc, ...) with their region
patterns and DNS suffixes are read from botocore's data/partitions.json (7 KB), and
only when no endpoint is configured. tests/unit/test_endpoints.py checks the result
against botocore's own resolution for a region of every partition.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from asyncplug.errors import ConfigError

# botocore's validate_region_name: a region ends up in a host name.
_REGION = re.compile(r"^[a-zA-Z0-9](?:[a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])?$")
_LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_IPV4 = re.compile(r"^\d{1,3}(?:\.\d{1,3}){3}$")
_REGION_IN_BODY = re.compile(rb"<Region>([^<]{1,64})</Region>")
GLOBAL_HOST = "s3.amazonaws.com"


@functools.cache
def _partitions() -> list[dict[str, Any]]:
    import json

    import botocore  # already loaded: s3common imports botocore.exceptions

    path = os.path.join(os.path.dirname(botocore.__file__), "data", "partitions.json")
    with open(path, encoding="utf-8") as file:
        partitions: list[dict[str, Any]] = json.load(file)["partitions"]
    return partitions


def check_region(region: str) -> str:
    if not _REGION.match(region):
        raise ConfigError(f"option region: {region!r} is not a region name like eu-west-1")
    return region


def dns_suffix(region: str) -> str:
    """The DNS suffix of the partition a region belongs to (botocore's rules: a region
    listed in a partition, else the first whose regionRegex matches, else aws)."""
    partitions = _partitions()
    for partition in partitions:
        if region in partition.get("regions", {}):
            return str(partition["outputs"]["dnsSuffix"])
    for partition in partitions:
        if re.match(partition["regionRegex"], region):
            return str(partition["outputs"]["dnsSuffix"])
    aws = next(p for p in partitions if p["id"] == "aws")
    return str(aws["outputs"]["dnsSuffix"])


def aws_host(region: str) -> str:
    """S3's host name for a region, as botocore resolves it."""
    check_region(region)
    if region == "aws-global":
        return GLOBAL_HOST
    if region == "us-east-1" and not _us_east_1_regional():
        return GLOBAL_HOST
    return f"s3.{region}.{dns_suffix(region)}"


def signing_region(region: str) -> str:
    return "us-east-1" if region == "aws-global" else region


def _us_east_1_regional() -> bool:
    """botocore's s3 us_east_1_regional_endpoint setting from the environment."""
    return os.environ.get("AWS_S3_US_EAST_1_REGIONAL_ENDPOINT", "").strip().lower() == "regional"


def virtual_hostable(bucket: str, dots: bool) -> bool:
    """The bucket can be a host name label (botocore's isVirtualHostableS3Bucket): 3-63
    lower-case letters, digits and '-', not an IP address; dots only when `dots`."""
    if not 3 <= len(bucket) <= 63:
        return False
    labels = bucket.split(".") if dots else [bucket]
    return all(_LABEL.match(label) for label in labels) and not is_ip(bucket)


def is_ip(host: str) -> bool:
    """An IPv4 or IPv6 address (urlsplit's hostname has no brackets), not a name."""
    return ":" in host or bool(_IPV4.match(host))


def addressing(style: str, bucket: str, aws: bool, tls: bool) -> str:
    """ "path" or "virtual" for the addressing_style option (auto: virtual-hosted for AWS,
    path for other endpoints). Virtual falls back to path, as in botocore's rule set,
    for a bucket that cannot be a host label: a bucket with dots is one only on another
    endpoint over plain http (over TLS the certificate's *.host covers one label)."""
    if style == "path" or (style == "auto" and not aws):
        return "path"
    return "virtual" if virtual_hostable(bucket, dots=not aws and not tls) else "path"


# --- region redirects -------------------------------------------------------------------

REDIRECT_STATUSES = (301, 302, 307)


def region_named(headers: dict[str, str], body: list[memoryview] | None = None) -> str | None:
    """The bucket's region an S3 error names: x-amz-bucket-region, else <Region> in the
    error document (AuthorizationHeaderMalformed); None when absent or not a region."""
    region = headers.get("x-amz-bucket-region")
    if not region:
        for view in body or ():
            found = _REGION_IN_BODY.search(view)
            if found:
                region = found.group(1).decode("ascii", "replace")
                break
    return region if region and _REGION.match(region) else None


def is_region_error(method: str, status: int, code: str, region: str | None) -> bool:
    """The error says "wrong region", as botocore's S3RegionRedirectorv2 decides."""
    return (
        status in REDIRECT_STATUSES
        or code in ("PermanentRedirect", "IllegalLocationConstraintException")
        or (code == "AuthorizationHeaderMalformed" and region is not None)
        or (method == "HEAD" and code in ("301", "400"))
    )


# bucket -> region learnt from a redirect, for every later request of this process
_learnt: dict[str, str] = {}


def learnt_region(bucket: str) -> str | None:
    return _learnt.get(bucket)


def learn_region(bucket: str, region: str) -> None:
    _learnt[bucket] = region
