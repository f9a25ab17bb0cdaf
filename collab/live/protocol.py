"""Sans-I/O codec for the y-websocket protocol: var-uints, message framing, awareness updates.

Pure functions over bytes: no Doc, no socket. Every read is bounds-checked and raises
ProtocolError (close code 1002) on truncated or malformed input, unlike pycrdt's Decoder,
which indexes past the end of short input.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from collab.errors import ProtocolError

# Yjs var-uints are at most 53 bits (JavaScript safe integers): 8 bytes of 7 bits.
_MAX_VARUINT_BYTES = 8


class MessageType(IntEnum):
    SYNC = 0
    AWARENESS = 1
    AUTH = 2
    QUERY_AWARENESS = 3


class SyncType(IntEnum):
    STEP1 = 0
    STEP2 = 1
    UPDATE = 2


# An update that carries nothing (no structs, empty delete set), as Yjs encodes it.
EMPTY_UPDATE = b"\x00\x00"


@dataclass(frozen=True, slots=True)
class SyncMessage:
    kind: SyncType
    payload: bytes  # state vector (STEP1) or update (STEP2, UPDATE)


@dataclass(frozen=True, slots=True)
class AwarenessMessage:
    payload: bytes  # an encoded awareness update


@dataclass(frozen=True, slots=True)
class AuthMessage:
    reason: str


@dataclass(frozen=True, slots=True)
class QueryAwarenessMessage:
    pass


Message = SyncMessage | AwarenessMessage | AuthMessage | QueryAwarenessMessage


@dataclass(frozen=True, slots=True)
class AwarenessEntry:
    client_id: int
    clock: int
    state_json: str  # "null" when the client removes its state


class Reader:
    """A cursor over bytes whose reads never run past the end."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def var_uint(self) -> int:
        value = 0
        shift = 0
        data = self._data
        for _ in range(_MAX_VARUINT_BYTES):
            if self._pos >= len(data):
                raise ProtocolError("truncated var-uint")
            byte = data[self._pos]
            self._pos += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7
        raise ProtocolError("var-uint longer than 8 bytes")

    def byte(self) -> int:
        if self._pos >= len(self._data):
            raise ProtocolError("truncated message")
        self._pos += 1
        return self._data[self._pos - 1]

    def skip(self, count: int) -> None:
        if count > self.remaining:
            raise ProtocolError(f"{count} bytes run past the end of the message")
        self._pos += count

    def var_bytes(self) -> bytes:
        length = self.var_uint()
        if length > self.remaining:
            raise ProtocolError(f"length {length} runs past the end of the message")
        start = self._pos
        self._pos += length
        return self._data[start : self._pos]

    def var_string(self) -> str:
        raw = self.var_bytes()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError("string is not valid UTF-8") from exc


def write_var_uint(value: int) -> bytes:
    if value < 0:
        raise ValueError("var-uint must be non-negative")
    out = bytearray()
    while value > 0x7F:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def write_var_bytes(data: bytes) -> bytes:
    return write_var_uint(len(data)) + data


def write_var_string(text: str) -> bytes:
    return write_var_bytes(text.encode("utf-8"))


def decode_message(data: bytes) -> Message:
    """Decode one y-websocket message (one WebSocket frame)."""
    reader = Reader(data)
    kind = reader.var_uint()
    if kind == MessageType.SYNC:
        sub = reader.var_uint()
        if sub not in (SyncType.STEP1, SyncType.STEP2, SyncType.UPDATE):
            raise ProtocolError(f"unknown sync message type {sub}")
        return SyncMessage(SyncType(sub), reader.var_bytes())
    if kind == MessageType.AWARENESS:
        return AwarenessMessage(reader.var_bytes())
    if kind == MessageType.AUTH:
        reader.var_uint()  # 0 = permission denied, the only auth message defined
        return AuthMessage(reader.var_string())
    if kind == MessageType.QUERY_AWARENESS:
        return QueryAwarenessMessage()
    raise ProtocolError(f"unknown message type {kind}")


def encode_sync_step1(state_vector: bytes) -> bytes:
    return b"\x00\x00" + write_var_bytes(state_vector)


def encode_sync_step2(update: bytes) -> bytes:
    return b"\x00\x01" + write_var_bytes(update)


def encode_update(update: bytes) -> bytes:
    return b"\x00\x02" + write_var_bytes(update)


def encode_awareness(payload: bytes) -> bytes:
    return b"\x01" + write_var_bytes(payload)


def encode_permission_denied(reason: str) -> bytes:
    return b"\x02\x00" + write_var_string(reason)


def decode_awareness_update(payload: bytes) -> list[AwarenessEntry]:
    reader = Reader(payload)
    count = reader.var_uint()
    # Each entry takes at least 3 bytes: a cheap bound against absurd counts.
    if count * 3 > reader.remaining:
        raise ProtocolError(f"awareness update claims {count} entries in {reader.remaining} bytes")
    entries = [
        AwarenessEntry(reader.var_uint(), reader.var_uint(), reader.var_string())
        for _ in range(count)
    ]
    return entries


def encode_awareness_update(entries: list[AwarenessEntry]) -> bytes:
    parts = [write_var_uint(len(entries))]
    for entry in entries:
        parts.append(write_var_uint(entry.client_id))
        parts.append(write_var_uint(entry.clock))
        parts.append(write_var_string(entry.state_json))
    return b"".join(parts)
