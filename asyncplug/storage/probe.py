"""The setup hooks' bucket check, through the calls backup_data and restore_data make.

A check that used other code (HeadBucket through aiobotocore) could pass on a host
where the data calls then fail: another CA bundle, another endpoint, other rights.
So the probe goes through the Storage methods the pipelines use (on S3: the lean path
when the config allows it), and each denied call names the IAM permission it needs:

    list the folder (first page)      s3:ListBucket; NoSuchBucket: no such bucket
    ranged GET of a missing key       s3:GetObject (NoSuchKey is the expected answer)
    backup only: PUT a probe object   s3:PutObject
                 HEAD and ranged GET  s3:GetObject (the same bytes must come back)
                 DELETE it            s3:DeleteObject
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from asyncplug.crc import crc32c
from asyncplug.errors import AccessDenied, IntegrityError, ObjectNotFound
from asyncplug.storage.base import ObjectInfo, Storage

T = TypeVar("T")

PROBE = b"asyncplug setup probe: written, read back and deleted by setup_plugin_for_backup\n"
PROBE_NAME = ".asyncplug-probe-"


def probe_key(folder: str) -> str:
    return f"{folder}/{PROBE_NAME}{socket.gethostname()}-{os.getpid()}"


async def _needs(permission: str, call: Awaitable[T]) -> T:
    """Run one call; a denial names the permission it needs."""
    try:
        return await call
    except AccessDenied as exc:
        raise AccessDenied(f"{exc}; this call needs {permission} on the bucket and folder") from exc


async def _first(listing: AsyncIterator[ObjectInfo]) -> None:
    try:
        async for _ in listing:
            break
    finally:
        aclose = getattr(listing, "aclose", None)
        if aclose is not None:
            await aclose()


async def check(storage: Storage, folder: str, write: bool) -> None:
    """Raise what to fix when the bucket is not usable for a backup (write) or a restore."""
    key = probe_key(folder)
    # A listing first: a missing bucket shows there on every server (SeaweedFS creates
    # one on PUT) and a denied ListBucket is then not mistaken for a denied GetObject.
    await _needs("s3:ListBucket", _first(storage.list(f"{folder}/")))
    with contextlib.suppress(ObjectNotFound):  # NoSuchKey: the read path works
        await _needs("s3:GetObject", storage.get_range(key, 0, 1))
    if not write:
        return
    await _needs("s3:PutObject", storage.put(key, PROBE, crc32c(PROBE)))
    try:
        info = await _needs("s3:GetObject", storage.stat(key))
        got = await _needs("s3:GetObject", storage.get_range(key, 0, len(PROBE)))
        if info.size != len(PROBE) or b"".join(got) != PROBE:
            raise IntegrityError(f"setup probe {key}: the bytes read back are not the same")
        storage.recycle(got)
    except BaseException:
        with contextlib.suppress(Exception):  # the first failure is the one to report
            await storage.delete([key])
        raise
    await _needs("s3:DeleteObject", storage.delete([key]))
