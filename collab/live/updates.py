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

    Every client update goes through this on the hot path, so it is one loop over local
    variables rather than a reader object (a method call per value cost 70 µs per 50-vertex
    polygon; bench/RESULTS.md, "Issue 10: what moved").
    """
    try:
        return _struct_ranges(update)
    except IndexError:
        raise ProtocolError("truncated update") from None


def _varuint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    for _ in range(8):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ProtocolError("var-uint longer than 8 bytes")


def _struct_ranges(data: bytes) -> dict[int, tuple[int, int]]:
    size = len(data)
    ranges: dict[int, tuple[int, int]] = {}
    clients, pos = _varuint(data, 0)
    if clients > size:
        raise ProtocolError("more clients than bytes")
    for _ in range(clients):
        count, pos = _varuint(data, pos)
        if count > size:
            raise ProtocolError("more structs than bytes")
        client, pos = _varuint(data, pos)
        first, pos = _varuint(data, pos)
        clock = first
        for _ in range(count):
            info = data[pos]
            pos += 1
            ref = info & 0x1F
            if ref == 0 or ref == 10:  # GC, Skip: a length
                length, pos = _varuint(data, pos)
                clock += length
                continue
            if info & 0x80:  # origin id
                _, pos = _varuint(data, pos)
                _, pos = _varuint(data, pos)
            if info & 0x40:  # right origin id
                _, pos = _varuint(data, pos)
                _, pos = _varuint(data, pos)
            if not info & 0xC0:  # no origin: the parent is written out
                parent_is_root, pos = _varuint(data, pos)
                if parent_is_root == 1:
                    length, pos = _varuint(data, pos)
                    pos += length  # a root type's name
                else:
                    _, pos = _varuint(data, pos)
                    _, pos = _varuint(data, pos)
                if info & 0x20:
                    length, pos = _varuint(data, pos)
                    pos += length  # the key in a map
            if ref == 8:  # any values: the common case, read inline
                length, pos = _varuint(data, pos)
                for _ in range(length):
                    pos = _skip_any(data, pos)
                clock += length
            elif ref == 1:  # deleted
                length, pos = _varuint(data, pos)
                clock += length
            elif ref == 2:  # JSON strings
                length, pos = _varuint(data, pos)
                for _ in range(length):
                    n, pos = _varuint(data, pos)
                    pos += n
                clock += length
            elif ref == 4:  # a string: its length in UTF-16 code units, as Yjs counts
                n, pos = _varuint(data, pos)
                if pos + n > size:
                    raise ProtocolError("string runs past the end of the update")
                try:
                    text = data[pos : pos + n].decode("utf-8")
                except UnicodeDecodeError:
                    raise ProtocolError("string is not valid UTF-8") from None
                pos += n
                clock += len(text.encode("utf-16-le")) // 2
            elif ref in (3, 5):  # binary, embed
                n, pos = _varuint(data, pos)
                pos += n
                clock += 1
            elif ref == 6:  # format: key and value
                n, pos = _varuint(data, pos)
                pos += n
                n, pos = _varuint(data, pos)
                pos += n
                clock += 1
            elif ref == 7:  # a shared type
                type_ref, pos = _varuint(data, pos)
                if type_ref in (_XML_ELEMENT, _XML_HOOK):
                    n, pos = _varuint(data, pos)
                    pos += n
                clock += 1
            elif ref == 9:  # a subdocument
                n, pos = _varuint(data, pos)
                pos = _skip_any(data, pos + n)
                clock += 1
            else:
                raise ProtocolError(f"unknown struct content {ref}")
            if pos > size:
                raise ProtocolError("struct runs past the end of the update")
        if count:
            start, end = ranges.get(client, (first, clock))
            ranges[client] = (min(start, first), max(end, clock))
    _read_delete_set(Reader(data[pos:]))
    return ranges


_XML_ELEMENT, _XML_HOOK = 3, 5  # type refs followed by a node name
# Values nested deeper than this are refused before pycrdt sees them: Yrs decodes them
# recursively, and an array nested 100,000 deep overflows its stack (the process dies with
# SIGSEGV; 20,000 applied but crashed when read back). Annotations need a handful of levels; a
# deeper geometry that is still accepted is marked invalid by the geometry check.
_MAX_ANY_DEPTH = 1024


def _skip_any(data: bytes, pos: int) -> int:
    """Skip one lib0 `any` value; answer the position after it (iteratively: a deep value
    must not exhaust Python's stack)."""
    left = [1]  # per open array or object: values still to read (objects: keyed, negative)
    while left:
        n = left[-1]
        if n == 0:
            left.pop()
            continue
        if n > 0:
            left[-1] = n - 1
        else:  # an object's entry: its key first
            left[-1] = n + 1
            length, pos = _varuint(data, pos)
            pos += length
        kind = data[pos]
        pos += 1
        if kind >= 120:  # undefined, null, var-int, float32, float64, bigint, false, true
            if kind == 123 or kind == 122:
                pos += 8
            elif kind == 124:
                pos += 4
            elif kind == 125:
                while data[pos] & 0x80:
                    pos += 1
                pos += 1
        elif kind == 119 or kind == 116:  # string, bytes
            length, pos = _varuint(data, pos)
            pos += length
        elif kind == 117 or kind == 118:  # array, object
            if len(left) > _MAX_ANY_DEPTH:
                raise ProtocolError("value nested too deep")
            count = data[pos]
            if count < 0x80:
                pos += 1
            else:
                count, pos = _varuint(data, pos)
            if count > len(data):
                raise ProtocolError("more values than bytes")
            if kind == 117:
                # Coordinates are arrays of float64s: skip a run of them without the stack.
                while count and data[pos] == 123:
                    pos += 9
                    count -= 1
                left.append(count)
            else:
                left.append(-count)
        else:
            raise ProtocolError(f"unknown value type {kind}")
    return pos


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
