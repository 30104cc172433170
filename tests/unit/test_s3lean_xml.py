"""s3lean's XML escaping is xml.sax.saxutils' mapping, without importing it in the plugin."""

from __future__ import annotations

from xml.sax.saxutils import escape, unescape

from hypothesis import given
from hypothesis import strategies as st

from asyncplug.storage.s3lean import xml_escape, xml_unescape

# Text made mostly of the characters and entities the mapping is about.
PIECES = st.sampled_from(["&", "<", ">", "&amp;", "&lt;", "&gt;", "&amp;lt;", ";", "a", '"'])
TEXT = st.one_of(st.text(), st.lists(PIECES).map("".join))


@given(TEXT)
def test_the_same_mapping_as_saxutils(text: str) -> None:
    assert xml_escape(text) == escape(text)
    assert xml_unescape(text) == unescape(text)
    assert xml_unescape(xml_escape(text)) == text


def test_an_etag_and_an_upload_id() -> None:
    assert xml_escape('"9b2cf535f27731c974343645a3985328"') == '"9b2cf535f27731c974343645a3985328"'
    assert xml_escape("a&b<c>") == "a&amp;b&lt;c&gt;"
    assert xml_unescape("x&amp;lt;y&lt;&gt;") == "x&lt;y<>"
