"""asyncplug.crc: the crc32c package's extension, loaded without the package's __init__."""

from __future__ import annotations

import subprocess
import sys

import crc32c

from asyncplug import crc


def test_matches_the_package_and_the_standard_check_value() -> None:
    assert crc.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    data = bytes(range(256)) * 1000
    assert crc.crc32c(data) == crc32c.crc32c(data)
    assert crc.crc32c(data[500:], crc.crc32c(data[:500])) == crc32c.crc32c(data)
    assert crc.crc32c(memoryview(bytearray(data))) == crc32c.crc32c(data)


def test_loading_skips_the_version_lookup() -> None:
    code = (
        "import sys, asyncplug.crc as c; "
        "assert c._crc.__name__ == 'crc32c._crc32c', c._crc; "
        "assert 'importlib.metadata' not in sys.modules and 'crc32c' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
