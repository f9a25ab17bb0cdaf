"""Hostile and heavy input (issue 11): deep nesting, huge and slow bodies, slide paths outside
the slide directories, tokens with string dates, and what a dying server leaves in its log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest

from tests.conftest import SECRET, LiveServer, ServerProcess

# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_date_claims_must_be_numbers(live: LiveServer, claim: str) -> None:
    now = int(time.time())
    claims = {"sub": "x", "role": "admin", "slides": "*", "exp": now + 600, "iat": now, "nbf": now - 5}
    good = jwt.encode(claims, SECRET, algorithm="HS256")
    claims[claim] = str(claims[claim])  # PyJWT alone accepts a numeric string
    bad = jwt.encode(claims, SECRET, algorithm="HS256")
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        ok = await http.get("/api/slides", headers={"Authorization": f"Bearer {good}"})
        refused = await http.get("/api/slides", headers={"Authorization": f"Bearer {bad}"})
    assert ok.status_code == 200
    assert refused.status_code == 401
    assert claim in refused.json()["error"]


# --- crashes leave a trace ----------------------------------------------------------------------

# `collab serve` as the command line runs it; once serving, the child provokes an uncaught
# exception in a thread, in an event-loop callback and in a task nobody awaits (no route of the
# app is involved), then prints which hooks are in place.
_PROVOKE = r"""
import asyncio, faulthandler, sys, threading
import collab.server
from collab.__main__ import main

startup = collab.server.CollabServer.startup

async def provoking_startup(self, *args, **kwargs):
    await startup(self, *args, **kwargs)
    loop = asyncio.get_running_loop()
    threading.Thread(target=lambda: 1 / 0, name="provoked-thread").start()
    loop.call_soon(lambda: {}["provoked-callback"])
    async def failing():
        raise LookupError("provoked-task")
    task = loop.create_task(failing())
    await asyncio.sleep(0.05)
    del task  # never awaited: the loop reports it when it is collected
    import gc; gc.collect()
    print("HOOKS", faulthandler.is_enabled(), sys.excepthook.__module__,
          threading.excepthook.__module__, loop.get_exception_handler().__module__, flush=True)

collab.server.CollabServer.startup = provoking_startup
sys.exit(main(sys.argv[1:]))
"""


def _wait_for_output(path: Any, needles: list[str], timeout: float = 30) -> str:
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace")
        if all(n in text for n in needles):
            return text
        time.sleep(0.05)
    raise AssertionError(f"missing {needles} in server output:\n{text[-3000:]}")


def test_serve_logs_uncaught_exceptions_of_threads_callbacks_and_tasks(tmp_path: Path) -> None:
    log_path = tmp_path / "serve.log"
    env = {**os.environ, "COLLAB_SECRET": SECRET}
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", _PROVOKE, "serve", "--port", "0", "--data", str(tmp_path / "data")],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )
    try:
        text = _wait_for_output(log_path, ["HOOKS", "provoked-thread", "provoked-callback", "provoked-task"])
        assert "HOOKS True collab.log collab.log collab.log" in text
        lines = [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]
        crashes = [e for e in lines if e.get("logger") == "collab.crash"]
        assert any("ZeroDivisionError" in e.get("exc", "") and e.get("thread_name") == "provoked-thread"
                   for e in crashes)
        assert any("provoked-callback" in e.get("exc", "") for e in crashes)
        assert any("provoked-task" in e.get("exc", "") for e in crashes)
        assert proc.poll() is None  # a failing callback or thread does not end the server
    finally:
        proc.terminate()
        proc.wait(30)


def test_fatal_signal_prints_a_traceback(server_process: ServerProcess) -> None:
    server_process.start()
    assert server_process.proc is not None
    os.kill(server_process.proc.pid, signal.SIGSEGV)
    assert server_process.proc.wait(30) == -signal.SIGSEGV
    text = _wait_for_output(server_process.log_path, ["Fatal Python error: Segmentation fault"])
    assert "Current thread" in text or "Thread 0x" in text
