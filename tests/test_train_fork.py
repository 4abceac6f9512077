"""The served fit's fork (``shared.serving.train._ServedFit``) never happens while another thread holds
numba's compiler lock: a child forked then inherited the lock held by a thread it does not have, and its
first compile waited for ever (``make demo`` on a fresh clone, 2026-12-07)."""

from __future__ import annotations

import multiprocessing as mp
import threading
import time

import pytest

from shared.serving.train import _no_compile_in_progress

nb = pytest.importorskip("numba")


def _child(conn) -> None:
    @nb.njit
    def plus_one(x):
        return x + 1

    conn.send(int(plus_one(41)))


def test_a_fork_waits_for_a_compile_in_another_thread_and_the_child_can_compile():
    from numba.core.compiler_lock import global_compiler_lock

    held, release = threading.Event(), threading.Event()

    def compiling() -> None:  # another thread "compiling": holds the lock a while
        with global_compiler_lock:
            held.set()
            release.wait(5)

    t = threading.Thread(target=compiling)
    t.start()
    held.wait(5)
    threading.Timer(0.3, release.set).start()
    ctx = mp.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(send,), daemon=True)
    t0 = time.monotonic()
    with _no_compile_in_progress():  # waits for the other thread, then forks holding the lock itself
        p.start()
    assert time.monotonic() - t0 >= 0.25
    assert recv.poll(60), "the forked child could not compile"
    assert recv.recv() == 42
    p.join(10)
    t.join(5)
