"""What S3 object writes and reads add for the config: encryption at rest, storage class
and the upload checksum, as lean-path headers and as botocore parameters.

Applied in the storage layer, on both transports, so every object we write gets them:
data objects, multipart parts, sidecars and indexes alike (they all go through
Storage.put or Storage.start_upload).

SSE-C: the key read from sse_customer_key_file goes on PutObject, CreateMultipartUpload,
UploadPart, CompleteMultipartUpload, GetObject and HeadObject. It lives in this object
only: never in a repr, a log line or a message.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
from typing import Any

import botocore.exceptions as bce

from asyncplug.config import Config
from asyncplug.errors import AccessDenied, ConfigError, PluginError, StorageError
from asyncplug.storage.base import Buffer
from asyncplug.storage.s3common import crc_header

_CUSTOMER = "x-amz-server-side-encryption-customer-"
_INLINE_MD5 = 64 * 1024  # smaller bodies are hashed on the loop; bigger in a thread
_WRITES = ("PutObject", "CreateMultipartUpload")
_READS = ("GetObject", "HeadObject")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def read_customer_key(path: str) -> bytes:
    """The SSE-C key: a file holding the 32 key bytes, or their base64 (44 characters)."""
    what = f"option sse_customer_key_file: {path}"
    try:
        with open(path, "rb") as file:
            raw = file.read(1024)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{what}: cannot read it ({reason})") from None
    if len(raw) == 32:
        return raw
    try:
        key = base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{what}: must hold a 256-bit key (32 bytes, or their base64)")
    return key


class ObjectOptions:
    """Per-request additions for one config. Header dicts for the lean path (lower-case
    names, all signed), parameter dicts for botocore."""

    def __init__(self, config: Config) -> None:
        sse, kms_key = config.server_side_encryption, config.sse_kms_key_id
        if kms_key and not sse.startswith("aws:kms"):
            raise ConfigError(
                "option sse_kms_key_id needs server_side_encryption: aws:kms (or aws:kms:dsse)"
            )
        if config.sse_customer_key_file and sse:
            raise ConfigError(
                "options server_side_encryption and sse_customer_key_file exclude each other "
                "(SSE-C is its own kind of encryption)"
            )
        self.checksum = config.upload_checksum
        self.storage_class = config.storage_class
        self.encrypts = bool(sse or config.sse_customer_key_file)
        self.has_customer_key = bool(config.sse_customer_key_file)
        headers: dict[str, str] = {}
        params: dict[str, Any] = {}
        if sse:
            headers["x-amz-server-side-encryption"] = params["ServerSideEncryption"] = sse
        if kms_key:
            headers["x-amz-server-side-encryption-aws-kms-key-id"] = kms_key
            params["SSEKMSKeyId"] = kms_key
        if config.storage_class:
            headers["x-amz-storage-class"] = params["StorageClass"] = config.storage_class
        customer: dict[str, str] = {}
        customer_params: dict[str, Any] = {}
        if config.sse_customer_key_file:
            key = read_customer_key(config.sse_customer_key_file)
            customer = {
                f"{_CUSTOMER}algorithm": "AES256",
                f"{_CUSTOMER}key": _b64(key),
                f"{_CUSTOMER}key-md5": _b64(hashlib.md5(key).digest()),
            }
            # botocore adds the base64 and the MD5 itself (its sse_md5 handler).
            customer_params = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
        # PutObject, CreateMultipartUpload: everything; UploadPart, CompleteMultipartUpload,
        # GetObject, HeadObject: only the SSE-C key (S3 refuses the others there).
        self.write_headers = {**headers, **customer}
        self.read_headers = customer
        self.write_params = {**params, **customer_params}
        self.read_params = customer_params

    def __repr__(self) -> str:
        sse = self.write_headers.get("x-amz-server-side-encryption", "")
        customer = ", sse_customer_key_file=set" if self.has_customer_key else ""
        return (
            f"ObjectOptions(server_side_encryption={sse!r}, storage_class="
            f"{self.storage_class!r}, upload_checksum={self.checksum!r}{customer})"
        )

    # --- upload checksums: crc32c (x-amz-checksum-crc32c), md5 (Content-MD5), none ---

    async def checksum_headers(self, data: Buffer, crc32c: int) -> dict[str, str]:
        """The checksum header of a PutObject or UploadPart body."""
        if self.checksum == "crc32c":
            return {"x-amz-checksum-crc32c": crc_header(crc32c)}
        if self.checksum == "md5":
            return {"content-md5": await content_md5(data)}
        return {}

    async def checksum_params(self, data: Buffer, crc32c: int) -> dict[str, str]:
        if self.checksum == "crc32c":
            return {"ChecksumCRC32C": crc_header(crc32c)}
        if self.checksum == "md5":
            return {"ContentMD5": await content_md5(data)}
        return {}

    @property
    def multipart_headers(self) -> dict[str, str]:
        """CreateMultipartUpload: the parts' checksum algorithm (crc32c only)."""
        return {"x-amz-checksum-algorithm": "CRC32C"} if self.checksum == "crc32c" else {}

    @property
    def multipart_params(self) -> dict[str, str]:
        return {"ChecksumAlgorithm": "CRC32C"} if self.checksum == "crc32c" else {}

    # --- one line that says what to set ----------------------------------------------

    def explain(self, exc: PluginError, what: str) -> PluginError:
        """The error of call `what` with what to do about it, when its S3 code tells
        (else `exc` itself)."""
        cause = exc.__cause__
        if not isinstance(cause, bce.ClientError):
            return exc
        code = str(cause.response.get("Error", {}).get("Code", ""))
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        operation = cause.operation_name
        if code == "InvalidObjectState":
            return StorageError(
                f"{what}: the object is archived (storage class GLACIER "
                "or DEEP_ARCHIVE): request a restore first (S3 RestoreObject, e.g. aws s3api "
                "restore-object), wait for it to finish, then restore again"
            )
        if operation in _WRITES and code == "AccessDenied" and not self.encrypts:
            return AccessDenied(
                f"{exc.message}; if the bucket policy demands encryption, set "
                "server_side_encryption (AES256 or aws:kms) or sse_customer_key_file"
            )
        if operation in _READS and status == 400 and not self.has_customer_key:
            return StorageError(
                f"{exc.message}; the object may be encrypted with a customer key (SSE-C): "
                "set sse_customer_key_file"
            )
        if operation in _READS and status == 403 and self.has_customer_key:
            return AccessDenied(
                f"{exc.message}; or sse_customer_key_file is not the key the object was "
                "written with"
            )
        return exc


async def content_md5(data: Buffer) -> str:
    """Content-MD5 of a body; bodies over 64 KiB are hashed in a thread (hashlib lets go
    of the GIL), not on the event loop."""
    if len(data) <= _INLINE_MD5:
        return _b64(hashlib.md5(data).digest())
    digest = await asyncio.to_thread(lambda: hashlib.md5(data).digest())
    return _b64(digest)
