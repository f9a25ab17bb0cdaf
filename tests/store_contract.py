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
    "test_appends_are_numbered_per_room_in_commit_order",
    "test_audit_and_list_audit",
    "test_before_next_commit_writes_share_that_commit",
    "test_claim_clients_first_claim_wins",
    "test_closed_store_refuses_writes_and_reads",
    "test_compact_deletes_exactly_what_upto_covers_and_never_goes_back",
    "test_compact_in_the_same_batch_as_appends",
    "test_compact_while_appends_continue",
    "test_compaction_racing_appends_from_another_instance_loses_nothing",
    "test_failing_commit_fails_its_whole_batch_and_the_next_works",
    "test_kill9_keeps_every_acknowledged_write_in_order",
    "test_latest_seqs_names_each_rooms_highest_number",
    "test_load_during_a_commit_sees_only_committed_data",
    "test_read_since",
    "test_records_put_get_list",
    "test_secret_is_generated_once_and_kept",
    "test_two_instances_number_one_room_contiguously",
]

WAIT = 15.0  # seconds any condition below may take on a slow, shared machine


class Gate(Protocol):
    """A write held inside its open transaction until released."""

    async def reached(self, timeout: float) -> bool:
        """Wait until the held write started; False after `timeout`."""
        ...

    async def release(self) -> None: ...


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

    async def another_store(self) -> Store | None:
        """A second open store on the same database (another node), closed by the caller; None
        for a backend that serves one process (the tests that need it are skipped)."""
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


async def until_held(gate: Gate) -> None:
    assert await gate.reached(WAIT), "the held write never started"


async def another_store(harness: StoreHarness) -> Store:
    other = await harness.another_store()
    if other is None:
        pytest.skip("this backend serves one process: no second instance on the same database")
    return other


def doc_of(loaded: LoadedDocument) -> Doc:
    doc = Doc()
    for update in loaded.updates:
        doc.apply_update(update)
    return doc


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
    futures.append(store.compact("r", snapshots[14], 15))
    futures += [store.append("r", u) for u in updates[15:]]
    await asyncio.gather(*futures)
    loaded = await store.load("r")
    assert loaded.updates == [snapshots[14], *updates[15:]]
    assert (loaded.log_entries, loaded.snapshot_bytes) == (5, len(snapshots[14]))
    assert content(loaded) == list(range(20))


async def test_before_next_commit_writes_share_that_commit(harness: StoreHarness) -> None:
    """What a before_next_commit callback writes commits with what was queued before it (a
    correction and the update it corrects), and the callback runs once, after the commit in flight."""
    store = harness.store
    updates, _ = yjs_updates(3)
    gate = await harness.hold_writes_of(updates[0])
    held = store.append("r", updates[0])
    await until_held(gate)
    queued = store.append("r", updates[1])
    calls: list[bool] = []
    written: list[asyncio.Future[int]] = []

    def correct() -> None:
        calls.append(held.done())
        written.append(store.append("r", updates[2]))

    store.before_next_commit(correct)
    await asyncio.sleep(0.05)
    assert calls == []  # not while a commit is in flight: it waits to join the next one
    await gate.release()
    first = await queued
    assert calls == [True]
    assert written[0].done()  # resolved with `queued`: the same commit
    assert (await held, first, await written[0]) == (1, 2, 3)
    assert content(await store.load("r")) == [0, 1, 2]


async def test_compact_while_appends_continue(harness: StoreHarness) -> None:
    """An append queued while a compaction is being committed survives it."""
    store = harness.store
    updates, snapshots = yjs_updates(12)
    await asyncio.gather(*(store.append("r", u) for u in updates[:10]))
    gate = await harness.hold_writes_of(snapshots[9])
    compacted = store.compact("r", snapshots[9], 10)
    await until_held(gate)
    later = [store.append("r", u) for u in updates[10:]]
    try:
        assert content(await store.load("r")) == list(range(10))  # the held compaction is invisible
        assert (await store.load("r")).snapshot_bytes == 0
    finally:
        await gate.release()
    await asyncio.gather(compacted, *later)
    loaded = await store.load("r")
    assert loaded.updates == [snapshots[9], *updates[10:]]
    assert content(loaded) == list(range(12))
    await harness.reopen()
    assert (await harness.store.load("r")).updates == [snapshots[9], *updates[10:]]


# -- sequence numbers ----------------------------------------------------------------------------


