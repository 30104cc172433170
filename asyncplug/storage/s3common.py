"""What both S3 paths share (error mapping, endpoint settings, range checks), light to import.

Importing aiobotocore (with aiohttp and botocore's client) costs ~0.45 CPU-s per
process, so the lean path (s3lean.py) must not; this module imports only
botocore.exceptions (~10 ms). aiohttp's exception classes are mapped only when
aiohttp is loaded, which is the only time they can be raised.
"""

from __future__ import annotations

import asyncio
import base64
import sys
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import botocore.exceptions as bce

from asyncplug.config import Config
from asyncplug.errors import (
    AccessDenied,
    ConfigError,
    InputError,
    IntegrityError,
    ObjectNotFound,
    PluginError,
    StorageError,
)
from asyncplug.redact import mask_url
from asyncplug.storage.endpoints import REDIRECT_STATUSES, addressing, check_region, is_ip
from asyncplug.storage.retry import backoff


def crc_header(crc32c: int) -> str:
    """x-amz-checksum-crc32c: base64 of the 4-byte big-endian CRC."""
    return base64.b64encode(crc32c.to_bytes(4, "big")).decode("ascii")


# --- foreign errors -> asyncplug.errors, in one place -------------------------------

_CREDENTIALS_HINT = (
    "check aws_access_key_id / aws_secret_access_key (or the AWS credential chain) "
    "and the bucket policy"
)
_ACCESS_CODES = {
    "AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
    "InvalidSecurity", "RequestTimeTooSkewed", "Forbidden",
}  # fmt: skip
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound", "NoSuchUpload", "NoSuchVersion"}
_INTEGRITY_CODES = {
    "BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch", "XAmzContentChecksumMismatch",
    "InvalidChecksum", "InvalidPart", "InvalidPartOrder", "PreconditionFailed",
    "IncompleteBody",
}  # fmt: skip
_RANGE_CODES = {"InvalidRange", "416"}
# Both paths follow a region redirect once (botocore's S3RegionRedirectorv2, s3lean's
# _redirect); what is left is reported.
_REGION_CODES = {
    "PermanentRedirect", "TemporaryRedirect", "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException", "301", "302", "307",
}  # fmt: skip
_BUSY_CODES = {
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "TooManyRequests", "503", "500", "502", "504", "429",
}  # fmt: skip


def _mask(url: object) -> str:
    """A URL without user:password (proxies may carry them)."""
    return mask_url(url)


def _client_error(exc: bce.ClientError, what: str) -> PluginError:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error", {})
    meta = response.get("ResponseMetadata", {})
    code = str(error.get("Code") or meta.get("HTTPStatusCode") or "unknown")
    status = meta.get("HTTPStatusCode")
    tries = int(meta.get("RetryAttempts", 0)) + 1
    region = (meta.get("HTTPHeaders") or {}).get("x-amz-bucket-region") or error.get("Region")
    if code == "RequestTimeTooSkewed":
        return AccessDenied(
            f"{what}: the server refused the request time ({code}); check the host clock (NTP)"
        )
    # A HEAD has no error document: its 400 is a region error when S3 names a region.
    if code in _REGION_CODES or (region and (status in REDIRECT_STATUSES or code == "400")):
        if region:
            return ConfigError(
                f"{what}: the bucket is in region {region} ({code}); set region: {region} "
                "(and an endpoint, if any, of that region)"
            )
        return ConfigError(
            f"{what}: the bucket is in another region or behind another endpoint ({code}); "
            "check region and endpoint"
        )
    if code == "NoSuchBucket":
        return StorageError(f"{what}: the bucket does not exist (NoSuchBucket)")
    if code in _NOT_FOUND_CODES:
        return ObjectNotFound(f"{what}: not found ({code})")
    if code in _ACCESS_CODES or status == 403:
        return AccessDenied(f"{what}: access denied ({code}); {_CREDENTIALS_HINT}")
    if code in _RANGE_CODES:
        return InputError(f"{what}: the range is past the end of the object ({code})")
    if code in _INTEGRITY_CODES:
        return IntegrityError(f"{what}: the server rejected the data as corrupt ({code})")
    if code in _BUSY_CODES or (isinstance(status, int) and status >= 500):
        return StorageError(f"{what}: the server kept failing ({code}) after {tries} attempts")
    return StorageError(f"{what}: the server answered {code} (HTTP {status})")


def _endpoint(exc: BaseException) -> str:
    kwargs = getattr(exc, "kwargs", None) or {}
    url = kwargs.get("endpoint_url") or kwargs.get("proxy_url")
    return _mask(url) if url else "the endpoint"


