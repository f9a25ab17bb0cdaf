"""The Store contract, written once against the `Store` protocol.

A backend's test module provides a `harness` fixture (a `StoreHarness`) and imports these tests
(`from tests.store_contract import *`); tests/test_store_sqlite.py does it for SQLite, and another
backend runs the same suite by adding a param to that fixture.

Run as `python -m tests.store_contract DATABASE_URL DATA_DIR ROOM`, this module is the child
process of the kill -9 tests: it appends and compacts until killed, printing "ack N" once
update N is committed and "compacting N" / "compacted N" around each compaction.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import pytest
from pycrdt import Array, Doc

from collab.errors import StoreError
from collab.settings import Settings
from collab.store import AuditRecord, LoadedDocument, Store, open_store

__all__ = [
    "Gate",
    "StoreHarness",
    "test_append_then_load_in_order",
    "test_audit_and_list_audit",
    "test_claim_clients_first_claim_wins",
    "test_closed_store_refuses_writes_and_reads",
    "test_compact_in_the_same_batch_as_appends",
    "test_compact_while_appends_continue",
    "test_failing_commit_fails_its_whole_batch_and_the_next_works",
    "test_kill9_keeps_every_acknowledged_write_in_order",
    "test_load_during_a_commit_sees_only_committed_data",
    "test_records_put_get_list",
]

WAIT = 15.0  # seconds any condition below may take on a slow, shared machine


class Gate(Protocol):
    """A write held inside its open transaction until released."""

    def reached(self, timeout: float) -> bool:
        """Block (in a thread) until the held write started; False after `timeout`."""
        ...

    def release(self) -> None: ...


class StoreHarness(Protocol):
    """One backend under test, with the few hooks the contract needs to reach inside it."""

    store: Store
    database_url: str  # what a child process is given as COLLAB_DATABASE_URL

    async def reopen(self) -> None:
        """Close the store and open it again (a restart)."""
        ...

    async def fail_writes_of(self, data: bytes) -> None:
        """From now on, a batch that writes `data` (an update or a snapshot) fails at commit."""
        ...

    async def hold_writes_of(self, data: bytes) -> Gate:
        """From now on, a batch that writes `data` stops, transaction open, until released."""
        ...


def yjs_updates(n: int, client_id: int = 7) -> tuple[list[bytes], list[bytes]]:
    """n real Yjs updates, each appending its index to the array "log" (deterministic for a
    client id), and the whole document after each of them (a snapshot covering 0..i)."""
    doc = Doc(client_id=client_id)
    log = doc.get("log", type=Array)
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    snapshots = []
    for i in range(n):
        log.append(i)
        snapshots.append(doc.get_update())
    return updates, snapshots


def content(loaded: LoadedDocument) -> list[int]:
    doc = Doc()
    for update in loaded.updates:
        doc.apply_update(update)
    return [int(v) for v in doc.get("log", type=Array).to_py()]


async def in_thread_until(condition: Callable[[float], bool]) -> None:
    assert await asyncio.to_thread(condition, WAIT), "the held write never started"


# -- appends and compaction --------------------------------------------------------------------


async def test_append_then_load_in_order(harness: StoreHarness) -> None:
    store = harness.store
    updates, _ = yjs_updates(60)
    await asyncio.gather(*(store.append("r", u) for u in updates[:30]))  # group-committed together
    for u in updates[30:]:
        await store.append("r", u)  # one commit each
    await store.append("other", b"\x00\x00")
    loaded = await store.load("r")
    assert loaded.updates == updates
    assert (loaded.log_entries, loaded.log_bytes, loaded.snapshot_bytes) == (60, sum(map(len, updates)), 0)
    assert content(loaded) == list(range(60))
    empty = await store.load("never-written")
    assert (empty.updates, empty.log_entries, empty.client_owners) == ([], 0, {})


async def test_compact_in_the_same_batch_as_appends(harness: StoreHarness) -> None:
    store = harness.store
    updates, snapshots = yjs_updates(20)
    await asyncio.gather(*(store.append("r", u) for u in updates[:10]))
    # One loop turn, so one batch: appends, the compaction covering them, later appends.
    futures = [store.append("r", u) for u in updates[10:15]]
    futures.append(store.compact("r", snapshots[14]))
    futures += [store.append("r", u) for u in updates[15:]]
    await asyncio.gather(*futures)
    loaded = await store.load("r")
    assert loaded.updates == [snapshots[14], *updates[15:]]
    assert (loaded.log_entries, loaded.snapshot_bytes) == (5, len(snapshots[14]))
    assert content(loaded) == list(range(20))


async def test_compact_while_appends_continue(harness: StoreHarness) -> None:
    """An append queued while a compaction is being committed survives it."""
    store = harness.store
    updates, snapshots = yjs_updates(12)
    await asyncio.gather(*(store.append("r", u) for u in updates[:10]))
    gate = await harness.hold_writes_of(snapshots[9])
    compacted = store.compact("r", snapshots[9])
    await in_thread_until(gate.reached)
    later = [store.append("r", u) for u in updates[10:]]
    try:
        assert content(await store.load("r")) == list(range(10))  # the held compaction is invisible
        assert (await store.load("r")).snapshot_bytes == 0
    finally:
        gate.release()
    await asyncio.gather(compacted, *later)
    loaded = await store.load("r")
    assert loaded.updates == [snapshots[9], *updates[10:]]
    assert content(loaded) == list(range(12))
    await harness.reopen()
    assert (await harness.store.load("r")).updates == [snapshots[9], *updates[10:]]


# -- records, audit, client ids ------------------------------------------------------------------


async def test_records_put_get_list(harness: StoreHarness) -> None:
    store = harness.store
    await store.put_record("slide", "s1", {"id": "s1", "title": "first"})
    assert await store.get_record("slide", "s1") == {"id": "s1", "title": "first"}  # read your write
    record = {"id": "s2", "title": "second", "mpp": 0.25, "tags": ["a", "b"]}
    await store.put_record("slide", "s2", record)
    record["title"] = "changed after the put"  # the store keeps what it was given
    await store.put_record("session", "s1", {"id": "s1", "slides": ["s1", "s2"]})
    await store.put_record("slide", "s1", {"id": "s1", "title": "renamed"})  # replaces
    assert await store.get_record("slide", "s2") == {"id": "s2", "title": "second", "mpp": 0.25, "tags": ["a", "b"]}
    assert await store.get_record("slide", "missing") is None
    assert await store.get_record("session", "s1") == {"id": "s1", "slides": ["s1", "s2"]}
    slides = await store.list_records("slide")
    assert sorted(r["id"] for r in slides) == ["s1", "s2"]
    assert {r["id"]: r["title"] for r in slides} == {"s1": "renamed", "s2": "second"}
    assert await store.list_records("nothing") == []
    await harness.reopen()
    assert await harness.store.get_record("slide", "s1") == {"id": "s1", "title": "renamed"}


async def test_audit_and_list_audit(harness: StoreHarness) -> None:
    store = harness.store
    records = [
        AuditRecord("a", 1000 + i, f"user-{i}", "Roubaix", "update", f"k{i}", {"n": i} if i % 2 else None)
        for i in range(8)
    ]
    futures = [store.audit(r) for r in records[:5]]
    futures.append(store.audit(AuditRecord("b", 5, "x", "Mouscron", "refused")))
    await asyncio.gather(*futures)
    for r in records[5:]:
        await store.audit(r)
    assert await store.list_audit("a") == records
    assert await store.list_audit("a", limit=3) == records[-3:]  # the latest, oldest first
    assert await store.list_audit("b") == [AuditRecord("b", 5, "x", "Mouscron", "refused")]
    assert await store.list_audit("none") == []


async def test_claim_clients_first_claim_wins(harness: StoreHarness) -> None:
    store = harness.store
    updates, snapshots = yjs_updates(3)
    await store.claim_clients("r", {1: "alice", 2: "alice"})
    # Claimed just before the append of the update that introduced the id: one transaction.
    await asyncio.gather(store.claim_clients("r", {2: "bob", 3: "bob"}), store.append("r", updates[0]))
    await store.claim_clients("other", {2: "carol"})
    await store.claim_clients("r", {})
    assert (await store.load("r")).client_owners == {1: "alice", 2: "alice", 3: "bob"}
    assert (await store.load("other")).client_owners == {2: "carol"}
    big = 2**32 - 1  # Yjs client ids are 32-bit unsigned
    await store.claim_clients("r", {big: "dave"})
    await store.compact("r", snapshots[0])  # owners outlive compaction
    await harness.reopen()
    assert (await harness.store.load("r")).client_owners == {1: "alice", 2: "alice", 3: "bob", big: "dave"}


# -- failures and concurrency ----------------------------------------------------------------------


async def test_failing_commit_fails_its_whole_batch_and_the_next_works(harness: StoreHarness) -> None:
    store = harness.store
    updates, _ = yjs_updates(3)
    await store.append("r", updates[0])
    poison = b"\x00\x00poison"
    await harness.fail_writes_of(poison)
    # One loop turn, so one batch, and the poisoned append last: everything before it was
    # already written inside the transaction when the commit fails.
    futures = [
        store.claim_clients("r", {9: "eve"}),
        store.append("r", updates[1]),
        store.audit(AuditRecord("r", 1, "eve", "Roubaix", "update")),
        store.put_record("slide", "ghost", {"id": "ghost"}),
        store.compact("r", updates[0]),
        store.append("r", poison),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    loaded = await store.load("r")
    assert loaded.updates == [updates[0]]
    assert loaded.client_owners == {}
    assert await store.list_audit("r") == []
    assert await store.get_record("slide", "ghost") is None
    # The next batch works.
    await store.append("r", updates[2])
    await store.flush()
    assert (await store.load("r")).updates == [updates[0], updates[2]]
    await harness.reopen()
    assert (await harness.store.load("r")).updates == [updates[0], updates[2]]


async def test_load_during_a_commit_sees_only_committed_data(harness: StoreHarness) -> None:
    store = harness.store
    updates, _ = yjs_updates(4)
    await store.append("r", updates[0])
    gate = await harness.hold_writes_of(updates[3])
    futures = [
        store.append("r", updates[1]),
        store.claim_clients("r", {5: "frank"}),
        store.put_record("slide", "pending", {"id": "pending"}),
        store.audit(AuditRecord("r", 1, "frank", "Roubaix", "update")),
        store.append("r", updates[2]),
        store.append("r", updates[3]),  # held here: the rows above are written, not committed
    ]
    await in_thread_until(gate.reached)
    try:
        loaded = await store.load("r")
        assert (loaded.updates, loaded.client_owners) == ([updates[0]], {})
        assert await store.get_record("slide", "pending") is None
        assert await store.list_records("slide") == []
        assert await store.list_audit("r") == []
        assert not any(f.done() for f in futures)
    finally:
        gate.release()
    await asyncio.gather(*futures)
    loaded = await store.load("r")
    assert (loaded.updates, loaded.client_owners) == (updates, {5: "frank"})
    assert await store.get_record("slide", "pending") == {"id": "pending"}


async def test_closed_store_refuses_writes_and_reads(harness: StoreHarness) -> None:
    store = harness.store
    pending = store.append("r", b"\x00\x00")
    await store.close()  # commits what was queued first
    assert pending.done() and pending.exception() is None
    with pytest.raises(StoreError):
        store.append("r", b"\x00\x00")
    with pytest.raises(StoreError):
        await store.put_record("slide", "s", {})
    with pytest.raises(StoreError):
        await store.load("r")
    await harness.reopen()
    assert (await harness.store.load("r")).updates == [b"\x00\x00"]


# -- kill -9 -----------------------------------------------------------------------------------------

CHILD_UPDATES = 2000
CHILD_COMPACT_EVERY = 150
CHILD_ROOM = "room-under-kill"


@pytest.mark.parametrize(
    "kill_when",
    ["ack 0", "ack 120", "compacting 149", "compacted 149", "compacting 599", "ack 700"],
)
async def test_kill9_keeps_every_acknowledged_write_in_order(
    harness: StoreHarness, kill_when: str, tmp_path: Path
) -> None:
    """A child process appends and compacts; SIGKILL it at a point; what it was told is
    committed is there after a restart, in order, and the log is a run of consecutive updates."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.store_contract", harness.database_url, str(tmp_path / "child"), CHILD_ROOM,
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parent.parent,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode().strip()
                assert line, f"the child ended before {kill_when!r}: {seen[-5:]}"
                seen.append(line)
                if line == kill_when:
                    proc.kill()
                    break
            # Lines printed before the kill were said after their commit: they count too.
            # (A line cut short by the kill has no newline: it was not said.)
            seen += (await proc.stdout.read()).decode().split("\n")[:-1]
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    acked = [int(line.split()[1]) for line in seen if line.startswith("ack")]
    assert acked == list(range(len(acked))), "acknowledgements out of order"
    await harness.reopen()
    loaded = await harness.store.load(CHILD_ROOM)
    updates, _snapshots = yjs_updates(CHILD_UPDATES)
    have = content(loaded)
    assert have == list(range(len(have))), "the stored document is not a prefix of what was written"
    assert len(have) >= len(acked), f"lost {len(acked) - len(have)} acknowledged updates"
    # The log after the snapshot is the run of updates that follows it, in append order.
    log = loaded.updates[len(loaded.updates) - loaded.log_entries :]
    start = len(have) - len(log)
    assert log == updates[start : len(have)]
    if loaded.snapshot_bytes:
        assert content(LoadedDocument(loaded.updates[:1], 0, 0)) == list(range(start))


async def _child(database_url: str, data: str, room: str) -> None:
    updates, snapshots = yjs_updates(CHILD_UPDATES)

    def say(line: str) -> Callable[[asyncio.Future[None]], None]:
        def on_done(future: asyncio.Future[None]) -> None:
            if future.exception() is None:
                print(line, flush=True)

        return on_done

    async with open_store(Settings(data=Path(data), database_url=database_url)) as store:
        i = 0
        while i < CHILD_UPDATES:
            batch = []
            for _ in range(7):  # a few at a time, so commits group several appends
                future = store.append(room, updates[i])
                future.add_done_callback(say(f"ack {i}"))
                batch.append(future)
                if i % CHILD_COMPACT_EVERY == CHILD_COMPACT_EVERY - 1:
                    print(f"compacting {i}", flush=True)
                    future = store.compact(room, snapshots[i])
                    future.add_done_callback(say(f"compacted {i}"))
                    batch.append(future)
                i += 1
                if i == CHILD_UPDATES:
                    break
            await asyncio.gather(*batch)
        print("done", flush=True)
        await asyncio.sleep(3600)  # wait to be killed


if __name__ == "__main__":
    asyncio.run(_child(*sys.argv[1:4]))