async def test_appends_are_numbered_per_room_in_commit_order(harness: StoreHarness) -> None:
    store = harness.store
    updates, _ = yjs_updates(40)
    assert (await store.load("r")).seq == 0  # a new room
    together = await asyncio.gather(*(store.append("r", u) for u in updates[:20]))  # one batch
    assert together == list(range(1, 21))
    # Two rooms in one batch: each counts its own.
    mixed = await asyncio.gather(store.append("other", b"\x00\x00"), store.append("r", updates[20]),
                                 store.append("other", b"\x00\x00"))
    assert mixed == [1, 21, 2]
    for n, u in enumerate(updates[21:], start=22):
        assert await store.append("r", u) == n  # one commit each
    loaded = await store.load("r")
    assert (loaded.seq, loaded.log_entries) == (40, 40)
    await harness.reopen()
    assert await harness.store.append("r", updates[0]) == 41  # the counter outlives a restart


async def test_read_since(harness: StoreHarness) -> None:
    store = harness.store
    updates, snapshots = yjs_updates(10)
    await asyncio.gather(*(store.append("r", u) for u in updates))  # numbers 1..10
    since = await store.read_since("r", 4)
    assert (since.updates, since.seq, since.log_entries, since.snapshot_bytes) == (updates[4:], 10, 6, 0)
    await store.compact("r", snapshots[5], 6)  # folds numbers 1..6
    since = await store.read_since("r", 4)  # 5 and 6 are only in the snapshot now: it comes first
    assert (since.updates, since.seq, since.log_entries) == ([snapshots[5], *updates[6:]], 10, 4)
    assert since.snapshot_bytes == len(snapshots[5])
    assert (await store.read_since("r", 6)).updates == updates[6:]  # the snapshot adds nothing newer
    assert (await store.read_since("r", 8)).updates == updates[8:]
    up_to_date = await store.read_since("r", 10)
    assert (up_to_date.updates, up_to_date.seq) == ([], 10)
    assert (await store.read_since("r", 0)).updates == (await store.load("r")).updates
    loaded = await store.load("r")
    assert (loaded.seq, content(loaded)) == (10, list(range(10)))
    empty = await store.read_since("never-written", 0)
    assert (empty.updates, empty.seq) == ([], 0)


async def test_compact_deletes_exactly_what_upto_covers_and_never_goes_back(harness: StoreHarness) -> None:
    store = harness.store
    updates, snapshots = yjs_updates(12)
    await asyncio.gather(*(store.append("r", u) for u in updates[:10]))
    await store.compact("r", snapshots[4], 5)
    loaded = await store.load("r")
    assert (loaded.updates, loaded.seq) == ([snapshots[4], *updates[5:10]], 10)
    await store.compact("r", snapshots[7], 8)
    # Older or equal snapshots never replace a newer one, and delete nothing.
    await store.compact("r", snapshots[5], 6)
    await store.compact("r", snapshots[7][:-1] + b"\x00", 8)
    await store.compact("r", b"\x00\x00", 0)
    await store.compact("fresh", b"\x00\x00", 0)  # covers nothing: not even stored
    loaded = await store.load("r")
    assert loaded.updates == [snapshots[7], *updates[8:10]]
    assert (await store.load("fresh")).updates == []
    # A snapshot that also holds an update still in the log (its append was not answered yet
    # when the snapshot was taken) keeps that entry: applying it twice is harmless.
    assert await store.append("r", updates[10]) == 11
    await store.compact("r", snapshots[10], 10)
    loaded = await store.load("r")
    assert loaded.updates == [snapshots[10], updates[10]]
    assert (loaded.seq, content(loaded)) == (11, list(range(11)))
    await harness.reopen()
    assert (await harness.store.load("r")).updates == [snapshots[10], updates[10]]


async def test_two_instances_number_one_room_contiguously(harness: StoreHarness) -> None:
    """Two nodes appending to one room at once: numbers 1..n, none twice, none missing, each
    node's in the order it appended them, and the log read back in that numbering."""
    other = await another_store(harness)
    try:
        mine, _ = yjs_updates(150, client_id=7)
        theirs, _ = yjs_updates(150, client_id=8)

        async def write(store: Store, updates: list[bytes]) -> list[int]:
            numbers: list[int] = []
            for i in range(0, len(updates), 6):  # a few per loop turn: batches of several
                numbers += await asyncio.gather(*(store.append("r", u) for u in updates[i : i + 6]))
            return numbers

        a, b = await asyncio.gather(write(harness.store, mine), write(other, theirs))
        assert sorted(a + b) == list(range(1, 301))
        assert a == sorted(a) and b == sorted(b)
        by_number = dict(zip(a, mine, strict=True)) | dict(zip(b, theirs, strict=True))
        for store in (harness.store, other):
            loaded = await store.load("r")
            assert loaded.seq == 300
            assert loaded.updates == [by_number[n] for n in range(1, 301)]
    finally:
        await other.close()


