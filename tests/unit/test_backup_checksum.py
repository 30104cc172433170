"""The whole-stream CRC32C of a raw multipart object is combined from its part CRCs."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from asyncplug.pipeline.frames import crc32c, crc32c_combine


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_combining_part_crcs_gives_the_crc_of_the_whole(parts: list[bytes]) -> None:
    whole = 0
    for part in parts:
        whole = crc32c_combine(whole, crc32c(part), len(part))
    assert whole == crc32c(b"".join(parts))


def test_combining_across_large_lengths() -> None:
    # Lengths of many set bits exercise many of the precomputed zero-byte operators.
    head, tail = b"head", b"tail"
    for zeros in (1 << 20, (1 << 20) + 12345, 3 << 22):
        body = bytes(zeros) + tail
        assert crc32c_combine(crc32c(head), crc32c(body), len(body)) == crc32c(head + body)
    assert crc32c_combine(0x12345678, 0, 0) == 0x12345678
