"""Room names: a kind of document and its id."""

from __future__ import annotations

from dataclasses import dataclass

SLIDE = "slide"
SESSION = "session"


@dataclass(frozen=True, slots=True, order=True)
class RoomKey:
    """One live document: a slide's annotations or a tumor-board session.

    `str(key)` ("slide:abc") names the room in the store, the logs and the audit trail.
    """

    kind: str
    id: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.id}"

    @classmethod
    def slide(cls, slide_id: str) -> RoomKey:
        return cls(SLIDE, slide_id)

    @classmethod
    def session(cls, session_id: str) -> RoomKey:
        return cls(SESSION, session_id)
