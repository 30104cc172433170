"""The block index of a raw object, version 1 (docs/FORMAT.md): a CRC32C per fixed-size
block, stored in a sidecar object `<key>.asyncplug-idx` found from the key alone.

    header  32 bytes  magic(8) version u8, reserved(3), block_size u32, raw_size u64,
                      page_blocks u32, header_crc32c u32 (of the 28 bytes before it)
    pages   ...       page j: the CRC32C u32 of blocks [j * P, min((j + 1) * P, n)),
                      then the CRC32C u32 of those entries (P = page_blocks)

All integers little-endian; n = ceil(raw_size / block_size). Block i holds raw bytes
[i * B, min((i + 1) * B, raw_size)). Page j starts at 32 + j * (4 * P + 4), so a
restore of any byte range reads only the header and the pages it needs, each checked
by its own CRC.

Backup computes the block CRCs on the reader thread as the bytes arrive (BlockRecorder);
the part CRCs are combined from them. Restore checks every block before a byte of it is
written (BlockIndex.bad_blocks).
"""

from __future__ import annotations

import array
import asyncio
import struct
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from asyncplug.crc import crc32c
from asyncplug.errors import AccessDenied, InputError, IntegrityError, ObjectNotFound
from asyncplug.pipeline import frames
from asyncplug.storage.base import ObjectInfo, Storage

VERSION = 1
MAGIC = b"\x89APLGBK\n"
HEADER = struct.Struct("<8sB3xIQI")
HEADER_SIZE = HEADER.size + 4  # 32: the fields, then their CRC32C
# 256 KiB: a subset range costs at most one block more at each edge (20 ranges: ~5 MiB),
# and the index 16 KiB per GiB of stream.
BLOCK_SIZE = 256 * 1024
PAGE_BLOCKS = 1024  # 4 KiB of CRCs a page: 256 MiB of stream at the default block size
# An index this small is read whole, with its header, in one GET.
SMALL_INDEX = 64 * 1024
INDEX_SUFFIX = ".asyncplug-idx"
META_INDEX = "asyncplug-index"  # user metadata: backup wrote an index of this version


def index_key(key: str) -> str:
    return key + INDEX_SUFFIX


