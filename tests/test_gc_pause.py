"""paused_gc: the collector is off inside, back on after, and nested or concurrent pauses share it."""

from __future__ import annotations

import gc
import threading

import pytest

from collab.gc_pause import paused_gc


def test_pause_restores_the_collector_even_after_an_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), paused_gc():
        assert not gc.isenabled()
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_overlapping_pauses_from_threads_keep_it_off_until_the_last_ends() -> None:
    inside, release = threading.Event(), threading.Event()

    def worker() -> None:
        with paused_gc():
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    with paused_gc():
        pass
    assert not gc.isenabled()  # the worker still needs it off
    release.set()
    thread.join(5)
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled() -> None:
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
