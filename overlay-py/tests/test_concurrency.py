"""Threads, the GIL, the shared runtime and Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import List

import overlay
from procs import interrupt_when_blocked, run_all, write_lock_held

THREADS = 8
INCREMENTS = 20


def increment(store: overlay.Store, key: str, errors: List[BaseException]) -> None:
    try:
        for _ in range(INCREMENTS):
            while True:
                got = store.get(key)
                assert got is not None
                try:
                    store.cas(key, str(int(got[0]) + 1).encode(), got[1])
                    break
                except overlay.ConflictError:
                    continue
    except BaseException as e:  # reported by the main thread
        errors.append(e)


def test_eight_threads_race_cas_increments_without_deadlock(store_url: str) -> None:
    with overlay.Store(store_url) as store:
        store.put("counter", b"0")
        watch = store.watch("counter")
        errors: List[BaseException] = []
        threads = [threading.Thread(target=increment, args=(store, "counter", errors)) for _ in range(THREADS)]
        run_all(threads)
        assert errors == []
        got = store.get("counter")
        assert got is not None and int(got[0]) == THREADS * INCREMENTS
        # Every successful CAS is one put event, in version order.
        values = []
        while len(values) < THREADS * INCREMENTS:
            event = watch.next(timeout=10)
            assert event is not None, f"watch stalled after {len(values)} events"
            if event.kind == "put":
                assert event.value is not None
                values.append(int(event.value))
        assert values == sorted(values) and values[-1] == THREADS * INCREMENTS
        watch.close()


def test_gil_is_released_while_waiting(embedded_url: str) -> None:
    with overlay.Store(embedded_url) as store, store.watch("quiet") as watch:
        result: List[object] = []
        waiter = threading.Thread(target=lambda: result.append(watch.next(timeout=1.0)))
        spins = 0
        start = time.monotonic()
        waiter.start()
        while waiter.is_alive():
            spins += 1
        waiter.join()
        elapsed = time.monotonic() - start
        assert result == [None]
        assert elapsed >= 0.9, "next(timeout=1.0) returned early"
        # Holding the GIL for the whole second would leave this thread a handful of switches.
        assert spins > 10_000, f"main thread ran only {spins} iterations in {elapsed:.2f}s"


def runtime_threads() -> int:
    count = 0
    for task in Path("/proc/self/task").iterdir():
        try:
            if (task / "comm").read_text().startswith("overlay-runtim"):
                count += 1
        except OSError:
            pass
    return count


def test_one_runtime_per_process(tmp_path: Path) -> None:
    first = overlay.Store(f"file://{tmp_path}/a.db")
    baseline = runtime_threads()
    assert baseline > 0, "the runtime's worker threads are not named overlay-runtime"
    stores = [overlay.Store(f"file://{tmp_path}/s{i}.db") for i in range(6)]
    for s in stores:
        s.put("k", b"v")
    # The count moves a little as the runtime's blocking pool grows and shrinks; a runtime per
    # store would add at least one worker thread for each of the six.
    assert runtime_threads() < baseline + len(stores), "a store started its own runtime"
    for s in [first, *stores]:
        s.close()


# Each child installs Python's own Ctrl-C handler: a process started in the background by a
# shell (as CI may start the suite) inherits SIGINT ignored, and Python then installs none.
WATCHER = textwrap.dedent(
    """
    import signal, sys, overlay
    signal.signal(signal.SIGINT, signal.default_int_handler)
    store = overlay.Store(sys.argv[1])
    watch = store.watch("never")
    print("ready", flush=True)
    for event in watch:
        print("event", event, flush=True)
    """
)


def test_ctrl_c_interrupts_a_blocked_watch(embedded_url: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCHER, embedded_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    err, took = interrupt_when_blocked(proc)
    assert "KeyboardInterrupt" in err, err
    assert proc.returncode != 0
    # Far below the endless wait it interrupted; generous for a loaded machine.
    assert took < 15.0, f"KeyboardInterrupt took {took:.2f}s"


def test_ctrl_c_interrupts_next_with_a_long_timeout(embedded_url: str) -> None:
    script = WATCHER.replace("for event in watch:", "while watch.next(timeout=3600) is None:")
    proc = subprocess.Popen([sys.executable, "-c", script, embedded_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    err, _ = interrupt_when_blocked(proc)
    assert "KeyboardInterrupt" in err, err


# Forks of the fork test below: at the old rate of 16 hangs in 300, 50 forks catch a
# regression in 19 runs of 20, in about two seconds.
FORKS = 50


def wait_child(pid: int, limit: float) -> int:
    """The exit code of forked child `pid`; fails (killing it) if it runs longer than `limit` s."""
    deadline = time.monotonic() + limit
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child {pid} hung for {limit} s")
        time.sleep(0.01)


def test_fork_child_gets_its_own_runtime_and_refuses_inherited_objects(embedded_url: str) -> None:
    store = overlay.Store(embedded_url)
    store.put("k", b"parent")
    watch = store.watch("k")
    pid = os.fork()
    if pid == 0:  # the child: report through the exit code, never return into pytest
        code = 10
        try:
            try:
                store.get("k")
                code = 11
            except overlay.UnsupportedError as e:
                assert "fork" in str(e)
                code = 12
                try:
                    watch.next(timeout=0)
                except overlay.UnsupportedError:
                    code = 13
                    with overlay.Store(embedded_url) as fresh:
                        got = fresh.get("k")
                        code = 0 if got is not None and got[0] == b"parent" else 14
        finally:
            os._exit(code)
    assert wait_child(pid, 60) == 0
    # The parent's objects are untouched by the child.
    got = store.get("k")
    assert got is not None and got[0] == b"parent"
    store.put("k/1", b"after fork")
    event = watch.next(timeout=10)
    assert event is not None and event.key == "k/1"
    watch.close()
    store.close()


def test_forks_while_another_thread_writes_never_hang(embedded_url: str) -> None:
    # A fork copies the state of every thread: a parent thread caught inside SQLite (a write
    # transaction, its allocator) left a mutex held for ever in the child, whose own store then
    # hung opening the same file (16 of 300 forks before the fix). Forks now wait for the store
    # threads' SQLite work under way. A writer thread keeps that work going throughout.
    store = overlay.Store(embedded_url)
    stop = threading.Event()
    errors: List[BaseException] = []

    def write() -> None:
        try:
            i = 0
            while not stop.is_set():
                store.put("busy", str(i).encode())
                i += 1
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for i in range(FORKS):
            pid = os.fork()
            if pid == 0:  # the child: report through the exit code, never return into pytest
                code = 1
                try:
                    with overlay.Store(embedded_url) as fresh:
                        code = 0 if fresh.get("busy") is not None else 2
                finally:
                    os._exit(code)
            assert wait_child(pid, 60) == 0, f"fork {i}: the child's store failed"
    finally:
        stop.set()
        writer.join(timeout=60)
        store.close()
    assert errors == []


def test_ctrl_c_interrupts_a_blocked_store_call(tmp_path: Path) -> None:
    # A write waits for the store file's lock, held by another process, for up to the URL's
    # 60 s timeout: only Ctrl-C ends the call early, and it must do so long before that. (The
    # lock holds however slow the machine is, unlike a server that merely does not answer yet.)
    # The holder is a process of its own: SQLite's POSIX locks do not separate two SQLite
    # libraries (Python's and the module's) inside one process.
    path = tmp_path / "locked.db"
    overlay.Store(f"file://{path}").close()
    with write_lock_held(path):
        script = textwrap.dedent(
            f"""
            import signal, overlay
            signal.signal(signal.SIGINT, signal.default_int_handler)
            print("ready", flush=True)
            overlay.Store("file://{path}?timeout=60s").put("k", b"blocked")
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        err, took = interrupt_when_blocked(proc)
    assert "KeyboardInterrupt" in err, err
    assert took < 15.0, f"KeyboardInterrupt took {took:.2f}s, far from the 60 s the call would wait"