def block_count(raw_size: int, block_size: int) -> int:
    return -(-raw_size // block_size)


def index_size(raw_size: int, block_size: int = BLOCK_SIZE, page: int = PAGE_BLOCKS) -> int:
    count = block_count(raw_size, block_size)
    return HEADER_SIZE + 4 * count + 4 * -(-count // page)


def pack(crcs: Sequence[int], raw_size: int, block_size: int = BLOCK_SIZE) -> bytes:
    """The whole index of a stream of raw_size bytes whose block CRCs are `crcs`."""
    if len(crcs) != block_count(raw_size, block_size):
        raise ValueError(f"{len(crcs)} block CRCs for {raw_size} bytes")
    head = HEADER.pack(MAGIC, VERSION, block_size, raw_size, PAGE_BLOCKS)
    out = [head, struct.pack("<I", crc32c(head))]
    for first in range(0, len(crcs), PAGE_BLOCKS):
        entries = array.array("I", crcs[first : first + PAGE_BLOCKS])
        if sys.byteorder != "little":
            entries.byteswap()
        body = entries.tobytes()
        out += [body, struct.pack("<I", crc32c(body))]
    return b"".join(out)


@dataclass(frozen=True)
class WholeCrc:
    """The 0.1 record: the whole-stream CRC32C and size, checked after the last byte."""

    crc: int
    size: int


class BlockMismatch(IntegrityError):
    """A block (or frame) whose bytes do not match their recorded CRC32C."""

    def __init__(self, key: str, offset: int, what: str) -> None:
        super().__init__(
            f"{key} is corrupt at byte {offset}: {what} does not match its recorded "
            "CRC32C; nothing from that byte on was written"
        )
        self.key = key
        self.offset = offset


class BlockIndex:
    """A parsed index; pages are read on demand (ensure) and checked as they arrive."""

    def __init__(self, key: str, header: bytes, index_size_: int) -> None:
        self.key = key
        self.where = f"block index of {key}"
        if len(header) < HEADER_SIZE:
            raise IntegrityError(f"{self.where} is truncated")
        magic, version, block_size, raw_size, page = HEADER.unpack(header[: HEADER.size])
        (head_crc,) = struct.unpack("<I", header[HEADER.size : HEADER_SIZE])
        if magic != MAGIC or crc32c(header[: HEADER.size]) != head_crc:
            raise IntegrityError(f"{self.where} has a damaged header")
        if version != VERSION:
            raise IntegrityError(f"{self.where} is version {version}, this asyncplug reads 1")
        if not block_size or not page or index_size_ != index_size(raw_size, block_size, page):
            raise IntegrityError(f"{self.where} does not match its own size")
        self.block_size: int = block_size
        self.raw_size: int = raw_size
        self.page_blocks: int = page
        self.count = block_count(raw_size, block_size)
        self.pages: dict[int, array.array[int]] = {}
        self._lock = asyncio.Lock()

    def page_span(self, page: int) -> tuple[int, int]:
        start = HEADER_SIZE + page * (4 * self.page_blocks + 4)
        entries = min(self.page_blocks, self.count - page * self.page_blocks)
        return start, start + 4 * entries + 4

    def pages_of(self, start: int, end: int) -> range:
        """The pages holding the CRCs of the blocks that overlap raw bytes [start, end)."""
        if start >= end:
            return range(0)
        span = self.block_size * self.page_blocks
        return range(start // span, (end - 1) // span + 1)

    def add_pages(self, first: int, data: bytes, at: int) -> None:
        """Parse the pages from `first` on found in `data`, which starts at index byte `at`."""
        page = first
        while page * self.page_blocks < self.count:
            start, end = self.page_span(page)
            if end - at > len(data):
                break
            body, tail = data[start - at : end - at - 4], data[end - at - 4 : end - at]
            if crc32c(body) != struct.unpack("<I", tail)[0]:
                raise IntegrityError(
                    f"{self.where} is corrupt: page {page} does not match its CRC32C"
                )
            entries = array.array("I", body)
            if sys.byteorder != "little":
                entries.byteswap()
            self.pages[page] = entries
            page += 1

    async def ensure(self, storage: Storage, ranges: Iterable[tuple[int, int]]) -> None:
        """Read the pages the blocks of these raw byte ranges need (one GET per run)."""
        async with self._lock:
            wanted = sorted({p for s, e in ranges for p in self.pages_of(s, e)} - set(self.pages))
            runs: list[list[int]] = []
            for page in wanted:
                if runs and runs[-1][-1] + 1 == page:
                    runs[-1].append(page)
                else:
                    runs.append([page])
            for run in runs:
                start, end = self.page_span(run[0])[0], self.page_span(run[-1])[1]
                data = b"".join(await storage.get_range(index_key(self.key), start, end))
                self.add_pages(run[0], data, start)

    def forget_before(self, offset: int) -> None:
        """Drop the pages of blocks wholly before raw byte `offset` (a long restore)."""
        last = offset // (self.block_size * self.page_blocks)
        for page in [p for p in self.pages if p < last]:
            del self.pages[page]

    def crc(self, block: int) -> int:
        return self.pages[block // self.page_blocks][block % self.page_blocks]

    def block_end(self, block: int) -> int:
        return min((block + 1) * self.block_size, self.raw_size)

    def mismatch(self, block: int) -> BlockMismatch:
        start = block * self.block_size
        what = f"block {block} (bytes {start}-{self.block_end(block)})"
        return BlockMismatch(self.key, start, what)

    def bad_blocks(
        self, view: Callable[[int, int], list[memoryview]], start: int, end: int
    ) -> list[int]:
        """Check the blocks of raw bytes [start, end), which must start and end on block
        boundaries (or the stream's end); `view(a, b)` gives bytes [a, b). Returns the
        first byte of each block that does not match. CPU: run it in a thread."""
        if start % self.block_size or (end % self.block_size and end != self.raw_size):
            raise ValueError(f"bytes {start}-{end} are not whole blocks")
        bad = []
        for block in range(start // self.block_size, block_count(end, self.block_size)):
            at, stop = block * self.block_size, self.block_end(block)
            value = 0
            for piece in view(at, stop):
                value = crc32c(piece, value)
            if value != self.crc(block):
                bad.append(at)
        return bad


Record = BlockIndex | WholeCrc | None


async def lookup(
    storage: Storage, info: ObjectInfo, first: Sequence[tuple[int, int]] = ()
) -> Record:
    """What asyncplug recorded for the raw object `info`, found from its key: the block
    index (its pages for the ranges `first` read too), else the 0.1 whole-stream CRC32C
    (user metadata, or the `<key>.asyncplug-crc` sidecar), else None (Go plugin)."""
    key = info.key
    marked = bool(info.metadata.get(META_INDEX))
    index = await _small(storage, info) if marked else None
    if index is None:
        try:
            found = await storage.stat(index_key(key))
        except (ObjectNotFound, AccessDenied):
            # (S3 answers 403, not 404, for a missing key to a client without s3:ListBucket.)
            found = None
        if found is None and marked:
            raise _missing(key)
        if found is not None:
            index = await _load(storage, key, found.size, first)
    if index is None:
        return await _whole_crc(storage, info)
    if index.raw_size != info.size:
        raise IntegrityError(
            f"{key} holds {info.size} bytes but its block index records "
            f"{index.raw_size}: the object is corrupt"
        )
    return index


def _missing(key: str) -> IntegrityError:
    return IntegrityError(
        f"{key}: its block index {index_key(key)} is missing; nothing was written"
    )


async def _small(storage: Storage, info: ObjectInfo) -> BlockIndex | None:
    """The index backup marked, read whole in one GET without a HEAD first when it is
    small (a small table's restore then waits for one round trip less); None: look it
    up the long way (its size is not the one this version writes, say)."""
    size = index_size(info.size)
    if size > SMALL_INDEX:
        return None
    try:
        data = await _read_whole(storage, info.key, size)
    except (ObjectNotFound, AccessDenied):
        raise _missing(info.key) from None
    except (InputError, IntegrityError):  # shorter than this version writes: the long way
        return None  # tells why
    try:
        index = BlockIndex(info.key, data, size)
    except IntegrityError:
        return None
    index.add_pages(0, data, 0)
    return index


async def _read_whole(storage: Storage, key: str, size: int) -> bytes:
    return b"".join(await storage.get_range(index_key(key), 0, size))


async def _load(
    storage: Storage, key: str, size: int, first: Sequence[tuple[int, int]]
) -> BlockIndex:
    if size <= SMALL_INDEX:
        data = await _read_whole(storage, key, size)
        index = BlockIndex(key, data, size)
        index.add_pages(0, data, 0)
        return index
    header = b"".join(await storage.get_range(index_key(key), 0, HEADER_SIZE))
    index = BlockIndex(key, header, size)
    await index.ensure(storage, first)
    return index


async def _whole_crc(storage: Storage, info: ObjectInfo) -> WholeCrc | None:
    where = f"checksum record of {info.key}"
    try:
        if frames.META_CRC in info.metadata:
            crc = info.metadata[frames.META_CRC]
            size: object = info.metadata.get(frames.META_SIZE, info.size)
        else:
            sidecar = frames.sidecar_key(info.key)
            try:
                side = await storage.stat(sidecar)
                body = b"".join(await storage.get_range(sidecar, 0, side.size))
            except (ObjectNotFound, AccessDenied):
                return None  # the Go plugin's object, or copied without its record
            import json  # only here: a 0.1 sidecar is the one JSON a restore reads

            record = json.loads(body)
            crc, size = record["crc32c"], record["size"]
        return WholeCrc(int(str(crc), 16), int(str(size)))
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{where} is unreadable: {exc}") from exc


class _Shift:
    """crc -> the CRC register after `length` more zero bytes, by four byte tables: the
    combination of a full block's CRC into its part's costs ~0.5 us instead of ~6 us."""

    def __init__(self, length: int) -> None:
        # Linear in the register: 32 shifted unit vectors, then each table entry as the
        # XOR of two earlier ones (~1 ms; 1024 combinations would take ~50 ms).
        unit = [frames.crc32c_combine(1 << bit, 0, length) for bit in range(32)]
        self.tables = []
        for k in range(4):
            table = [0] * 256
            for byte in range(1, 256):
                low = byte & -byte
                table[byte] = table[byte ^ low] ^ unit[8 * k + low.bit_length() - 1]
            self.tables.append(table)

    def combine(self, crc_a: int, crc_b: int) -> int:
        t0, t1, t2, t3 = self.tables
        low = t0[crc_a & 255] ^ t1[(crc_a >> 8) & 255]
        return low ^ t2[(crc_a >> 16) & 255] ^ t3[crc_a >> 24] ^ crc_b


class BlockRecorder:
    """Block CRCs of a stream fed in order, in buffers that need not align with blocks.

    The reader thread calls update() per chunk read and part_crc() per buffer filled;
    each byte is hashed once. A block's CRC and its buffer's CRC are combined from the
    CRCs of block-within-buffer segments.
    """

    def __init__(self, block_size: int = BLOCK_SIZE) -> None:
        self.block_size = block_size
        self.crcs: array.array[int] = array.array("I")
        self.size = 0
        self._filled = 0  # bytes of the current block seen
        self._block = 0  # CRC32C of the current block's bytes before this segment
        self._seg = 0  # CRC32C of the current segment (the block's bytes in this buffer)
        self._seg_len = 0
        self._part = 0  # CRC32C of this buffer's closed segments
        self._shift: _Shift | None = None

    def update(self, data: memoryview) -> None:
        size, at, end = self.block_size, 0, len(data)
        self.size += end
        while at < end:
            if not self._filled and end - at >= size:  # a whole block: the common case
                crc = crc32c(data[at : at + size])
                if self._shift is None:
                    self._shift = _Shift(size)
                self._part = self._shift.combine(self._part, crc)
                self.crcs.append(crc)
                at += size
                continue
            take = min(end - at, size - self._filled)
            self._seg = crc32c(data[at : at + take], self._seg)
            self._seg_len += take
            self._filled += take
            at += take
            if self._filled == size:
                self._close_segment()
                self.crcs.append(self._block)
                self._block = self._filled = 0

    def part_crc(self) -> int:
        """The CRC32C of the bytes fed since the last call (one buffer)."""
        if self._seg_len:
            self._close_segment()
        crc, self._part = self._part, 0
        return crc

    def finish(self) -> bytes:
        """At the end of the stream: the packed index."""
        if self._seg_len:
            self._close_segment()
        if self._filled:
            self.crcs.append(self._block)
            self._block = self._filled = 0
        return pack(self.crcs, self.size, self.block_size)

    def _close_segment(self) -> None:
        seg, length = self._seg, self._seg_len
        if length == self.block_size:  # a whole block in one buffer: the common case
            if self._shift is None:
                self._shift = _Shift(self.block_size)
            self._part = self._shift.combine(self._part, seg)
            self._block = seg
        else:
            self._part = frames.crc32c_combine(self._part, seg, length)
            self._block = frames.crc32c_combine(self._block, seg, length)
        self._seg = self._seg_len = 0
