"""What a Yjs update carries, read without applying it to a room's document.

Two questions the room asks before it applies a client's update:
- which Yjs client ids the update writes structs for (each id belongs to one user), and
- whether it would change the document at all: a reconnecting client sends what it has (sync
  step 2: at least its whole delete set), which is no edit and must not be refused as one.

Update format v1 (Yjs `encodeStateAsUpdate`): the structs, grouped by client, then the delete
set: var-uint count of clients, then per client its id, a count of ranges and each range as
(clock, length). A state vector is a var-uint count of (client, clock) pairs.
"""

from __future__ import annotations

from pycrdt import Doc, get_update

from collab.errors import ProtocolError
from collab.live.protocol import Reader

DeleteSet = dict[int, list[tuple[int, int]]]  # client -> [(clock, length), ...]


def decode_state_vector(data: bytes) -> dict[int, int]:
    reader = Reader(data)
    clocks: dict[int, int] = {}
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        clocks[client] = reader.var_uint()
    return clocks


def struct_ranges(update: bytes) -> dict[int, tuple[int, int]]:
    """Per client id with structs in `update`: the clocks [first, end) they cover.

    pycrdt's `get_state(update)` cannot answer this: like Yjs's encodeStateVectorFromUpdate it
    only counts clients whose structs start at clock 0, and a live update starts where the
    client's previous one ended. So the struct headers are read here, skipping their contents.
    It also reads the delete set, so that bytes it accepts are well-formed enough for pycrdt:
    a count in the hundreds of millions costs Yrs a second before it fails, a value nested
    100,000 deep overflows its stack; here both fail at once, as a ProtocolError.
    """
    reader = Reader(update)
    ranges: dict[int, tuple[int, int]] = {}
    for _ in range(reader.var_uint()):
        count = reader.var_uint()
        client = reader.var_uint()
        first = clock = reader.var_uint()
        for _ in range(count):
            clock += _skip_struct(reader)
        if count:
            start, end = ranges.get(client, (first, clock))
            ranges[client] = (min(start, first), max(end, clock))
    _read_delete_set(reader)
    return ranges


# Struct info byte (Yjs UpdateDecoderV1): the low 5 bits name the content; the high bits say
# which of origin (0x80), right origin (0x40) and parent key (0x20) follow.
_GC, _SKIP = 0, 10
_XML_ELEMENT, _XML_HOOK = 3, 5  # type refs followed by a node name
# Values nested deeper than this are refused before pycrdt sees them: Yrs decodes them
# recursively, and an array nested 100,000 deep overflows its stack (the process dies with
# SIGSEGV; 20,000 applied but crashed when read back). Annotations need a handful of levels; a
# deeper geometry that is still accepted is marked invalid by the geometry check.
_MAX_ANY_DEPTH = 1024


def _skip_struct(reader: Reader) -> int:
    """Read one struct; answer its length in clock ticks."""
    info = reader.byte()
    ref = info & 0x1F
    if ref in (_GC, _SKIP):
        return reader.var_uint()
    if info & 0x80:
        reader.var_uint(), reader.var_uint()  # origin id
    if info & 0x40:
        reader.var_uint(), reader.var_uint()  # right origin id
    if not info & 0xC0:  # no origin: the parent is written out
        if reader.var_uint() == 1:
            reader.var_bytes()  # a root type's name
        else:
            reader.var_uint(), reader.var_uint()  # the parent item's id
        if info & 0x20:
            reader.var_bytes()  # the key in a map
    return _skip_content(reader, ref)


def _skip_content(reader: Reader, ref: int) -> int:
    if ref == 1:  # deleted
        return reader.var_uint()
    if ref == 2:  # JSON (strings)
        length = reader.var_uint()
        for _ in range(length):
            reader.var_bytes()
        return length
    if ref == 3:  # binary
        reader.var_bytes()
        return 1
    if ref == 4:  # string: its length in UTF-16 code units, as Yjs counts
        return len(reader.var_string().encode("utf-16-le")) // 2
    if ref == 5:  # embed
        reader.var_bytes()
        return 1
    if ref == 6:  # format
        reader.var_bytes(), reader.var_bytes()
        return 1
    if ref == 7:  # a shared type
        if reader.var_uint() in (_XML_ELEMENT, _XML_HOOK):
            reader.var_bytes()
        return 1
    if ref == 8:  # any values
        length = reader.var_uint()
        for _ in range(length):
            _skip_any(reader)
        return length
    if ref == 9:  # a subdocument
        reader.var_bytes()
        _skip_any(reader)
        return 1
    raise ProtocolError(f"unknown struct content {ref}")


def _skip_any(reader: Reader) -> None:
    """Skip one lib0 `any` value (iteratively: a deep value must not exhaust Python's stack)."""
    levels = [[1, False]]  # per open array or object: values left to read, and whether keyed
    while levels:
        level = levels[-1]
        if level[0] == 0:
            levels.pop()
            continue
        level[0] -= 1
        if level[1]:
            reader.var_bytes()  # an object's key
        kind = reader.byte()
        if kind in (127, 126, 121, 120):  # undefined, null, false, true
            continue
        if kind == 125:  # var-int
            while reader.byte() & 0x80:
                pass
        elif kind == 124:
            reader.skip(4)
        elif kind in (123, 122):
            reader.skip(8)
        elif kind in (119, 116):  # string, bytes
            reader.var_bytes()
        elif kind in (118, 117):  # object, array
            if len(levels) > _MAX_ANY_DEPTH:
                raise ProtocolError("value nested too deep")
            levels.append([reader.var_uint(), kind == 118])
        else:
            raise ProtocolError(f"unknown value type {kind}")


def changes_nothing(doc: Doc, update: bytes) -> bool:
    """True if applying `update` to `doc` would change nothing: every struct it holds is already
    there and everything it deletes is already deleted."""
    state = doc.get_state()
    try:
        missing = get_update(update, state)  # the structs `doc` lacks, and the whole delete set
    except BaseException as exc:  # ValueError, RuntimeError or a Rust panic
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        raise ProtocolError(f"update rejected: {exc}") from exc
    reader = Reader(missing)
    if reader.var_uint() != 0:
        return False
    deletes = _read_delete_set(reader)
    if not deletes:
        return True
    known = Reader(doc.get_update(state))  # no structs, then the document's own delete set
    known.var_uint()
    return _covers(_read_delete_set(known), deletes)


def _read_delete_set(reader: Reader) -> DeleteSet:
    deletes: DeleteSet = {}
    for _ in range(reader.var_uint()):
        client = reader.var_uint()
        ranges = deletes.setdefault(client, [])
        for _ in range(reader.var_uint()):
            clock = reader.var_uint()
            ranges.append((clock, reader.var_uint()))
    return {client: ranges for client, ranges in deletes.items() if ranges}


def _covers(known: DeleteSet, wanted: DeleteSet) -> bool:
    for client, ranges in wanted.items():
        have = _merged(known.get(client, []))
        for clock, length in ranges:
            end = clock + length
            if length and not any(start <= clock and end <= stop for start, stop in have):
                return False
    return True


def _merged(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Ranges as sorted, merged [start, stop) intervals (Yrs may split one run in two)."""
    out: list[tuple[int, int]] = []
    for clock, length in sorted(ranges):
        if out and clock <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], clock + length))
        else:
            out.append((clock, clock + length))
    return out
