"""The v1 compressed format: pack, parse, locate frames, detect corruption."""

from __future__ import annotations

import os

import pytest

from asyncplug.errors import IntegrityError
from asyncplug.pipeline import frames
from asyncplug.pipeline.codecs import CODECS
from tests.restore_support import compressed


def open_index(obj: bytes) -> frames.FrameIndex:
    trailer = frames.parse_trailer(obj[-frames.TRAILER_SIZE :], len(obj))
    assert trailer is not None
    frames.check_header(obj[: frames.HEADER_SIZE])
    index = obj[trailer.index_offset : trailer.index_offset + trailer.index_len]
    return frames.FrameIndex(trailer, index)


@pytest.mark.parametrize("codec", sorted(CODECS))
@pytest.mark.parametrize("size", [0, 1, 999, 1000, 1001, 5000])
def test_round_trip_every_range(codec: str, size: int) -> None:
    raw = (b"1|Customer#000000001|IVhzIApeRb|15|25-989-741-2988|711.56|\n" * 100)[:size]
    obj = compressed(raw, CODECS[codec], 1000)
    idx = open_index(obj)
    assert idx.raw_size == size and idx.codec.name == codec
    for start, end in [(0, size), (0, 0), (size // 3, size // 2), (max(size - 1, 0), size)]:
        got = b"".join(
            idx.decode(f, obj[f.offset : f.offset + f.length])[
                max(start - f.raw_start, 0) : end - f.raw_start
            ]
            for f in idx.covering(start, end)
        )
        assert got == raw[start:end]


def test_covering_picks_only_overlapping_frames() -> None:
    idx = open_index(compressed(os.urandom(10_000), CODECS["lz4"], 1000))
    assert [f.number for f in idx.covering(999, 1001)] == [0, 1]
    assert [f.number for f in idx.covering(1000, 2000)] == [1]
    assert [f.number for f in idx.covering(9999, 10_000)] == [9]
    assert idx.covering(500, 500) == []


def test_raw_stream_is_not_taken_for_a_compressed_object() -> None:
    raw = os.urandom(4096)
    assert frames.parse_trailer(raw[-frames.TRAILER_SIZE :], len(raw)) is None
    assert frames.parse_trailer(b"short", 5) is None


def test_flipped_byte_in_a_frame_is_detected() -> None:
    obj = bytearray(compressed(b"abc" * 3000, CODECS["gzip"], 1000))
    idx = open_index(bytes(obj))
    frame = idx.frames[1]
    obj[frame.offset + frame.length // 2] ^= 0xFF
    with pytest.raises(IntegrityError):
        idx.decode(frame, bytes(obj[frame.offset : frame.offset + frame.length]))


def test_flipped_byte_in_the_index_is_detected() -> None:
    obj = bytearray(compressed(b"xyz" * 3000, CODECS["zstd"], 1000))
    trailer = frames.parse_trailer(bytes(obj[-frames.TRAILER_SIZE :]), len(obj))
    assert trailer is not None
    obj[trailer.index_offset + 5] ^= 0x01
    with pytest.raises(IntegrityError, match="index checksum"):
        open_index(bytes(obj))


def test_trailer_that_does_not_fit_the_object_is_corrupt() -> None:
    obj = compressed(b"q" * 5000, CODECS["zstd"], 1000)
    with pytest.raises(IntegrityError):
        frames.parse_trailer(obj[-frames.TRAILER_SIZE :], len(obj) + 1)


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_frame_that_inflates_past_its_recorded_length_is_corrupt(codec: str) -> None:
    bomb = CODECS[codec].compress(bytes(8 * 1024 * 1024), CODECS[codec].default_level)
    with pytest.raises(IntegrityError):
        CODECS[codec].decompress(bomb, 1000)  # the index says 1000 bytes


def test_an_index_with_a_frame_beyond_the_limit_is_corrupt() -> None:
    entries = [(10, frames.MAX_FRAME_RAW + 1, 0)]
    index = frames.pack_index(entries)
    trailer = frames.Trailer(frames.HEADER_SIZE + 10, len(index), frames.MAX_FRAME_RAW + 1, 1,
                             frames.crc32c(index), CODECS["zstd"])  # fmt: skip
    with pytest.raises(IntegrityError, match="too large"):
        frames.FrameIndex(trailer, index)
