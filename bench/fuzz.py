"""Fuzz a live slide room with malformed y-websocket frames while two good clients co-edit (issue 11).

    .venv/bin/python bench/fuzz.py [--frames 100000] [--hostile 6] [--max-seconds 240] [--seed 11]
    .venv/bin/python bench/fuzz.py import-stall [--features 7577] [--vertices 1000]

Not run in CI. Starts `collab serve` in a child process on a free loopback port with a data
directory of its own, registers a slide, and connects:

- two good clients (tests/yclient.py, pycrdt Docs) that each write a square annotation every
  `--write-interval` seconds; each times every annotation of the other from the moment it was
  written to the moment its own Doc held it (relay latency), and notes whether the server's
  `status` reached the writer;
- `--hostile` connections (reviewer tokens, so their updates would be applied) that send
  mutated or malformed frames as fast as the server takes them, reconnecting whenever the
  server closes them: bit flips, truncations, corrupted length fields, random bytes, huge
  varints, unknown message types, text frames, awareness garbage and updates with garbage
  payloads, mutated from a corpus of valid frames (sync step 1/2, updates, awareness).

At the end it reports, as one JSON object: whether the server is alive, how the hostile
connections ended (close codes; 1006 is an end without a close frame), the server's RSS after
the fuzz and in a fresh process that reloaded the same data, the good clients' relay p50/p99
during the fuzz, the fraction of good annotations that got a `status`, and whether every good
annotation a client received is present after `kill -9` and a restart.

`import-stall` measures instead how long the server's event loop stalls during one large import
(a probe times GET /healthz every 20 ms from another connection while the import runs).
"""

from __future__ import annotations

# ruff: noqa: E402  (the repository root goes on sys.path before collab and tests are imported)
import argparse
import asyncio
import collections
import contextlib
import math
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets
from pycrdt import Doc, Map

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH.parent))
from collab.auth import TokenAuthenticator
from collab.live.protocol import (
    AwarenessEntry,
    encode_awareness,
    encode_awareness_update,
    encode_sync_step1,
    encode_sync_step2,
    encode_update,
)
from tests.conftest import SECRET, ServerProcess
from tests.yclient import YClient

SLIDE = "fuzz"
WIDTH, HEIGHT = 100_000, 80_000
AUTH = TokenAuthenticator(SECRET)


def token(user: str, role: str = "reviewer") -> str:
    return AUTH.mint(user=user, name=user, site="Roubaix", role=role, slides="*", ttl=3600)


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def square(rng: random.Random) -> dict[str, Any]:
    x, y, s = rng.uniform(0, WIDTH - 500), rng.uniform(0, HEIGHT - 500), rng.uniform(10, 400)
    return {"type": "Polygon", "coordinates": [[[x, y], [x + s, y], [x + s, y + s], [x, y + s], [x, y]]]}


# --- hostile frames ------------------------------------------------------------------------------


def corpus(rng: random.Random) -> list[bytes]:
    """Valid frames of every kind, to be mutated."""
    doc = Doc()
    updates: list[bytes] = []
    doc.observe(lambda event: updates.append(event.update))
    annotations = doc.get("annotations", type=Map)
    for i in range(12):
        annotations[f"h{i}"] = Map({"geometry": square(rng), "name": f"h{i}", "classification": None})
    annotations["h0"]["name"] = "renamed"
    del annotations["h1"]
    frames = [encode_update(u) for u in updates]
    frames.append(encode_sync_step1(doc.get_state()))
    frames.append(encode_sync_step2(doc.get_update()))
    frames.append(encode_sync_step1(b"\x00"))
    for clock in range(1, 4):
        state = {"viewport": {"x": 1, "y": 2, "width": 3, "height": 4, "rotation": 0}, "cursor": None}
        entry = AwarenessEntry(doc.client_id, clock, orjson.dumps(state).decode())
        frames.append(encode_awareness(encode_awareness_update([entry])))
    return frames


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def awareness_garbage(rng: random.Random) -> bytes:
    kind = rng.randrange(5)
    if kind == 0:  # a count far beyond the entries
        payload = varint(rng.choice([2**32, 2**53, 10**6])) + varint(1) + varint(1) + varint(2) + b"{}"
    elif kind == 1:  # huge client ids and clocks
        payload = varint(1) + varint(rng.getrandbits(64)) + varint(rng.getrandbits(64)) + varint(4) + b"null"
    elif kind == 2:  # state that is not JSON / not UTF-8
        junk = rng.randbytes(rng.randrange(1, 64))
        payload = varint(1) + varint(rng.getrandbits(31)) + varint(1) + varint(len(junk)) + junk
    elif kind == 3:  # a string length past the end
        payload = varint(1) + varint(7) + varint(1) + varint(10**9) + b"{}"
    else:  # JSON of the wrong shapes
        state = rng.choice([b"[]", b"1", b'"x"', b'{"user": 5, "viewport": "big"}', b"{" * 200 + b"}" * 200])
        payload = varint(1) + varint(rng.getrandbits(31)) + varint(rng.randrange(1, 9)) + varint(len(state)) + state
    return b"\x01" + varint(len(payload)) + payload


