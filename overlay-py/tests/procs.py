"""Processes and threads the tests start, and how they wait for them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, List, Tuple
from contextlib import contextmanager

# futex(2), the system call a thread waiting inside the module's native code sleeps in.
FUTEX = {"x86_64": 202, "aarch64": 98}

LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""


@contextmanager
def write_lock_held(path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holds the write lock of the store file at `path` until the block ends
    (or `.communicate("release\\n")` on the process it yields). A process of its own: SQLite's
    POSIX locks do not separate two SQLite libraries (Python's and the module's) in one
    process."""
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked", "the lock holder did not start"
        yield holder
    finally:
        if holder.poll() is None:
            holder.communicate("release\n", timeout=30)


def wait_inside_native_call(pid: int, limit: float = 30.0) -> None:
    """Waits until the main thread of `pid` sleeps in futex(2): inside the blocking call of the
    module (its Python code has no other wait), not still on the way to it."""
    futex = FUTEX.get(os.uname().machine)
    assert futex is not None, f"no futex number known for {os.uname().machine}"
    deadline = time.monotonic() + limit
    last = ""
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/syscall") as f:
            last = f.read().strip()
        if last.split()[0] == str(futex):
            return
        time.sleep(0.005)
    raise AssertionError(f"process {pid} never blocked in the native call (last: {last})")


def interrupt_when_blocked(proc: subprocess.Popen[str]) -> Tuple[str, float]:
    """Once `proc` has printed "ready" and blocks inside the module, sends it SIGINT (Ctrl-C):
    its stderr, and the seconds from the signal to its exit. Kills it if it does not exit."""
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", "the child did not start"
        wait_inside_native_call(proc.pid)
        sent = time.monotonic()
        os.kill(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        return err, time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def run_all(threads: List[threading.Thread]) -> None:
    """Starts `threads` and joins them; fails if any is still running after two minutes."""
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "threads still running: deadlock or hang"
