"""The storage protocol every backend implements, method by method.

Backends only move bytes: no compression, no reordering, no knowledge of
gpbackup. Every method translates backend errors into `asyncplug.errors`
(ObjectNotFound, AccessDenied, StorageError, IntegrityError) and retries
transient failures itself (5xx, throttling, resets, timeouts) with
exponential backoff and jitter, up to `Config.max_retries`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

Buffer = bytes | bytearray | memoryview

# S3 limits (AWS S3 User Guide, "Amazon S3 multipart upload limits").
S3_MIN_PART_SIZE = 5 * 1024 * 1024
S3_MAX_PART_SIZE = 5 * 1024**3
S3_MAX_PARTS = 10_000
S3_MAX_OBJECT_SIZE = 5 * 1024**4


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a rename or a new file in `directory` durable (a directory store's objects,
    restore_file's target)."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    # User metadata (lower-case names without the x-amz-meta- prefix); filled by stat only.
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpSource:
    """An object's bytes over plain http, for restore's splice path (pipeline/splice.py)."""

    host: str
    port: int
    request: Callable[[int, int, str | None], bytes]  # (start, end, etag) -> signed GET head
    connect_timeout: float = 10.0  # seconds (the connect_timeout option)


class Upload(ABC):
    """A multipart upload in progress. Nothing is visible under `key` until complete()."""

    key: str

    @abstractmethod
    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        """Store part `number` (1-based) holding object bytes [offset, offset + len(data)).

        `crc32c` is the CRC32C of `data`; the backend must have it verified (S3: the
        x-amz-checksum-crc32c header). Parts may be put concurrently and in any order.
        `data` stays valid until this returns; the caller reuses it afterwards.
        """

    @abstractmethod
    async def complete(self) -> None:
        """Atomically make the object of all parts (in number order) visible under key."""

    @abstractmethod
    async def abort(self) -> None:
        """Discard every part. Idempotent; must not raise when the upload is already gone."""


class Storage(ABC):
    """One bucket+folder (s3) or one directory (file). Keys are full keys (folder included)."""

    name: str
    min_part_size: int = S3_MIN_PART_SIZE  # smallest part except the last
    max_part_size: int = S3_MAX_PART_SIZE
    max_parts: int = S3_MAX_PARTS

    @abstractmethod
    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        """Store a whole object in one request; atomic (all or nothing under key)."""

    @abstractmethod
    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        """Begin a multipart upload. The caller must complete() or abort() it."""

    @abstractmethod
    async def get_range(self, key: str, start: int, end: int) -> list[Buffer]:
        """Bytes [start, end) of the object as a list of chunks (no join: callers writev them).

        Must return exactly end - start bytes: the response's Content-Range and length are
        checked; a short or failed read is retried, resuming at the first missing byte.
        start == end returns []. Raises ObjectNotFound, or InputError past the end.
        """

    @abstractmethod
    async def stat(self, key: str) -> ObjectInfo:
        """Size and user metadata of an object; ObjectNotFound when it does not exist."""

    @abstractmethod
    def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        """Every object whose key starts with prefix, sorted by key, paginating as needed.

        Unfinished uploads and backend temp files are never listed.
        """

    @abstractmethod
    async def delete(self, keys: Sequence[str]) -> int:
        """Delete these objects (batched); missing keys are not an error. Returns how many."""

    @abstractmethod
    async def abort_uploads(self, prefix: str) -> int:
        """Abort every unfinished upload under prefix (of any process). Returns how many."""

    @abstractmethod
    async def check_bucket(self, write: bool) -> None:
        """Fail fast with a message that says what to fix when the bucket/directory is not
        reachable, or (write=True) not writable: writes and deletes a small probe object."""

    def http_source(self, key: str) -> HttpSource | None:
        """How to GET `key` over plain http with our own sockets, or None (TLS, a proxy,
        or a backend that is not S3)."""
        return None

    def recycle(self, chunks: Sequence[Buffer]) -> None:  # noqa: B027 - optional hook
        """The caller is done with these get_range chunks and their views: the backend may
        receive later reads into their memory. Optional (the default keeps nothing)."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    async def __aenter__(self) -> Storage:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
