"""Prometheus metrics (prometheus_client), served as text at GET /metrics.

Labels never carry tokens, user ids or slide ids: cardinality stays bounded and no secret
ends up in a scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

ROOMS_LOADED = Gauge("collab_rooms_loaded", "Rooms held in memory", registry=REGISTRY)
CONNECTIONS = Gauge("collab_connections", "Open WebSocket connections", registry=REGISTRY)
UPDATES_IN = Counter("collab_updates_in_total", "Document updates accepted", registry=REGISTRY)
UPDATES_OUT = Counter(
    "collab_updates_out_total", "Document update frames sent to clients", registry=REGISTRY
)
AWARENESS_IN = Counter("collab_awareness_in_total", "Awareness messages received", registry=REGISTRY)
AWARENESS_OUT = Counter(
    "collab_awareness_out_total", "Awareness frames sent to clients", registry=REGISTRY
)
BYTES_IN = Counter("collab_bytes_in_total", "WebSocket payload bytes received", registry=REGISTRY)
BYTES_OUT = Counter("collab_bytes_out_total", "WebSocket payload bytes sent", registry=REGISTRY)
CORRECTIONS = Counter(
    "collab_corrections_total",
    "Server transactions correcting what clients wrote (status, measurements, author, updated...)",
    registry=REGISTRY,
)
REFUSALS = Counter(
    "collab_refusals_total", "Refused connections and messages", ["reason"], registry=REGISTRY
)
CLOSES = Counter("collab_closes_total", "Connections closed by the server", ["code"], registry=REGISTRY)
STORE_COMMIT_SECONDS = Histogram(
    "collab_store_commit_seconds",
    "Time to commit one group of writes",
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
    registry=REGISTRY,
)
STORE_BATCH_OPS = Histogram(
    "collab_store_batch_ops",
    "Writes per group commit",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
    registry=REGISTRY,
)
ROOM_LOAD_SECONDS = Histogram(
    "collab_room_load_seconds",
    "Time to load a room from the store",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0),
    registry=REGISTRY,
)
COMPACTIONS = Counter("collab_compactions_total", "Update logs folded into snapshots", registry=REGISTRY)
BUS_PUBLISHED = Counter("collab_bus_published_total", "Messages published to the other nodes", registry=REGISTRY)
BUS_RECEIVED = Counter("collab_bus_received_total", "Messages from other nodes for loaded rooms", registry=REGISTRY)
BUS_DROPPED = Counter(
    "collab_bus_dropped_total", "Messages not published while Redis was away (the store has them)", registry=REGISTRY
)