def deep_any_update(depth: int) -> bytes:
    """An update message setting annotations["deep"] to [[[...1...]]] nested `depth` deep, built
    from the bytes pycrdt writes for a shallow one (each level is 0x75 0x01: an array of one)."""
    doc = Doc()
    value: Any = 1.0
    for _ in range(8):
        value = [value]
    doc.get("annotations", type=Map)["deep"] = value
    update = doc.get_update()
    shallow = b"\x75\x01" * 8
    assert shallow in update
    return encode_update(update.replace(shallow, b"\x75\x01" * depth, 1))


def mutate(rng: random.Random, frames: list[bytes]) -> bytes | str:
    frame = bytearray(rng.choice(frames))
    kind = rng.randrange(11)
    if kind == 0:  # bit flips
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(frame))
            frame[i] ^= 1 << rng.randrange(8)
    elif kind == 1:  # truncation
        frame = frame[: rng.randrange(len(frame))]
    elif kind == 2:  # a length field that lies
        pos = min(2, len(frame) - 1)
        frame[pos : pos + 1] = varint(rng.choice([0, 1, len(frame) * 3, 2**31, 2**62]))
    elif kind == 3:  # random bytes
        frame = bytearray(rng.randbytes(rng.randrange(0, 300)))
    elif kind == 4:  # a huge varint somewhere
        pos = rng.randrange(len(frame) + 1)
        frame[pos:pos] = b"\xff" * rng.randint(5, 24) + b"\x01"
    elif kind == 5:  # an unknown or misplaced message type
        frame[0:1] = varint(rng.choice([3, 4, 5, 17, 99, 127, 128, 2**20]))
    elif kind == 6:  # a sync message of an unknown sync type
        frame = bytearray(b"\x00" + varint(rng.choice([3, 4, 200])) + frame[2:])
    elif kind == 7:  # awareness garbage
        return awareness_garbage(rng)
    elif kind == 8:  # an update message whose payload is garbage
        junk = rng.randbytes(rng.randrange(1, 200))
        return b"\x00\x02" + varint(len(junk)) + junk
    elif kind == 9:  # a text frame
        return frame.decode("latin-1")
    else:  # two frames glued together, or one repeated
        frame += rng.choice(frames)
    return bytes(frame)


class Hostile:
    """Counts of what the hostile connections sent and how the server ended them."""

    def __init__(self) -> None:
        self.frames = 0
        self.connections = 0
        self.refused_connects = 0
        self.close_codes: collections.Counter[int | None] = collections.Counter()
        self.abnormal: list[str] = []  # hex of the last frames sent before each 1006


async def hostile_worker(n: int, url: str, quota: int, deadline: float, stats: Hostile, seed: int) -> None:
    rng = random.Random(seed)
    frames = corpus(rng)
    url = f"{url}/ws/slides/{SLIDE}?token={token(f'hostile-{n}')}"
    while stats.frames < quota and time.monotonic() < deadline:
        try:
            ws = await websockets.connect(url, max_size=None, compression=None, open_timeout=10, close_timeout=2)
        except (OSError, websockets.InvalidHandshake, TimeoutError):
            stats.refused_connects += 1
            await asyncio.sleep(0.1)
            continue
        stats.connections += 1
        drain = asyncio.get_running_loop().create_task(_drain(ws))
        recent: collections.deque[bytes | str] = collections.deque(maxlen=3)
        try:
            while stats.frames < quota and time.monotonic() < deadline:
                frame = mutate(rng, frames)
                recent.append(frame)
                await ws.send(frame)
                stats.frames += 1
                # A ping after every frame: its pong comes once the server has read the frame, so
                # frames are not just piled into a socket the server is about to close.
                await asyncio.wait_for(await ws.ping(), 10)
        except (websockets.ConnectionClosed, TimeoutError):
            pass
        finally:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ws.close(), 5)
            drain.cancel()
            stats.close_codes[ws.close_code] += 1
            if ws.close_code == 1006:
                stats.abnormal.append(" | ".join(
                    f.hex() if isinstance(f, bytes) else "text:" + f.encode("latin-1").hex() for f in recent))


