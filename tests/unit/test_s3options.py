"""storage.s3options: the headers and parameters each setting adds, and the hints."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from asyncplug.config import build_config
from asyncplug.errors import AccessDenied, ConfigError, PluginError, StorageError
from asyncplug.storage.s3common import status_error, translate
from asyncplug.storage.s3options import ObjectOptions, content_md5

S3 = {"bucket": "b", "folder": "f", "region": "us-east-1"}


def options(**extra: Any) -> ObjectOptions:
    return ObjectOptions(build_config({**S3, **extra}))


def test_defaults_add_nothing_but_the_crc32c() -> None:
    opts = options()
    assert opts.write_headers == opts.read_headers == {}
    assert opts.write_params == opts.read_params == {}
    assert opts.multipart_headers == {"x-amz-checksum-algorithm": "CRC32C"}
    assert opts.multipart_params == {"ChecksumAlgorithm": "CRC32C"}


async def test_kms_and_storage_class_on_writes_only() -> None:
    opts = options(
        server_side_encryption="aws:kms", sse_kms_key_id="alias/gp", storage_class="glacier_ir"
    )
    assert opts.write_headers == {
        "x-amz-server-side-encryption": "aws:kms",
        "x-amz-server-side-encryption-aws-kms-key-id": "alias/gp",
        "x-amz-storage-class": "GLACIER_IR",
    }
    assert opts.write_params == {
        "ServerSideEncryption": "aws:kms",
        "SSEKMSKeyId": "alias/gp",
        "StorageClass": "GLACIER_IR",
    }
    assert opts.read_headers == {} and opts.read_params == {}


@pytest.mark.parametrize("encoding", ["raw", "base64"])
def test_customer_key_goes_everywhere_and_nowhere_visible(tmp_path: Path, encoding: str) -> None:
    key = os.urandom(32)
    path = tmp_path / "key"
    path.write_bytes(key if encoding == "raw" else base64.b64encode(key) + b"\n")
    opts = options(sse_customer_key_file=str(path), storage_class="STANDARD_IA")
    customer = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(key).decode(),
        "x-amz-server-side-encryption-customer-key-md5": base64.b64encode(
            hashlib.md5(key).digest()
        ).decode(),
    }
    assert opts.read_headers == customer
    assert opts.write_headers == {"x-amz-storage-class": "STANDARD_IA", **customer}
    assert opts.read_params == {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    shown = repr(opts)
    assert "sse_customer_key_file=set" in shown
    assert customer["x-amz-server-side-encryption-customer-key"] not in shown
    assert str(key) not in shown


@pytest.mark.parametrize(
    ("extra", "content", "message"),
    [
        ({"sse_kms_key_id": "k"}, None, "sse_kms_key_id needs server_side_encryption: aws:kms"),
        ({"server_side_encryption": "AES256", "sse_kms_key_id": "k"}, None, "needs"),
        ({"server_side_encryption": "AES256"}, b"k" * 32, "exclude each other"),
        ({}, b"tiny secret", "must hold a 256-bit key"),
        ({}, b"not base64 at all, not 32 bytes long!!!!!!!!", "must hold a 256-bit key"),
    ],
)
def test_mistakes(
    tmp_path: Path, extra: dict[str, str], content: bytes | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "key").write_bytes(content)
        extra = {**extra, "sse_customer_key_file": str(tmp_path / "key")}
    with pytest.raises(ConfigError, match=message) as raised:
        options(**extra)
    if content is not None:
        assert content.decode(errors="replace") not in str(raised.value)


def test_missing_key_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read it"):
        options(sse_customer_key_file=str(tmp_path / "nothing"))


async def test_checksums() -> None:
    body = os.urandom(100_000)  # hashed in a thread
    md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
    assert await content_md5(body) == md5
    assert (
        await content_md5(memoryview(body)[:10])
        == base64.b64encode(hashlib.md5(body[:10]).digest()).decode()
    )
    assert await options(upload_checksum="md5").checksum_headers(body, 1) == {"content-md5": md5}
    assert await options(upload_checksum="md5").checksum_params(body, 1) == {"ContentMD5": md5}
    assert await options().checksum_headers(body, 1) == {"x-amz-checksum-crc32c": "AAAAAQ=="}
    assert await options().checksum_params(body, 1) == {"ChecksumCRC32C": "AAAAAQ=="}
    none = options(upload_checksum="none")
    assert await none.checksum_headers(body, 1) == {} == await none.checksum_params(body, 1)
    assert none.multipart_headers == {} == none.multipart_params


def error(status: int, code: str, operation: str, what: str = "call") -> PluginError:
    cause = status_error(status, code, 0, operation)
    exc = translate(cause, what)
    exc.__cause__ = cause
    return exc


def test_hints(tmp_path: Path) -> None:
    plain = options()
    denied = error(403, "AccessDenied", "PutObject")
    hinted = plain.explain(denied, "put x")
    assert isinstance(hinted, AccessDenied) and "set server_side_encryption" in str(hinted)
    assert plain.explain(error(403, "AccessDenied", "CreateMultipartUpload"), "x") is not denied
    assert options(server_side_encryption="AES256").explain(denied, "put x") is denied
    signature = error(403, "SignatureDoesNotMatch", "PutObject")
    assert plain.explain(signature, "put x") is signature
    archived = plain.explain(error(403, "InvalidObjectState", "GetObject"), "get s3://b/k")
    assert type(archived) is StorageError and str(archived).startswith("get s3://b/k: ")
    assert "restore-object" in str(archived)
    assert "set sse_customer_key_file" in str(plain.explain(error(400, "400", "HeadObject"), "x"))
    (tmp_path / "key").write_bytes(b"k" * 32)
    keyed = options(sse_customer_key_file=str(tmp_path / "key"))
    wrong = keyed.explain(error(403, "AccessDenied", "GetObject"), "x")
    assert "sse_customer_key_file is not the key" in str(wrong)
    assert keyed.explain(denied, "x") is denied  # SSE-C is encryption
    unrelated = StorageError("no cause")
    assert plain.explain(unrelated, "x") is unrelated
