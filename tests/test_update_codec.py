"""The update reader (collab/live/updates.py) agrees with Yrs on which structs an update holds."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pycrdt import Array, Doc, Map, Text, XmlElement, XmlFragment

from collab.errors import ProtocolError
from collab.live.updates import decode_state_vector, struct_ranges

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=10,
)

edits = st.lists(
    st.one_of(
        st.tuples(st.just("map"), st.text(max_size=4), json_values),
        st.tuples(st.just("text"), st.text(max_size=12), st.integers(0, 5)),
        st.tuples(st.just("array"), st.lists(json_values, max_size=3), st.booleans()),
        st.tuples(st.just("bytes"), st.binary(max_size=8), st.booleans()),
        st.tuples(st.just("xml"), st.text(min_size=1, max_size=5), st.booleans()),
        st.tuples(st.just("delete"), st.text(max_size=4), st.booleans()),
    ),
    min_size=1,
    max_size=6,
)


def apply_edit(doc: Doc, edit: tuple) -> None:
    kind, a, b = edit
    root = doc.get("m", type=Map)
    if kind == "map":
        root[a] = b
    elif kind == "text":
        text = doc.get("t", type=Text)
        text.insert(min(b, len(text)), a + "é😀")
    elif kind == "array":
        arr = doc.get("a", type=Array)
        arr.append(Map({"v": a}) if b else a)
    elif kind == "bytes":
        root["bin"] = a
    elif kind == "xml":
        frag = doc.get("x", type=XmlFragment)
        frag.children.append(XmlElement(a if a.isidentifier() else "p"))
    elif kind == "delete":
        if a in root:
            del root[a]
        elif len(doc.get("t", type=Text)):
            del doc.get("t", type=Text)[0:1]


@settings(max_examples=200, deadline=None)
@given(first=edits, second=edits)
def test_struct_ranges_match_the_state_vectors(first: list, second: list) -> None:
    doc: Doc = Doc()
    for edit in first:
        apply_edit(doc, edit)
    before = decode_state_vector(doc.get_state())
    for edit in second:
        apply_edit(doc, edit)
    after = decode_state_vector(doc.get_state())
    update = doc.get_update(doc_state(before))
    expected = {c: (before.get(c, 0), end) for c, end in after.items() if end > before.get(c, 0)}
    assert struct_ranges(update) == expected
    assert struct_ranges(doc.get_update()) == {c: (0, end) for c, end in after.items() if end}


def doc_state(clocks: dict[int, int]) -> bytes:
    from collab.live.protocol import write_var_uint

    return write_var_uint(len(clocks)) + b"".join(write_var_uint(c) + write_var_uint(k) for c, k in clocks.items())


@pytest.mark.parametrize("data", [b"", b"\x01", b"\x01\x01\x05\x00\x1f", b"\x01\x01\x05\x00\x08\x01\x70"])
def test_malformed_updates_are_protocol_errors(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        struct_ranges(data)


def test_struct_ranges_reads_formats_embeds_subdocuments_gc_and_skips() -> None:
    from pycrdt import merge_updates

    doc: Doc = Doc()
    text = doc.get("t", type=Text)
    text.insert(0, "hello world")
    text.format(0, 5, {"bold": True})  # format structs
    text.insert_embed(5, {"image": "x"})  # an embed
    doc.get("m", type=Map)["sub"] = Doc()  # a subdocument
    del text[0:11]  # deleted content: garbage-collected into GC structs when encoded
    after = decode_state_vector(doc.get_state())
    assert struct_ranges(doc.get_update()) == {c: (0, end) for c, end in after.items()}

    # Two updates of one client with a hole between them merge into one with a Skip struct.
    writer: Doc = Doc()
    m = writer.get("m", type=Map)
    updates: list[bytes] = []
    writer.observe(lambda event: updates.append(event.update))
    for i in range(3):
        m[str(i)] = i
    with_hole = merge_updates(updates[0], updates[2])
    assert struct_ranges(with_hole) == {writer.client_id: (0, 3)}
    assert struct_ranges(updates[2]) == {writer.client_id: (2, 3)}
