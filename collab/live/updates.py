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

from pycrdt import Doc, get_state, get_update

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


def struct_clocks(update: bytes) -> dict[int, int]:
    """Per client id with structs in `update`, the clock just past its last one."""
    try:
        return decode_state_vector(get_state(update))
    except (ValueError, RuntimeError) as exc:
        raise ProtocolError(f"update rejected: {exc}") from exc


def changes_nothing(doc: Doc, update: bytes) -> bool:
    """True if applying `update` to `doc` would change nothing: every struct it holds is already
    there and everything it deletes is already deleted."""
    state = doc.get_state()
    try:
        missing = get_update(update, state)  # the structs `doc` lacks, and the whole delete set
    except (ValueError, RuntimeError) as exc:
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
