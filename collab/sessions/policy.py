"""Who may change a session document, and what its changes leave in the audit trail.

Only the current presenter changes a session; a presenter-role participant may take over by
naming themselves presenter. Everyone else is refused like a viewer. The trail records who joined
and left, every handover, every slide made current, and every annotation the presenter showed
(`state.focus`), which the board's record is built from.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from pycrdt import Doc, Map

from collab.auth import Principal
from collab.live.policy import RoomPolicy
from collab.store import AuditRecord, Store

if TYPE_CHECKING:
    from collab.live.room import Room

log = logging.getLogger(__name__)


def read_state(doc: Doc) -> dict[str, Any]:
    state = doc.get("state", type=Map)
    focus = state.get("focus")
    return {
        "current": state.get("current"),
        "presenter": state.get("presenter"),
        "focus": focus.to_py() if isinstance(focus, Map) else focus,
    }


class SessionPolicy(RoomPolicy):
    """The policy of a session room."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._room: Room | None = None
        self._before: dict[str, Any] | None = None

    async def attach(self, room: Room) -> None:
        self._room = room

    @property
    def room(self) -> Room:
        assert self._room is not None, "SessionPolicy used before attach()"
        return self._room

    def refuse_write(self, principal: Principal, update: bytes) -> str | None:
        presenter = read_state(self.room.doc)["presenter"]
        if not principal.can_write:
            return "read-only role"
        if principal.user_id == presenter:
            return None
        if not principal.can_present:
            return "only the presenter changes the session"
        # A presenter-role participant may take over: the update must name them presenter.
        trial: Doc = Doc()
        try:
            trial.apply_update(self.room.doc.get_update())
            trial.apply_update(update)
        except BaseException as exc:  # ValueError, RuntimeError or a Rust panic
            if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
                raise
            return None  # malformed: the room refuses it as a protocol error when applying it
        if read_state(trial)["presenter"] != principal.user_id:
            return "take over first: only the presenter changes the session"
        return None

    def before_apply(self, principal: Principal) -> None:
        self._before = read_state(self.room.doc)

    def after_apply(self, principal: Principal) -> None:
        before, self._before = self._before, None
        if before is None:
            return
        after = read_state(self.room.doc)
        if after["presenter"] != before["presenter"]:
            log.info("session handover", extra={"room": self.room.name, "user": principal.user_id})
            self._audit(principal, "handover", before["presenter"], {
                "from": before["presenter"], "to": after["presenter"], "current": after["current"],
            })
        if after["current"] != before["current"] and isinstance(after["current"], str):
            self._audit(principal, "slide_shown", after["current"], {"slide": after["current"]})
        focus = after["focus"]
        if focus != before["focus"] and isinstance(focus, dict) and focus.get("annotation"):
            self._audit(principal, "shown", str(focus.get("annotation")), {
                "slide": focus.get("slide"), "annotation": focus.get("annotation"),
            })

    def joined(self, principal: Principal) -> None:
        self._audit(principal, "joined", None, {"name": principal.name, "role": principal.role.value})

    def left(self, principal: Principal) -> None:
        self._audit(principal, "left", None, {"name": principal.name, "role": principal.role.value})

    def _audit(self, principal: Principal, action: str, target: str | None, detail: dict[str, Any]) -> None:
        self._store.audit(AuditRecord(
            self.room.name, int(time.time() * 1000), principal.user_id, principal.site, action, target, detail,
        ))
