"""The file backend: objects are files under `path`, keys are paths relative to it.

Writes are atomic: a hidden temp file in the object's directory, fsync, rename,
fsync of the directory. User metadata lives in a hidden sidecar
`.<name>.asyncplug-meta.json`, written before the object is renamed into place.
Hidden names never show up in list(). Every blocking call runs in a thread
(asyncio.to_thread): an NFS mount can stall for seconds and must not stop the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from asyncplug.config import Config
from asyncplug.crc import crc32c as crc32c_of
from asyncplug.errors import (
    AccessDenied,
    InputError,
    IntegrityError,
    ObjectNotFound,
    PluginError,
    StorageError,
)
from asyncplug.spool import STEP, release
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, Upload, fsync_dir

TMP_PREFIX = ".asyncplug-tmp-"  # a put() in progress
UPLOAD_PREFIX = ".asyncplug-upload-"  # a multipart upload in progress
PROBE_PREFIX = ".asyncplug-probe-"  # check_bucket's write probe, removed at once
META_SUFFIX = ".asyncplug-meta.json"
T = TypeVar("T")
READ_CHUNK = 64 * 1024 * 1024  # one pread; Linux returns at most ~2 GiB per call anyway


def translate(exc: BaseException, what: str) -> PluginError:
    """The asyncplug error for an OSError (or anything else) from the file system."""
    if isinstance(exc, PluginError):
        return exc
    if isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{what}: does not exist")
    if isinstance(exc, PermissionError):
        return AccessDenied(f"{what}: permission denied (check the owner and mode of path)")
    if isinstance(exc, OSError):
        if exc.errno == errno.ENOSPC:
            return StorageError(f"{what}: no space left on the device")
        return StorageError(f"{what}: {exc.strerror or type(exc).__name__}")
    return StorageError(f"{what}: unexpected {type(exc).__name__}")


def is_hidden(name: str) -> bool:
    """Our temp, upload and metadata files, never listed."""
    return name.startswith((TMP_PREFIX, UPLOAD_PREFIX, PROBE_PREFIX)) or (
        name.startswith(".") and name.endswith(META_SUFFIX)
    )


def meta_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{META_SUFFIX}")


def write_all(fd: int, data: Buffer, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def check_crc(data: Buffer, expected: int, what: str) -> None:
    actual = crc32c_of(data)
    if actual != expected:
        raise IntegrityError(f"{what}: CRC32C is {actual:08x}, expected {expected:08x}")


def temp_name(prefix: str, name: str) -> str:
    return f"{prefix}{name}-{os.urandom(6).hex()}"


def write_meta(path: Path, metadata: Mapping[str, str] | None) -> None:
    """Put (or remove) the sidecar of the object at path, atomically; before the object."""
    side = meta_path(path)
    if not metadata:
        with contextlib.suppress(FileNotFoundError):
            side.unlink()
        return
    tmp = side.with_name(temp_name(TMP_PREFIX, side.name))
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(dict(metadata), out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, side)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class FileUpload(Upload):
    """Parts are pwrite()n at their offsets into one hidden temp file; complete() renames it."""

    def __init__(
        self, storage: FileStorage, key: str, path: Path, metadata: Mapping[str, str] | None
    ) -> None:
        self.key = key
        self._storage = storage
        self._path = path
        self._metadata = dict(metadata or {})
        self._tmp = path.with_name(temp_name(UPLOAD_PREFIX, path.name))
        self._fd: int | None = None
        self._parts: dict[int, tuple[int, int]] = {}  # number -> (offset, length)

    def open(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self._tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)

    def _write(self, number: int, offset: int, data: Buffer, crc: int) -> None:
        if self._fd is None:
            raise StorageError(f"upload of {self.key} is already finished")
        view = memoryview(data).cast("B")
        actual = 0
        for at in range(0, len(view), STEP):  # a spooled part is read and released by STEP
            piece = view[at : at + STEP]
            actual = crc32c_of(piece, actual)
            write_all(self._fd, piece, offset + at)
            release(view.obj, at, at + len(piece))
        if actual != crc:  # not recorded: complete() refuses the upload, abort() drops it
            what = f"part {number} of {self.key}"
            raise IntegrityError(f"{what}: CRC32C is {actual:08x}, expected {crc:08x}")

    async def put_part(self, number: int, offset: int, data: Buffer, crc32c: int) -> None:
        if not 1 <= number <= self._storage.max_parts:
            raise InputError(f"part number {number} is outside 1..{self._storage.max_parts}")
        what = f"write part {number} of {self._storage.where(self.key)}"
        await self._storage.run(what, self._write, number, offset, data, crc32c)
        self._parts[number] = (offset, len(data))

    def _complete(self) -> None:
        if self._fd is None:
            raise StorageError(f"upload of {self.key} is already finished")
        size = 0
        for number, (offset, length) in sorted(self._parts.items()):
            if offset != size:
                raise IntegrityError(f"part {number} of {self.key} starts at {offset}, not {size}")
            size += length
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, size)
            os.fsync(fd)
        finally:
            os.close(fd)
        write_meta(self._path, self._metadata)
        os.replace(self._tmp, self._path)
        fsync_dir(self._path.parent)

    async def complete(self) -> None:
        await self._storage.run(f"complete {self._storage.where(self.key)}", self._complete)

    def _abort(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    async def abort(self) -> None:
        await self._storage.run(f"abort upload of {self._storage.where(self.key)}", self._abort)


class FileStorage(Storage):
    name = "file"
    # Parts are pwrite()n straight to their offsets: no server-side part store and no
    # per-part request cost, so any part size works (S3's 5 MiB floor does not apply).
    min_part_size = 1

    def __init__(self, config: Config) -> None:
        self.config = config
        self.root = Path(config.path).expanduser()

    def where(self, key: str) -> str:
        return str(self.root / key)

    def path_of(self, key: str) -> Path:
        parts = key.split("/")
        if key.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise InputError(f"bad object key {key!r}")
        if is_hidden(parts[-1]):
            raise InputError(f"object key {key!r} uses a name reserved for temp files")
        return self.root.joinpath(*parts)

    async def run(self, what: str, func: Callable[..., T], *args: Any) -> T:
        """func(*args) in a thread; OSErrors become asyncplug errors."""
        try:
            return await asyncio.to_thread(func, *args)
        except Exception as exc:
            raise translate(exc, what) from exc

    # put

    def _put(self, path: Path, data: Buffer, crc: int, metadata: Mapping[str, str] | None) -> None:
        check_crc(data, crc, str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(temp_name(TMP_PREFIX, path.name))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_all(fd, data, 0)
                os.fsync(fd)
            finally:
                os.close(fd)
            write_meta(path, metadata)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        fsync_dir(path.parent)

    async def put(
        self, key: str, data: Buffer, crc32c: int, metadata: Mapping[str, str] | None = None
    ) -> None:
        path = self.path_of(key)
        await self.run(f"write {path}", self._put, path, data, crc32c, metadata)

    async def start_upload(self, key: str, metadata: Mapping[str, str] | None = None) -> Upload:
        path = self.path_of(key)
        upload = FileUpload(self, key, path, metadata)
        await self.run(f"start upload of {path}", upload.open)
        return upload

    # read

    def _read(self, path: Path, start: int, end: int) -> list[Buffer]:
        with open(path, "rb", buffering=0) as f:
            size = os.fstat(f.fileno()).st_size
            if end > size:
                raise InputError(f"bytes [{start}, {end}) of {path}: the object has {size} bytes")
            chunks: list[Buffer] = []
            pos = start
            while pos < end:
                chunk = os.pread(f.fileno(), min(end - pos, READ_CHUNK), pos)
                if not chunk:
                    raise IntegrityError(f"{path} shrank to {pos} bytes while reading")
                chunks.append(chunk)
                pos += len(chunk)
            return chunks

    async def get_range(self, key: str, start: int, end: int) -> list[Buffer]:
        path = self.path_of(key)
        if start < 0 or end < start:
            raise InputError(f"bad range [{start}, {end}) of {path}")
        if start == end:
            return []  # like S3Storage: no I/O at all
        return await self.run(f"read {path}", self._read, path, start, end)

    def _stat(self, key: str, path: Path) -> ObjectInfo:
        st = path.stat()
        if not path.is_file():
            raise FileNotFoundError(errno.ENOENT, "not a file", str(path))
        try:
            metadata = json.loads(meta_path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            metadata = {}
        return ObjectInfo(key, st.st_size, {str(k): str(v) for k, v in metadata.items()})

    async def stat(self, key: str) -> ObjectInfo:
        path = self.path_of(key)
        return await self.run(f"stat {path}", self._stat, key, path)

    def _scan(self, prefix: str) -> list[ObjectInfo]:
        # Walk the deepest directory the prefix names; filter on the full key.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        found: list[ObjectInfo] = []
        for directory, dirs, files in os.walk(top):
            rel = os.path.relpath(directory, self.root)
            for name in files:
                if is_hidden(name):
                    continue
                key = name if rel == "." else f"{rel}/{name}"
                if key.startswith(prefix):
                    with contextlib.suppress(FileNotFoundError):  # deleted meanwhile
                        found.append(
                            ObjectInfo(key, os.stat(os.path.join(directory, name)).st_size)
                        )
            dirs.sort()
        found.sort(key=lambda info: info.key)
        return found

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        found = await self.run(f"list {self.root}/{prefix}", self._scan, prefix)
        for info in found:
            yield info

    # delete

    def _delete(self, path: Path) -> None:
        for victim in (path, meta_path(path)):
            with contextlib.suppress(FileNotFoundError):
                victim.unlink()
        self._prune(path.parent)

    def _prune(self, directory: Path) -> None:
        """Remove directories left empty, up to (not including) the root."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty, or gone: stop
                return
            directory = directory.parent

    async def delete(self, keys: Sequence[str]) -> int:
        for key in keys:
            path = self.path_of(key)
            await self.run(f"delete {path}", self._delete, path)
        return len(keys)

    def _abort_uploads(self, prefix: str) -> int:
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = self.root / base if base else self.root
        count = 0
        for directory, _, files in os.walk(top):
            rel = os.path.relpath(directory, self.root)
            for name in files:
                for marker in (UPLOAD_PREFIX, TMP_PREFIX):
                    if not name.startswith(marker):
                        continue
                    target = name[len(marker) :].rsplit("-", 1)[0]
                    key = target if rel == "." else f"{rel}/{target}"
                    if key.startswith(prefix):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(directory, name))
                            count += marker == UPLOAD_PREFIX
        return count

    async def abort_uploads(self, prefix: str) -> int:
        what = f"remove unfinished uploads under {self.root}/{prefix}"
        return await self.run(what, self._abort_uploads, prefix)

    def _check(self, write: bool) -> None:
        if not self.root.exists():
            raise StorageError(f"directory {self.root} (option path) does not exist")
        if not self.root.is_dir():
            raise StorageError(f"{self.root} (option path) is not a directory")
        if not os.access(self.root, os.R_OK | os.X_OK):
            raise AccessDenied(f"directory {self.root} (option path) is not readable by this user")
        if write:
            folder = self.root / self.config.folder
            probe = folder / f"{PROBE_PREFIX}{socket.gethostname()}-{os.getpid()}"
            try:
                folder.mkdir(parents=True, exist_ok=True)
                probe.write_bytes(b"asyncplug write probe")
                probe.unlink()
            except PermissionError as exc:
                raise AccessDenied(
                    f"directory {folder} is not writable by this user (check owner and mode)"
                ) from exc
            except OSError as exc:
                raise StorageError(
                    f"cannot write a probe file in {folder}: {exc.strerror or exc}"
                ) from exc

    async def check_bucket(self, write: bool) -> None:
        await self.run(f"check directory {self.root}", self._check, write)

    async def close(self) -> None:
        return None  # threads belong to the loop's default executor