# Foreign exception class -> (our error, message). The first entry the exception is an
# instance of wins, so the most specific come first. {endpoint}: the URL it talked to;
# {name}: the class name; {reason}: an OSError's strerror. The unit test enumerates
# botocore's and aiohttp's exception classes and fails if one matches no entry.
_CHAIN = "check the AWS credential chain (environment, profile, instance role)"
MAPPINGS: tuple[tuple[type[BaseException], type[PluginError], str], ...] = (
    (bce.NoCredentialsError, AccessDenied, f"no AWS credentials found; {_CREDENTIALS_HINT}"),
    (bce.PartialCredentialsError, AccessDenied, f"incomplete credentials; {_CREDENTIALS_HINT}"),
    (bce.CredentialRetrievalError, AccessDenied, f"cannot get credentials; {_CHAIN}"),
    (bce.UnknownCredentialError, AccessDenied, f"unknown credential provider; {_CHAIN}"),
    (bce.NoAuthTokenError, AccessDenied, f"no auth token found; {_CHAIN}"),
    (bce.TokenRetrievalError, AccessDenied, f"cannot get an auth token; {_CHAIN}"),
    (bce.SSOError, AccessDenied, "AWS SSO credentials are missing or expired (aws sso login)"),
    (bce.LoginError, AccessDenied, f"AWS login failed; {_CHAIN}"),
    (bce.MetadataRetrievalError, AccessDenied, "cannot read instance-role credentials"),
    (bce.RefreshWithMFAUnsupportedError, AccessDenied, "the AWS profile needs MFA"),
    (bce.SSLError, StorageError, "TLS error with {endpoint} (check encryption and certificates)"),
    (bce.ProxyConnectionError, StorageError, "cannot connect through http_proxy {endpoint}"),
    (bce.ConnectTimeoutError, StorageError, "timed out connecting to {endpoint}"),
    (bce.EndpointConnectionError, StorageError, "cannot connect to endpoint {endpoint}"),
    (bce.ReadTimeoutError, StorageError, "timed out waiting for {endpoint} (request_timeout)"),
    (bce.ConnectionClosedError, StorageError, "the connection to {endpoint} was closed"),
    (bce.ConnectionError, StorageError, "connection to {endpoint} failed ({name})"),
    (bce.HTTPClientError, StorageError, "HTTP error talking to {endpoint} ({name})"),
    (bce.ChecksumError, IntegrityError, "checksum mismatch"),
    (bce.FlexibleChecksumError, IntegrityError, "checksum mismatch"),
    (bce.IncompleteReadError, IntegrityError, "the response body was cut short"),
    (bce.AwsChunkedWrapperError, IntegrityError, "bad chunked body"),
    (bce.UnseekableStreamError, StorageError, "cannot resend the request body"),
    (bce.ParamValidationError, InputError, "invalid request parameters"),
    (bce.ValidationError, InputError, "invalid request parameters"),
    (bce.NoRegionError, ConfigError, "no region: set region or endpoint"),
    (bce.ProfileNotFound, ConfigError, "the AWS profile named in AWS_PROFILE does not exist"),
    (bce.ConfigParseError, ConfigError, "cannot parse the AWS config file"),
    (bce.InvalidProxiesConfigError, ConfigError, "invalid http_proxy"),
    (bce.InvalidConfigError, ConfigError, "invalid AWS configuration ({name})"),
    (bce.BaseEndpointResolverError, ConfigError, "cannot resolve the endpoint (region/endpoint)"),
    (bce.EndpointProviderError, ConfigError, "cannot resolve the endpoint (region/endpoint)"),
    (bce.BotoCoreError, StorageError, "S3 client error ({name})"),
    (bce.UndefinedModelAttributeError, StorageError, "S3 client error ({name})"),
    (bce.ClientError, StorageError, "S3 error"),  # translate() reads its code first
    (asyncio.TimeoutError, StorageError, "timed out (request_timeout)"),
    (PermissionError, AccessDenied, "{reason}"),
    (OSError, StorageError, "{reason}"),
    (ValueError, ConfigError, "invalid S3 settings ({name})"),
)


def _aiohttp_mappings() -> tuple[tuple[type[BaseException], type[PluginError], str], ...]:
    """aiohttp's rows, when aiohttp is loaded (they go before the OSError/TimeoutError rows)."""
    if "aiohttp" not in sys.modules:
        return ()
    import aiohttp
    import aiohttp.http_exceptions

    return (
        (aiohttp.http_exceptions.HttpProcessingError, StorageError, "bad HTTP response ({name})"),
        (aiohttp.ClientPayloadError, StorageError, "the response body was cut short"),
        (aiohttp.ClientConnectionError, StorageError, "connection failed ({name})"),
        (aiohttp.ClientError, StorageError, "HTTP error ({name})"),
    )


def mapping_for(cls: type[BaseException]) -> tuple[type[PluginError], str] | None:
    """The MAPPINGS entry for an exception class (None: no mapping)."""
    for base, error, message in (*_aiohttp_mappings(), *MAPPINGS):
        if issubclass(cls, base):
            return error, message
    return None


