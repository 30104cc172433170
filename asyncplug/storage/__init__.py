"""Storage backends behind one protocol (see base.py)."""

from __future__ import annotations

from asyncplug.config import Config
from asyncplug.storage.base import Buffer, ObjectInfo, Storage, Upload


def open_storage(config: Config) -> Storage:
    """The backend the config selects (`storage: s3` by default, or `file`)."""
    if config.storage == "file":
        from asyncplug.storage.fs import FileStorage

        return FileStorage(config)
    from asyncplug.storage.s3 import S3Storage

    return S3Storage(config)


__all__ = ["Buffer", "ObjectInfo", "Storage", "Upload", "open_storage"]
