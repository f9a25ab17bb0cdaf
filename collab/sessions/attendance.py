"""Who attended a session: a `joined` / `left` audit record per connection to its room."""

from __future__ import annotations

import time
from collections.abc import Callable

from collab.auth import Principal
from collab.store import AuditRecord, Store


def attendance_recorder(store: Store) -> Callable[[str, Principal, str], None]:
    """The session endpoint's attendance callback: the record of a board reads these back."""

    def record(room: str, principal: Principal, action: str) -> None:
        # Names and roles are kept with the record: tokens change, the minutes must not.
        store.audit(
            AuditRecord(
                room, int(time.time() * 1000), principal.user_id, principal.site, action, None,
                {"name": principal.name, "role": principal.role.value},
            )
        )

    return record