async def test_compaction_racing_appends_from_another_instance_loses_nothing(harness: StoreHarness) -> None:
    """One node compacts what it read while another keeps appending: nothing the other was told
    is committed is lost (y-postgresql deleted, outside a transaction, `id < clock` rows it never
    merged). First deterministically, a compaction held open while the other node commits;
    then a free-running race."""
    other = await another_store(harness)
    store = harness.store
    try:
        mine, _ = yjs_updates(200, client_id=7)
        theirs, _ = yjs_updates(200, client_id=8)
        await asyncio.gather(*(store.append("r", u) for u in mine[:10]))
        loaded = await store.load("r")
        snapshot = doc_of(loaded).get_update()
        gate = await harness.hold_writes_of(snapshot)
        compacted = store.compact("r", snapshot, loaded.seq)
        await until_held(gate)
        try:
            committed = await asyncio.gather(*(other.append("r", u) for u in theirs[:10]))
        finally:
            await gate.release()
        await compacted
        assert committed == list(range(11, 21))
        after = await other.load("r")
        assert after.updates == [snapshot, *theirs[:10]]

        done = asyncio.Event()
        compactions = 0

        async def write(s: Store, updates: list[bytes]) -> None:
            for i in range(0, len(updates), 5):
                await asyncio.gather(*(s.append("r", u) for u in updates[i : i + 5]))

        async def compact_while_writing() -> None:
            nonlocal compactions
            while not done.is_set():
                seen = await store.load("r")
                await store.compact("r", doc_of(seen).get_update(), seen.seq)
                compactions += 1

        compactor = asyncio.ensure_future(compact_while_writing())
        try:
            await asyncio.gather(write(store, mine[10:]), write(other, theirs[10:]))
        finally:
            done.set()
            await compactor
        assert compactions >= 2
        final = await other.load("r")
        assert final.seq == 400
        assert sorted(content(final)) == sorted(list(range(200)) * 2)
        assert final.log_entries < 390  # compaction did fold most of the log
    finally:
        await other.close()


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
    await store.compact("r", snapshots[0], 1)  # owners outlive compaction
    await harness.reopen()
    assert (await harness.store.load("r")).client_owners == {1: "alice", 2: "alice", 3: "bob", big: "dave"}


async def test_secret_is_generated_once_and_kept(harness: StoreHarness) -> None:
    calls: list[str] = []

    def generate() -> str:
        calls.append(f"secret-{len(calls)}")
        return calls[-1]

    first = await harness.store.secret(generate)
    assert first == "secret-0"
    assert await harness.store.secret(generate) == first
    await harness.reopen()
    assert await harness.store.secret(generate) == first
    assert calls == ["secret-0"]


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
        store.compact("r", updates[0], 1),
        store.append("r", poison),
    ]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, StoreError) for r in results), results
    loaded = await store.load("r")
    assert loaded.updates == [updates[0]]
    assert loaded.client_owners == {}
    assert await store.list_audit("r") == []
    assert await store.get_record("slide", "ghost") is None
    # The next batch works, and numbers the failed batch took back are given again.
    assert await store.append("r", updates[2]) == 2
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
    await until_held(gate)
    try:
        loaded = await store.load("r")
        assert (loaded.updates, loaded.client_owners) == ([updates[0]], {})
        assert await store.get_record("slide", "pending") is None
        assert await store.list_records("slide") == []
        assert await store.list_audit("r") == []
        assert not any(f.done() for f in futures)
    finally:
        await gate.release()
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

    def say(line: str) -> Callable[[asyncio.Future[object]], None]:
        def on_done(future: asyncio.Future[object]) -> None:
            if future.exception() is None:
                print(line, flush=True)

        return on_done

    async with open_store(Settings(data=Path(data), database_url=database_url)) as store:
        i = 0
        while i < CHILD_UPDATES:
            batch: list[asyncio.Future[object]] = []
            for _ in range(7):  # a few at a time, so commits group several appends
                future = store.append(room, updates[i])
                future.add_done_callback(say(f"ack {i}"))
                batch.append(future)
                if i % CHILD_COMPACT_EVERY == CHILD_COMPACT_EVERY - 1:
                    print(f"compacting {i}", flush=True)
                    future = store.compact(room, snapshots[i], i + 1)  # a new room: update i is number i + 1
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


async def test_latest_seqs_names_each_rooms_highest_number(harness: StoreHarness) -> None:
    store = harness.store
    for _ in range(3):
        store.append("room-a", b"\x00\x00")
    await store.append("room-b", b"\x00\x00")
    assert await store.latest_seqs(["room-a", "room-b", "room-none"]) == {"room-a": 3, "room-b": 1}
