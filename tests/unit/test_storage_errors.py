"""Foreign errors -> asyncplug.errors, in one place per backend (httpx-style coverage test).

Every exception class botocore, aiohttp and the OS can raise at us must have an
explicit entry in s3.MAPPINGS; a new upstream class without one fails here.
"""

from __future__ import annotations

import asyncio
import errno
import inspect
import socket
import ssl
from typing import Any

import aiohttp.client_exceptions
import aiohttp.http_exceptions
import botocore.exceptions as bce
import pytest

from asyncplug.errors import (
    AccessDenied,
    ConfigError,
    InputError,
    IntegrityError,
    ObjectNotFound,
    PluginError,
    StorageError,
)
from asyncplug.storage import fs, s3

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
WHAT = "put s3://bucket/key"


def foreign_exceptions() -> list[type[BaseException]]:
    found: list[type[BaseException]] = []
    for module in (bce, aiohttp.http_exceptions):
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, BaseException)
                and not issubclass(cls, Warning)
                and cls.__module__.startswith(("botocore", "aiohttp"))
            ):
                found.append(cls)
    # Web sockets are never used here; every other client exception can reach us.
    client = [n for n in aiohttp.client_exceptions.__all__ if not n.startswith("WS")]
    found += [getattr(aiohttp.client_exceptions, n) for n in client]
    found += [
        OSError, ConnectionResetError, BrokenPipeError, PermissionError, TimeoutError,
        asyncio.TimeoutError, ssl.SSLError, socket.gaierror,
    ]  # fmt: skip
    return sorted(set(found), key=lambda c: f"{c.__module__}.{c.__qualname__}")


def bare(cls: type[BaseException]) -> BaseException:
    """An instance without running the class's own __init__ (their signatures differ)."""
    exc = cls.__new__(cls)
    BaseException.__init__(exc, f"secret {SECRET}\nsecond line")
    return exc


@pytest.mark.parametrize("cls", foreign_exceptions(), ids=lambda c: c.__qualname__)
def test_every_foreign_error_has_a_mapping(cls: type[BaseException]) -> None:
    assert s3.mapping_for(cls) is not None, f"no entry in s3.MAPPINGS for {cls!r}"
    error = s3.translate(bare(cls), WHAT)
    assert isinstance(error, PluginError)
    text = str(error)
    assert text.startswith(WHAT) and "\n" not in text and SECRET not in text


def client_error(code: str, status: int, message: str = "m", **meta: Any) -> bce.ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": message},
        "ResponseMetadata": {"HTTPStatusCode": status, **meta},
    }
    return bce.ClientError(response, "PutObject")


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("NoSuchKey", 404, ObjectNotFound),
        ("404", 404, ObjectNotFound),
        ("NoSuchUpload", 404, ObjectNotFound),
        ("NoSuchBucket", 404, StorageError),
        ("AccessDenied", 403, AccessDenied),
        ("403", 403, AccessDenied),
        ("InvalidAccessKeyId", 403, AccessDenied),
        ("SignatureDoesNotMatch", 403, AccessDenied),
        ("InvalidRange", 416, InputError),
        ("PermanentRedirect", 301, ConfigError),
        ("AuthorizationHeaderMalformed", 400, ConfigError),
        ("301", 301, ConfigError),
        ("BadDigest", 400, IntegrityError),
        ("XAmzContentChecksumMismatch", 400, IntegrityError),
        ("PreconditionFailed", 412, IntegrityError),
        ("SlowDown", 503, StorageError),
        ("InternalError", 500, StorageError),
        ("TooManyRequests", 429, StorageError),
        ("SomethingNew", 400, StorageError),
    ],
)
def test_client_error_codes(code: str, status: int, expected: type[PluginError]) -> None:
    error = s3.translate(client_error(code, status, f"contains {SECRET}"), WHAT)
    assert type(error) is expected
    assert code in str(error) and SECRET not in str(error)


def test_message_counts_attempts_and_names_the_hint() -> None:
    busy = s3.translate(client_error("SlowDown", 503, RetryAttempts=8), WHAT)
    assert str(busy) == f"{WHAT}: the server kept failing (SlowDown) after 9 attempts"
    denied = s3.translate(client_error("AccessDenied", 403), WHAT)
    assert "aws_access_key_id" in str(denied)


def test_urls_lose_their_password() -> None:
    exc = bce.ProxyConnectionError(proxy_url=f"http://user:{SECRET}@proxy:3128", error="x")
    text = str(s3.translate(exc, WHAT))
    assert SECRET not in text and "http://***@proxy:3128" in text
    exc2 = bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:9/bucket/key", error="x")
    assert str(s3.translate(exc2, WHAT)).endswith(
        "cannot connect to endpoint http://127.0.0.1:9/bucket/key"
    )


def test_plugin_errors_pass_through_and_unknown_errors_are_storage_errors() -> None:
    mine = IntegrityError("already ours")
    assert s3.translate(mine, WHAT) is mine

    class Strange(Exception):
        pass

    assert str(s3.translate(Strange(), WHAT)) == f"{WHAT}: unexpected Strange"


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file"), ObjectNotFound),
        (PermissionError(errno.EACCES, "Permission denied"), AccessDenied),
        (OSError(errno.ENOSPC, "No space left on device"), StorageError),
        (OSError(errno.EIO, "Input/output error"), StorageError),
        (IsADirectoryError(errno.EISDIR, "Is a directory"), StorageError),
        (ValueError("odd"), StorageError),
    ],
)
def test_fs_translate(exc: BaseException, expected: type[PluginError]) -> None:
    error = fs.translate(exc, "write /mnt/backups/x")
    assert type(error) is expected and str(error).startswith("write /mnt/backups/x: ")


def test_config_errors_are_config_errors() -> None:
    assert type(s3.translate(bce.NoRegionError(), WHAT)) is ConfigError