def translate(exc: BaseException, what: str) -> PluginError:
    """The asyncplug error for a foreign one; the caller does `raise ... from exc`.

    Messages are built from fixed text, error codes and URLs without user:password,
    never from the foreign message, so no secret (or request dump) reaches stderr.
    """
    if isinstance(exc, PluginError):
        return exc
    if isinstance(exc, bce.ClientError):
        return _client_error(exc, what)
    found = mapping_for(type(exc))
    if found is None:
        return StorageError(f"{what}: unexpected {type(exc).__name__}")
    error, message = found
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return error(
        f"{what}: "
        + message.format(endpoint=_endpoint(exc), name=type(exc).__name__, reason=reason)
    )


# --- configuration -------------------------------------------------------------------


def endpoint_settings(config: Config) -> tuple[str | None, bool, str]:
    """(endpoint_url, use_ssl, addressing_style) for the config; the style is "path" or
    "virtual" (endpoints.addressing decides "auto"), given to botocore as is."""
    use_ssl = config.encryption
    chosen = config.addressing_style
    if not config.endpoint:
        check_region(config.region)  # it goes into the host name
        return None, use_ssl, addressing(chosen, config.bucket, True, use_ssl)
    url = config.endpoint
    if "://" not in url:
        url = ("https://" if config.encryption else "http://") + url
    tls = url.startswith("https://")
    if is_ip(urlsplit(url).hostname or ""):
        chosen = "path"  # no host name to put the bucket in front of
    if not config.remove_duplicate_bucket:
        # auto: path style, like the Go plugin (S3ForcePathStyle)
        return url, use_ssl, addressing(chosen, config.bucket, False, tls)
    # The endpoint already names the bucket: strip it and let botocore put it back
    # once, as a virtual host (or keep path style if it was in the path).
    parts = urlsplit(url)
    host = parts.hostname or ""
    path = parts.path.rstrip("/")
    if host.startswith(config.bucket + "."):
        netloc = parts.netloc.replace(config.bucket + ".", "", 1)
        url = urlunsplit(parts._replace(netloc=netloc))
        style = "virtual"
    elif path.split("/")[-1] == config.bucket:
        url = urlunsplit(parts._replace(path=path[: -len(config.bucket)].rstrip("/")))
        style = "path"
    else:
        raise ConfigError(
            f"remove_duplicate_bucket is on but endpoint {mask_url(config.endpoint)} does not "
            f"name bucket {config.bucket}"
        )
    if chosen != "auto":
        style = addressing(chosen, config.bucket, False, tls)
    return url, use_ssl, style


def status_error(
    status: int,
    code: str,
    retries: int,
    operation: str = "GetObject",
    headers: dict[str, str] | None = None,
    region: str | None = None,
) -> bce.ClientError:
    """The ClientError botocore would raise, so translate() maps it the same way."""
    error: dict[str, str] = {"Code": code, "Message": ""}
    if region:
        error["Region"] = region
    response: Any = {
        "Error": error,
        "ResponseMetadata": {
            "HTTPStatusCode": status,
            "RetryAttempts": retries,
            "HTTPHeaders": headers or {},
        },
    }
    return bce.ClientError(response, operation)


def retryable(status: int, code: str) -> bool:
    """What botocore's standard mode and our 429 rule retry."""
    return status >= 500 or status == 429 or code in _BUSY_CODES


# --- ranged reads: the checks both paths make ---------------------------------------


def check_range(
    content_range: str | None, length: int | None, pos: int, end: int, what: str
) -> None:
    """A ranged GET's response must hold exactly bytes [pos, end): check Content-Range."""
    if not content_range:
        if pos == 0 and length == end:
            return  # the server ignored Range and sent the whole object: same bytes
        raise IntegrityError(f"{what}: no Content-Range in the response")
    try:
        unit, _, rest = content_range.partition(" ")
        span, _, total = rest.partition("/")
        first, _, last = span.partition("-")
        first_i, last_i = int(first), int(last)
    except ValueError:
        raise IntegrityError(f"{what}: bad Content-Range {content_range!r}") from None
    if total.isdigit() and int(total) < end:
        raise InputError(f"{what}: the object has only {total} bytes")
    if unit != "bytes" or first_i != pos or last_i != end - 1:
        raise IntegrityError(f"{what}: got Content-Range {content_range!r}")
    if length is not None and length != end - pos:
        raise IntegrityError(f"{what}: Content-Length {length} for {end - pos} bytes")


async def after_attempt(
    max_retries: int,
    what: str,
    start: int,
    pos: int,
    end: int,
    failures: int,
    failure: BaseException | None,
) -> int:
    """After one read of [start, end) that got to pos: the failure count for the next
    attempt (after a backoff), or raise when the bytes are wrong or retries run out."""
    if pos > end:
        raise IntegrityError(f"{what}: the server sent {pos - start} bytes")
    if pos == end:
        return failures
    failures += 1
    if failures > max_retries:
        if isinstance(failure, bce.ClientError):  # an error status: its own message
            raise translate(failure, what) from failure
        message = f"{what}: body cut short at byte {pos} after {failures} attempts"
        if failure is not None:
            raise translate(failure, message) from failure
        raise IntegrityError(message)
    await backoff(failures)
    return failures
