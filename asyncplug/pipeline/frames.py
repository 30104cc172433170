"""The seekable compressed object format, version 1 (docs/FORMAT.md).

    header   16 bytes   MAGIC_HEAD(8) version(1) codec(1) reserved(6)
    frames   ...        independently decompressible frames, back to back
    index    12 * n     per frame: compressed_len u32, raw_len u32, raw_crc32c u32
    trailer  48 bytes   index_offset u64, index_len u64, raw_size u64, frame_count u64,
                        index_crc32c u32, codec u8, version u8, reserved u16, MAGIC_TAIL(8)

All integers little-endian. Frame i starts at HEADER_SIZE + sum(compressed_len[:i]) and
holds raw bytes [sum(raw_len[:i]), sum(raw_len[:i+1])). The whole-stream check is the
per-frame raw CRC32C plus the CRC32C of the index: together they cover every raw byte,
and a mismatch names the frame. A raw (compression: none) object has none of this.
"""

from __future__ import annotations

import bisect
import itertools
import struct
from dataclasses import dataclass

from asyncplug.crc import crc32c as crc32c
from asyncplug.errors import IntegrityError
from asyncplug.pipeline.codecs import BY_IDENT, Codec

VERSION = 1
MAGIC_HEAD = b"\x89APLG\r\n\x1a"
MAGIC_TAIL = b"APLGIDX1"
HEADER = struct.Struct("<8sBB6x")
ENTRY = struct.Struct("<III")
TRAILER = struct.Struct("<QQQQIBBH8s")
HEADER_SIZE = HEADER.size  # 16
TRAILER_SIZE = TRAILER.size  # 48
MAX_FRAME_RAW = 64 * 1024 * 1024


# What backup_data records with an object (docs/FORMAT.md); restore reads the same names.
META_FORMAT = "asyncplug-format"  # a hint only: the trailer decides
META_CRC = "asyncplug-crc32c"  # whole-stream CRC32C of a single-PUT raw object
META_SIZE = "asyncplug-size"
FORMAT_RAW = "raw"
FORMAT_FRAMED = "framed-v1"
SIDECAR_SUFFIX = ".asyncplug-crc"  # whole-stream CRC32C of a multipart raw object


def sidecar_key(key: str) -> str:
    return key + SIDECAR_SUFFIX


# CRC32C combination (zlib's crc32_combine for the Castagnoli polynomial): the CRC of
# A + B from crc(A), crc(B) and len(B), so the whole-stream CRC of a raw upload comes from
# the per-part CRCs without hashing the bytes twice. _ZEROS[k] is the GF(2) 32x32 matrix
# (one int per column) that appends 2**k zero bytes to a CRC register.
_POLY = 0x82F63B78


def _times(matrix: list[int], vector: int) -> int:
    total, i = 0, 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _zero_operators() -> list[list[int]]:
    one_bit = [_POLY] + [1 << n for n in range(31)]
    ops = [one_bit]
    for _ in range(3 + 63):  # 1 -> 8 bits is one byte, then 2**k bytes up to 2**63
        ops.append([_times(ops[-1], column) for column in ops[-1]])
    return ops[3:]


_ZEROS: list[list[int]] = []


def crc32c_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC32C of A + B, given crc32c(A), crc32c(B) and len(B). About 50 us per call."""
    if not _ZEROS:
        _ZEROS.extend(_zero_operators())
    k = 0
    while len_b:
        if len_b & 1:
            crc_a = _times(_ZEROS[k], crc_a)
        len_b >>= 1
        k += 1
    return crc_a ^ crc_b


def pack_header(codec: Codec) -> bytes:
    return HEADER.pack(MAGIC_HEAD, VERSION, codec.ident)


def check_header(data: bytes) -> None:
    magic, version, _ = HEADER.unpack(data[:HEADER_SIZE])
    if magic != MAGIC_HEAD or version != VERSION:
        raise IntegrityError("compressed object has a bad header")


@dataclass(frozen=True)
class Frame:
    number: int
    offset: int  # where the compressed frame starts in the object
    length: int  # compressed length
    raw_start: int
    raw_len: int
    crc32c: int  # of the raw bytes


@dataclass(frozen=True)
class Trailer:
    index_offset: int
    index_len: int
    raw_size: int
    frame_count: int
    index_crc32c: int
    codec: Codec


def pack_index(entries: list[tuple[int, int, int]]) -> bytes:
    """entries: (compressed_len, raw_len, raw_crc32c) per frame, in order."""
    return b"".join(ENTRY.pack(*e) for e in entries)


def pack_trailer(index_offset: int, index: bytes | bytearray, raw_size: int, codec: Codec) -> bytes:
    return TRAILER.pack(
        index_offset, len(index), raw_size, len(index) // ENTRY.size, crc32c(index),
        codec.ident, VERSION, 0, MAGIC_TAIL,
    )  # fmt: skip


def parse_trailer(data: bytes, object_size: int) -> Trailer | None:
    """The trailer if `data` (the object's last TRAILER_SIZE bytes) is one, else None (raw)."""
    if len(data) != TRAILER_SIZE or not data.endswith(MAGIC_TAIL):
        return None
    off, ilen, raw_size, count, icrc, ident, version, _, _ = TRAILER.unpack(data)
    if version != VERSION or ident not in BY_IDENT:
        raise IntegrityError(f"compressed object format version {version}/codec {ident} unknown")
    if off + ilen + TRAILER_SIZE != object_size or ilen != count * ENTRY.size:
        raise IntegrityError("compressed object trailer does not match the object size")
    return Trailer(off, ilen, raw_size, count, icrc, BY_IDENT[ident])


class FrameIndex:
    """The parsed index: which frames hold a raw byte range."""

    def __init__(self, trailer: Trailer, index: bytes) -> None:
        if crc32c(index) != trailer.index_crc32c:
            raise IntegrityError("compressed object index checksum mismatch")
        self.codec = trailer.codec
        self.raw_size = trailer.raw_size
        self.frames: list[Frame] = []
        offset, raw = HEADER_SIZE, 0
        for number, (clen, rlen, fcrc) in enumerate(ENTRY.iter_unpack(index)):
            if rlen > MAX_FRAME_RAW:  # no frame may make a restore hold more than this
                raise IntegrityError(f"compressed object index: frame {number} is too large")
            self.frames.append(Frame(number, offset, clen, raw, rlen, fcrc))
            offset += clen
            raw += rlen
        if raw != trailer.raw_size or offset != trailer.index_offset:
            raise IntegrityError("compressed object index does not add up")
        self._starts = [f.raw_start for f in self.frames]

    def covering(self, start: int, end: int) -> list[Frame]:
        """The frames overlapping raw bytes [start, end), in order; [] when empty."""
        if start >= end:
            return []
        first = bisect.bisect_right(self._starts, start) - 1
        return list(itertools.takewhile(lambda f: f.raw_start < end, self.frames[first:]))

    def decode(self, frame: Frame, data: bytes | memoryview) -> bytes:
        """Decompress one frame and check its CRC32C. CPU-heavy: run it in a worker thread."""
        raw = self.codec.decompress(data, frame.raw_len)
        if crc32c(raw) != frame.crc32c:
            raise IntegrityError(
                f"frame {frame.number} (raw bytes {frame.raw_start}-"
                f"{frame.raw_start + frame.raw_len}) checksum mismatch: the object is corrupt"
            )
        return raw
