"""One async function per plugin command (SPEC §1). Each returns the bytes it moved.

The commands build keys with `asyncplug.keys`, talk to the backend through the
storage protocol and leave byte moving to the pipelines. Argument parsing, exit
codes and the log line per command belong to `asyncplug.cli`.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TextIO

from asyncplug import keys
from asyncplug.config import Config
from asyncplug.errors import InputError, IntegrityError, ObjectNotFound, StorageError
from asyncplug.offsets import read_offsets
from asyncplug.storage import ObjectInfo, Storage, open_storage

log = logging.getLogger(__name__)

STDIN_FD = 0
STDOUT_FD = 1

COORDINATOR_SCOPES = ("coordinator", "master")  # "master" is the old name
SCOPES = (*COORDINATOR_SCOPES, "segment_host", "segment")

# Objects deleted per round of delete_backup / delete_directory: bounds memory for
# backups with millions of objects (one data file per table per segment).
DELETE_ROUND = 10_000


@dataclass(frozen=True)
class Hook:
    """The arguments of the setup_* and cleanup_* commands."""

    local_dir: str
    scope: str
    content_id: int | None = None

    @property
    def at_coordinator(self) -> bool:
        return self.scope in COORDINATOR_SCOPES

    @property
    def once_per_host(self) -> bool:
        """Coordinator and segment_host scopes run once per host; segment runs once per segment."""
        return self.scope != "segment"


def location(config: Config, key: str) -> str:
    """Where a key lives, for messages: s3://bucket/key or the file path."""
    if config.storage == "file":
        return os.path.join(config.path, key)
    return f"s3://{config.bucket}/{key}"


# --- setup and cleanup hooks -------------------------------------------------------


async def setup_plugin_for_backup(config: Config, hook: Hook) -> int:
    """Config is already valid here. Probe the bucket once per host through the calls
    the data commands make (storage/probe.py: list, write, read back, delete a small
    object), so that a host with a missing NFS mount, other credentials (instance roles),
    missing rights, another CA bundle or no route to the endpoint fails before the backup
    starts, naming what is missing. Segment scope does nothing: a host runs it once per
    segment."""
    if hook.once_per_host:
        async with open_storage(config) as storage:
            await storage.check_bucket(write=True)
        log.info("%s scope: %s is reachable and writable", hook.scope, location(config, ""))
    _start_warm_server(config, hook)
    return 0


async def setup_plugin_for_restore(config: Config, hook: Hook) -> int:
    """Create LOCAL_BACKUP_DIR (the plugin API asks for it: gprestore reads files there),
    probe the bucket once per host, and at coordinator scope check that the backup of
    this timestamp exists."""
    try:
        os.makedirs(hook.local_dir, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"cannot create local backup directory {hook.local_dir}: {exc.strerror or exc}"
        ) from exc
    if not hook.once_per_host:
        return 0
    timestamp = keys.timestamp_of(hook.local_dir) if hook.at_coordinator else ""
    async with open_storage(config) as storage:
        await storage.check_bucket(write=False)
        if timestamp:
            prefix = keys.backup_prefix(config.folder, timestamp)
            if await _first(storage, prefix) is None:
                raise ObjectNotFound(
                    f"backup {timestamp} not found: no objects under {location(config, prefix)} "
                    "(check the timestamp, bucket and folder)"
                )
    _start_warm_server(config, hook)
    return 0


async def cleanup_plugin_for_backup(config: Config, hook: Hook) -> int:
    """Runs even when the backup failed: at coordinator scope abort every unfinished
    multipart upload under the backup's prefix, so no invisible parts are billed."""
    _stop_warm_server(hook)
    if not hook.at_coordinator:
        return 0
    prefix = keys.backup_prefix(config.folder, keys.timestamp_of(hook.local_dir))
    async with open_storage(config) as storage:
        aborted = await storage.abort_uploads(prefix)
    log.info("aborted %d unfinished upload(s) under %s", aborted, location(config, prefix))
    return 0


async def cleanup_plugin_for_restore(config: Config, hook: Hook) -> int:
    """Nothing to tear down but the warm server: every command opens and closes its own
    connections."""
    _stop_warm_server(hook)
    return 0


def _start_warm_server(config: Config, hook: Hook) -> None:
    """segment_host scope runs once per segment host, before its per-table commands."""
    if hook.scope != "segment_host" or not config.warm_server:
        return
    from asyncplug import server

    pid = server.start()
    if pid is None:
        log.warning("no warm server on this host: every command starts its own process")
    else:
        log.info("warm server running, pid %d", pid)


