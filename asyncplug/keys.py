"""Object keys: the reference Go plugin's layout, so raw backups are interchangeable.

<folder>/backups/<YYYYMMDD>/<timestamp>/<basename>
"""

from __future__ import annotations

import posixpath
import re

from asyncplug.errors import InputError

TIMESTAMP_RE = re.compile(r"^\d{14}$")


def object_key(folder: str, local_path: str) -> str:
    """The key of a local backup path: its last four components under the folder.

    The Go plugin joins the last four `/`-separated fields verbatim and its SDK then
    cleans the path; gpbackup's paths have no empty, `.` or `..` fields there, and a path
    that has one is refused rather than stored under a key the Go plugin would not use.
    """
    last = local_path.split("/")[-4:]
    if len(last) < 4 or any(part in ("", ".", "..") for part in last):
        raise InputError(
            f"{local_path!r} is not a gpbackup path (want .../backups/YYYYMMDD/TIMESTAMP/FILE)"
        )
    return f"{folder}/{'/'.join(last)}"


def backup_prefix(folder: str, timestamp: str) -> str:
    """The prefix holding every object of one backup (with a trailing slash)."""
    timestamp = timestamp.strip().strip('"').strip("'")
    if not TIMESTAMP_RE.match(timestamp):
        raise InputError(f"timestamp must be 14 digits YYYYMMDDHHMMSS, got {timestamp!r}")
    return f"{folder}/backups/{timestamp[:8]}/{timestamp}/"


def timestamp_of(local_dir: str) -> str:
    """The backup timestamp named by LOCAL_BACKUP_DIR (its last component)."""
    name = posixpath.basename(local_dir.rstrip("/"))
    if not TIMESTAMP_RE.match(name):
        raise InputError(f"{local_dir!r} does not end in a 14-digit backup timestamp")
    return name


def folder_prefix(folder: str, prefix: str = "") -> str:
    """`<folder>/<prefix>` for list/delete_directory; refuse anything outside the folder.

    A prefix may be given relative to the folder (`backups/20250101`) or with the
    folder in front (`prod/cluster1/backups`). `..`, absolute paths and other
    top-level prefixes are refused.
    """
    raw = prefix.strip().strip('"').strip("'")
    if raw.startswith("/") or "\\" in raw or "\x00" in raw:
        raise InputError(
            f"refusing prefix {prefix!r}: it must be a relative path inside {folder!r}"
        )
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise InputError(f"refusing prefix {prefix!r}: '..' would leave the folder {folder!r}")
    folder_parts = folder.split("/")
    if parts[: len(folder_parts)] == folder_parts:
        parts = parts[len(folder_parts) :]
    elif len(folder_parts) > 1 and parts and parts[0] == folder_parts[0]:
        # `prod/cluster2` or `prod` next to folder prod/cluster1: a path from the bucket
        # root that is not inside the folder, not a subdirectory named `prod`.
        raise InputError(f"refusing prefix {prefix!r}: it lies outside the folder {folder!r}")
    rest = "/".join(parts)
    return f"{folder}/{rest}" if rest else f"{folder}/"
