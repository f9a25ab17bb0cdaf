"""Every knob of collab in one frozen dataclass, read once from flags and COLLAB_* variables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Settings:
    """Server settings. Each field may be set by the env var COLLAB_<FIELD NAME IN CAPITALS>."""

    host: str = "127.0.0.1"
    port: int = 8000
    data: Path = Path("./data")
    secret: str | None = None  # HS256 signing secret; generated under `data` when unset
    allowed_origins: tuple[str, ...] = ()  # browser origins allowed besides our own ("*": any)
    database_url: str | None = None  # unset: SQLite under `data`; postgresql://... : PostgreSQL
    redis_url: str | None = None  # unset: in-process fan-out; redis://... : cross-node fan-out
    public_url: str | None = None  # base URL printed in links (default http://host:port); our own origin
    demo: bool = False
    slide_dirs: tuple[str, ...] = ()  # where POST /api/slides may open slide files; empty: <data>/slides
    # The hospital archive (DICOMweb; docs/dicomweb.md)
    dicomweb_archives: tuple[str, ...] = ()  # base URLs slides may come from; empty: any http(s) URL
    dicomweb_auth: tuple[str, ...] = ()  # URL=bearer:TOKEN or URL=basic:USER:PASSWORD, per archive
    dicomweb_timeout: float = 10.0  # seconds per archive request; past it tiles answer 504
    dicomweb_cache_bytes: int = 256 * MiB  # frames kept from the archive, all slides together
    deflate: bool = False  # permessage-deflate (see bench/RESULTS.md for why it is off)
    log_level: str = "info"

    # Links and tickets
    link_ttl: float = 4 * 3600.0  # a printed or renewed link lasts this long (covers a meeting)
    token_max_lifetime: float = 12 * 3600.0  # renewals never reach past the link's issue + this
    ticket_seconds: float = 30.0  # a WebSocket ticket (POST /api/tickets) is good this long, once
    time_zone: str = "Europe/Brussels"  # session records print times in this zone unless ?tz=

    # Durability
    sqlite_synchronous: str = "normal"  # normal: survives kill -9; full: also power loss
    compact_after_updates: int = 500  # log entries of a room before it is folded into a snapshot
    compact_after_bytes: int = 4 * MiB
    flush_timeout: float = 10.0  # seconds allowed to flush the store on shutdown

    # Rooms
    room_idle_seconds: float = 30.0  # unload a room this long after its last client left
    max_rooms_loaded: int = 1000  # least recently used idle rooms are unloaded first

    # Limits (docs/reference.md, section 7)
    max_message_bytes: int = 8 * MiB
    outbox_max_messages: int = 4096  # per connection; past it the client is closed with 1013
    outbox_max_bytes: int = 32 * MiB
    update_rate: float = 1000.0  # document updates per second per connection (token bucket)
    update_burst: float = 5000.0
    update_flood_seconds: float = 10.0  # held back by the rate this long without pause: closed (1008)
    presence_hz: float = 30.0  # presence relays per client in any one-second window
    max_connections_per_user: int = 50
    max_connections_per_room: int = 500
    handshake_timeout: float = 10.0
    body_timeout: float = 30.0  # a request body not complete this long after its headers: 408 ...
    body_min_rate: float = 64 * 1024.0  # ... unless it keeps arriving at this many bytes per second
    max_body_bytes: int = 64 * MiB  # request bodies of the JSON API (over: 413)
    max_import_bytes: int = 256 * MiB  # GeoJSON imports (POST /api/slides/{id}/annotations)
    max_vertices: int = 100_000
    max_json_depth: int = 32  # nesting of an imported feature's properties (deeper: 400)
    layer_max_bytes: int = 8 * 1024 * MiB  # a detection layer import's body (streamed; over: 413)
    layer_query_limit: int = 20_000  # objects a box query lists before it answers a grid
    layer_outlines_max: int = 200_000  # outlines one binary box query may carry
    layer_imports: int = 4  # layer imports at once on a node (each a store connection); past it: 429
    geometry_checks: bool = True  # off only to measure their cost: no checks, index or annotation queries

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Defaults < COLLAB_* environment < explicit overrides (command-line flags)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get("COLLAB_" + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    @property
    def slide_directories(self) -> tuple[Path, ...]:
        return tuple(Path(d) for d in self.slide_dirs) or (self.data / "slides",)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}"


def _parse(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    if kind.startswith("bool"):
        return raw.strip().lower() in ("1", "true", "yes", "on")
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    if kind.startswith("Path"):
        return Path(raw)
    if kind.startswith("tuple"):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