def _stop_warm_server(hook: Hook) -> None:
    if hook.scope == "segment_host":
        from asyncplug import server

        server.stop()


# --- files and streams ------------------------------------------------------------


async def backup_file(config: Config, path: str) -> int:
    """Copy a local file to storage; the local file stays."""
    key = keys.object_key(config.folder, path)
    if not os.path.isfile(path):
        why = "not a regular file" if os.path.exists(path) else "no such file"
        raise InputError(f"cannot back up {path}: {why}")
    from asyncplug.pipeline.backup import backup_path  # a restore never loads it (~10 ms)

    async with open_storage(config) as storage:
        return await backup_path(storage, key, path, config)


async def restore_file(config: Config, path: str) -> int:
    """Fetch an object back to `path` (parents created, never a partial file)."""
    key = keys.object_key(config.folder, path)
    from asyncplug.pipeline.restore import restore_path  # a backup never loads it

    async with open_storage(config) as storage:
        return await restore_path(storage, key, path, config)


async def backup_data(config: Config, data_key: str, fd: int = STDIN_FD) -> int:
    """Store the stream read from `fd` (stdin) to EOF."""
    key = keys.object_key(config.folder, data_key)
    from asyncplug.pipeline.backup import backup_stream

    async with open_storage(config) as storage:
        return await backup_stream(storage, key, fd, config)


async def restore_data(config: Config, data_key: str, fd: int = STDOUT_FD) -> int:
    """Write the stored stream to `fd` (stdout), byte-identical to what backup_data read."""
    key = keys.object_key(config.folder, data_key)
    from asyncplug.pipeline.restore import restore_stream

    async with open_storage(config) as storage:
        return await restore_stream(storage, key, fd, config)


async def restore_data_subset(
    config: Config, data_key: str, offsets_file: str, fd: int = STDOUT_FD
) -> int:
    """Write the byte ranges listed in the offsets file, in the listed order.

    The file is read and checked before storage is touched; restore_stream checks the
    ranges against the object size before it writes anything.
    """
    key = keys.object_key(config.folder, data_key)
    ranges = read_offsets(offsets_file)
    from asyncplug.pipeline.restore import restore_stream

    async with open_storage(config) as storage:
        return await restore_stream(storage, key, fd, config, ranges=ranges)


# --- verify ----------------------------------------------------------------------


async def verify(config: Config, what: str, out: TextIO | None = None) -> int:
    """Re-read every object of the backup TIMESTAMP (or the one object KEY) and check
    every block and frame, restoring nothing. One line per object on stdout:
    `ok|CORRUPT|unverified <tab> key <tab> size <tab> detail`; IntegrityError (exit 8)
    naming each corrupt object and byte offset. Objects are read one at a time, each as
    a restore reads it (restore_max_concurrent_requests GETs, the restore memory bound)."""
    from asyncplug.pipeline.blocks import INDEX_SUFFIX, BlockMismatch
    from asyncplug.pipeline.frames import SIDECAR_SUFFIX
    from asyncplug.pipeline.restore import verify_object

    stream = sys.stdout if out is None else out
    backup = keys.TIMESTAMP_RE.match(what.strip().strip("\"'"))
    corrupt: list[str] = []
    count = 0
    async with open_storage(config) as storage:
        if backup:
            prefix = keys.backup_prefix(config.folder, what)
            listing: AsyncIterator[ObjectInfo] = storage.list(prefix)
        else:
            prefix = _verify_key(config, what)
            listing = _one(storage, prefix)
        async for info in listing:
            if info.key.endswith((INDEX_SUFFIX, SIDECAR_SUFFIX)):
                continue  # records of an object, checked with it
            count += 1
            try:
                checked = await verify_object(storage, await storage.stat(info.key), config)
            except IntegrityError as exc:
                at = f" at byte {exc.offset}" if isinstance(exc, BlockMismatch) else ""
                corrupt.append(f"{info.key}{at}")
                line = f"CORRUPT\t{info.key}\t{info.size}\t{exc}"
            else:
                state = "unverified" if checked.startswith("nothing: no") else "ok"
                line = f"{state}\t{info.key}\t{info.size}\tchecked {checked}"
            stream.write(line + "\n")
            stream.flush()
    if not count:
        raise ObjectNotFound(f"nothing to verify under {location(config, prefix)}")
    if corrupt:
        raise IntegrityError(
            f"verify: {len(corrupt)} of {count} object(s) corrupt: {'; '.join(corrupt)}"
        )
    log.info("verified %d object(s) under %s", count, location(config, prefix))
    return 0