async def hostile_run(args: argparse.Namespace) -> dict[str, Any]:
    stats = Hostile()
    if args.deep:  # one update nested --deep levels deep, before the fuzz (see bench/RESULTS.md)
        url = f"{args.url}/ws/slides/{SLIDE}?token={token('hostile-deep')}"
        async with websockets.connect(url, max_size=None, compression=None) as ws:
            await ws.send(deep_any_update(args.deep))
            with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
                await asyncio.wait_for(await ws.ping(), 10)
    deadline = time.monotonic() + args.max_seconds
    await asyncio.gather(*(  # one shared quota: the workers stop once the total is reached
        hostile_worker(n, args.url, args.frames, deadline, stats, args.seed + n) for n in range(args.hostile)
    ))
    return {
        "frames_sent": stats.frames,
        "hostile_connections": stats.connections,
        "refused_connects": stats.refused_connects,
        "close_codes": {str(k): v for k, v in sorted(stats.close_codes.items(), key=lambda kv: str(kv[0]))},
        "ended_without_close_frame_1006": stats.close_codes.get(1006, 0),
        "last_frames_before_1006": stats.abnormal[:5],
    }


async def _drain(ws: Any) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        async for _ in ws:
            pass


# --- good clients ----------------------------------------------------------------------------------


class Good:
    """One well-behaved client: writes annotations, times the other's."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.client = YClient(f"{url}/ws/slides/{SLIDE}?token={token(name)}")
        self.written: dict[str, float] = {}  # annotation id -> when it was written
        self.seen: dict[str, float] = {}  # annotation id -> when this client's Doc held it

    async def start(self) -> None:
        await self.client.connect()
        self._annotations = self.client.annotations
        self._subscription = self._annotations.observe(self._on_change)  # held: kept alive

    def _on_change(self, event: Any) -> None:
        now = time.perf_counter()
        for key in getattr(event, "keys", {}) or {}:
            self.seen.setdefault(str(key), now)

    async def write(self, until: float, interval: float, rng: random.Random) -> None:
        while time.monotonic() < until:
            key = f"{self.name}-{len(self.written)}"
            self.written[key] = time.perf_counter()
            self._annotations[key] = Map({"geometry": square(rng), "name": key, "classification": None})
            await asyncio.sleep(interval)

    def statused(self) -> int:
        return sum(1 for k in self.written if isinstance(self.client.annotations.get(k), Map)
                   and self.client.annotations[k].get("status") is not None)


def relay_latencies(writer: Good, reader: Good) -> list[float]:
    return [reader.seen[k] - t for k, t in writer.written.items() if k in reader.seen]


def quantile(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0] if values else math.nan
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- the run -----------------------------------------------------------------------------------------


async def fuzz(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(tempfile.mkdtemp(prefix="collab-fuzz-")) / "data"
    proc = ServerProcess(data).start()
    admin = {"Authorization": f"Bearer {token('admin', 'admin')}"}
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, headers=admin, timeout=60) as http:
            r = await http.post("/api/slides", json={"id": SLIDE, "width": WIDTH, "height": HEIGHT, "mpp": 0.25})
            r.raise_for_status()
        alice, bob = Good("alice", proc.ws_url), Good("bob", proc.ws_url)
        await alice.start()
        await bob.start()
        start = time.monotonic()
        # The hostile connections run in a process of their own, so that their work does not
        # delay the good clients' event loop (which would inflate the relay figures).
        hostile = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "hostile", "--url", proc.ws_url, "--frames", str(args.frames),
            "--hostile", str(args.hostile), "--max-seconds", str(args.max_seconds), "--seed", str(args.seed),
            "--deep", str(args.deep),
            stdout=asyncio.subprocess.PIPE,
        )
        rng = random.Random(args.seed)
        writers_stop = asyncio.Event()

        async def write_while_fuzzing(good: Good) -> None:
            while not writers_stop.is_set():
                await good.write(time.monotonic() + 1, args.write_interval, rng)

        writing = [asyncio.create_task(write_while_fuzzing(g)) for g in (alice, bob)]
        out, _ = await hostile.communicate()
        stats = orjson.loads(out)
        fuzz_seconds = time.monotonic() - start
        writers_stop.set()
        await asyncio.gather(*writing)
        # Settle: every good annotation reaches the other client and gets its status.
        settle_deadline = time.monotonic() + 30
        while time.monotonic() < settle_deadline:
            done = (all(k in bob.seen for k in alice.written) and all(k in alice.seen for k in bob.written)
                    and alice.statused() == len(alice.written) and bob.statused() == len(bob.written))
            if done:
                break
            await asyncio.sleep(0.1)
        latencies = relay_latencies(alice, bob) + relay_latencies(bob, alice)
        written = len(alice.written) + len(bob.written)
        received = {k for k in alice.written if k in bob.seen} | {k for k in bob.written if k in alice.seen}
        alive = proc.proc is not None and proc.proc.poll() is None and proc._answers()
        rss_after = rss_mib(proc.proc.pid) if alive else math.nan
        await alice.client.close()
        await bob.client.close()

        # kill -9, restart on the same data, and look for everything the good clients received.
        proc.kill9()
        proc.start()
        async with httpx.AsyncClient(base_url=proc.base_url, headers=admin, timeout=60) as http:
            r = await http.get(f"/api/slides/{SLIDE}/annotations?include_invalid=1")  # loads and indexes the room
            r.raise_for_status()
        check = YClient(f"{proc.ws_url}/ws/slides/{SLIDE}?token={token('checker')}")
        await check.connect()
        present = {k for k in received if k in check.annotations}
        await check.close()
        rss_reloaded = rss_mib(proc.proc.pid)  # type: ignore[union-attr]
        return {
            **stats,
            "fuzz_seconds": round(fuzz_seconds, 1),
            "server_alive": alive,
            "rss_mib_after_fuzz": rss_after,
            "rss_mib_fresh_process_same_data": rss_reloaded,
            "good_annotations_written": written,
            "good_relay_ms": {"p50": round(quantile(latencies, 50) * 1e3, 1),
                              "p99": round(quantile(latencies, 99) * 1e3, 1),
                              "max": round(max(latencies, default=math.nan) * 1e3, 1), "n": len(latencies)},
            "good_received_by_other": len(received),
            "status_fraction": round((alice.statused() + bob.statused()) / max(written, 1), 4),
            "received_present_after_kill9_restart": f"{len(present)}/{len(received)}",
            "server_log": str(proc.log_path),
        }
    finally:
        proc.stop()


async def import_stall(args: argparse.Namespace) -> dict[str, Any]:
    """Loop stall during one large import, seen from a probe on another connection."""
    sys.path.insert(0, str(BENCH))
    from import_bench import collection

    body = orjson.dumps(collection(args.features, args.vertices, args.seed))
    proc = ServerProcess(Path(tempfile.mkdtemp(prefix="collab-import-")) / "data").start()
    admin = {"Authorization": f"Bearer {token('admin', 'admin')}"}
    try:
        async with httpx.AsyncClient(base_url=proc.base_url, headers=admin, timeout=600) as http:
            r = await http.post("/api/slides", json={"id": SLIDE, "width": WIDTH, "height": HEIGHT, "mpp": 0.25})
            r.raise_for_status()
            probes: list[tuple[float, float]] = []  # (when, how long GET /healthz took)
            stop = asyncio.Event()

            async def probe() -> None:
                async with httpx.AsyncClient(base_url=proc.base_url, timeout=600) as p:
                    while not stop.is_set():
                        t = time.perf_counter()
                        await p.get("/healthz")
                        probes.append((t, time.perf_counter() - t))
                        await asyncio.sleep(0.02)

            task = asyncio.create_task(probe())
            await asyncio.sleep(1)
            t0 = time.perf_counter()
            r = await http.post(f"/api/slides/{SLIDE}/annotations", content=body)
            answered = time.perf_counter() - t0
            await asyncio.sleep(2)
            stop.set()
            await task
        during = [d for t, d in probes if t >= t0 - 0.1]
        worst = sorted(((d, t - t0) for t, d in probes), reverse=True)[:5]
        return {
            "body_mb": round(len(body) / 1e6, 1), "features": args.features, "vertices": args.vertices,
            "status": r.status_code, "answer_s": round(answered, 2),
            "probe_worst_ms_at_s": [(round(d * 1e3), round(at, 1)) for d, at in worst],
            "probe_p50_ms": round(statistics.median(during) * 1e3, 1),
            "server_rss_mib": rss_mib(proc.proc.pid),  # type: ignore[union-attr]
        }
    finally:
        proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="fuzz", choices=["fuzz", "import-stall", "hostile"])
    parser.add_argument("--url", help="(hostile: the server's ws:// base URL)")
    parser.add_argument("--frames", type=int, default=100_000, help="hostile frames to send in all")
    parser.add_argument("--hostile", type=int, default=6, help="hostile connections at a time")
    parser.add_argument("--max-seconds", type=float, default=240, help="stop the fuzz after this long regardless")
    parser.add_argument("--write-interval", type=float, default=0.1, help="seconds between a good client's writes")
    parser.add_argument("--features", type=int, default=7577)
    parser.add_argument("--vertices", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--deep", type=int, default=0,
                        help="first send one update holding a value nested this deep (100000 kills pycrdt 0.14)")
    args = parser.parse_args()
    run = {"fuzz": fuzz, "import-stall": import_stall, "hostile": hostile_run}[args.mode]
    print(orjson.dumps(asyncio.run(run(args)), option=orjson.OPT_INDENT_2).decode(), flush=True)


if __name__ == "__main__":
    main()
