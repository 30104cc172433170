"""CRC32C, the checksum of parts, sidecars and frames (the crc32c package, SSE4.2)."""

from __future__ import annotations

from importlib.machinery import PathFinder
from types import ModuleType


def _load_crc32c() -> ModuleType:
    """The crc32c package's C extension, loaded without the package's __init__.

    That __init__ asks importlib.metadata for the package version: 13-18 ms of imports
    (zipfile, email, csv, ...) in every process (python -X importtime), more than the
    rest of a small restore's work. Falls back to a plain import if the layout changes.
    """
    package = PathFinder.find_spec("crc32c")
    if package is not None and package.submodule_search_locations:
        spec = PathFinder.find_spec("crc32c._crc32c", package.submodule_search_locations)
        if spec is not None and spec.loader is not None:
            module = spec.loader.create_module(spec)
            if module is not None:
                spec.loader.exec_module(module)
                return module
    import crc32c

    return crc32c


_crc = _load_crc32c()


def crc32c(data: bytes | bytearray | memoryview, value: int = 0) -> int:
    return int(_crc.crc32c(data, value))