def _verify_key(config: Config, what: str) -> str:
    """A whole key (folder first), or a gpbackup path as restore_data takes it."""
    name = what.strip().strip("\"'")
    if name.startswith(config.folder + "/"):
        return name
    return keys.object_key(config.folder, name)


async def _one(storage: Storage, key: str) -> AsyncIterator[ObjectInfo]:
    yield await storage.stat(key)  # ObjectNotFound (exit 6) when it does not exist


# --- backups and directories ------------------------------------------------------


async def delete_backup(config: Config, timestamp: str) -> int:
    """Delete every object of one backup; sibling backups stay (the prefix ends in '/')."""
    prefix = keys.backup_prefix(config.folder, timestamp)
    async with open_storage(config) as storage:
        aborted = await storage.abort_uploads(prefix)
        deleted = await _delete_all(storage, prefix)
    if deleted == 0 and aborted == 0:
        log.warning("backup %s: nothing to delete under %s", timestamp, location(config, prefix))
    log.info(
        "backup %s: deleted %d object(s), aborted %d unfinished upload(s) under %s",
        timestamp, deleted, aborted, location(config, prefix),
    )  # fmt: skip
    return 0


async def list_directory(config: Config, prefix: str = "", out: TextIO | None = None) -> int:
    """Print `<key>\\t<size in bytes>` for every object under the folder (or PREFIX in it).

    Keys are printed whole (folder included), as stored and as the Go plugin prints
    them, so a line can be fed back to delete_directory. PREFIX names a directory:
    list_directory PREFIX shows exactly what delete_directory PREFIX deletes.
    """
    stream = sys.stdout if out is None else out
    where = _directory(config, prefix)
    count = total = 0
    async with open_storage(config) as storage:
        async for info in storage.list(where):
            stream.write(f"{info.key}\t{info.size}\n")
            count += 1
            total += info.size
    stream.flush()
    log.info("listed %d object(s), %d bytes, under %s", count, total, location(config, where))
    return 0


async def delete_directory(config: Config, prefix: str) -> int:
    """Delete everything under PREFIX, which must name a directory inside the folder."""
    where = _directory(config, prefix)
    if where == _directory(config, "") and not _names_folder(config.folder, prefix):
        # `.`, `./`, `//`, `./.` all normalize to the folder root: only the folder's own
        # name may delete all of it, so a stray dot cannot.
        raise InputError(
            f"refusing prefix {prefix!r}: it names the whole folder; name a directory inside "
            f"it (give the folder itself, {config.folder!r}, to delete all of it)"
        )
    async with open_storage(config) as storage:
        aborted = await storage.abort_uploads(where)
        deleted = await _delete_all(storage, where)
    log.info(
        "deleted %d object(s), aborted %d unfinished upload(s) under %s",
        deleted, aborted, location(config, where),
    )  # fmt: skip
    return 0


def _directory(config: Config, prefix: str) -> str:
    """The folder-checked prefix of PREFIX, always ending in '/' (a directory, not a stem)."""
    where = keys.folder_prefix(config.folder, prefix)
    return where if where.endswith("/") else where + "/"


def _names_folder(folder: str, prefix: str) -> bool:
    """PREFIX spells the folder itself (`prod/cluster1`, `./prod/cluster1/`)."""
    raw = prefix.strip().strip('"').strip("'")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    return bool(parts) and parts == [p for p in folder.split("/") if p not in ("", ".")]


async def _first(storage: Storage, prefix: str) -> ObjectInfo | None:
    listing = storage.list(prefix)
    try:
        async for info in listing:
            return info
        return None
    finally:
        await _close(listing)


async def _delete_all(storage: Storage, prefix: str) -> int:
    """Delete every object under prefix in rounds of DELETE_ROUND keys.

    Each round lists afresh from the start (the previous round's keys are gone), so
    no listing runs while its own pages are being deleted and memory stays bounded.
    """
    deleted = 0
    previous: set[str] = set()
    while True:
        batch: list[str] = []
        listing = storage.list(prefix)
        try:
            async for info in listing:
                batch.append(info.key)
                if len(batch) >= DELETE_ROUND:
                    break
        finally:
            await _close(listing)
        if not batch:
            return deleted
        if previous.intersection(batch):
            raise StorageError(f"objects under {prefix} are still listed after being deleted")
        deleted += await storage.delete(batch)
        previous = set(batch)


async def _close(listing: AsyncIterator[ObjectInfo]) -> None:
    """Close a listing left early so its connection goes back to the pool now."""
    aclose = getattr(listing, "aclose", None)
    if aclose is not None:
        await aclose()
