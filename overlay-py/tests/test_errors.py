"""Every exception class, each provoked by a real failure, and its place in the hierarchy."""

from __future__ import annotations

import builtins
import errno
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import overlay
from servers import free_port

CLASSES = {
    overlay.NotFoundError: LookupError,
    overlay.AlreadyExistsError: None,
    overlay.ConflictError: None,
    overlay.InvalidArgumentError: ValueError,
    overlay.UnavailableError: ConnectionError,
    overlay.TimeoutError: builtins.TimeoutError,
    overlay.PermissionDeniedError: PermissionError,
    overlay.KernelError: OSError,
    overlay.UnsupportedError: None,
    overlay.InternalError: None,
}


@pytest.mark.parametrize("cls", list(CLASSES), ids=lambda c: c.__name__)
def test_hierarchy(cls: type) -> None:
    assert issubclass(cls, overlay.OverlayError)
    assert issubclass(cls, Exception)
    builtin = CLASSES[cls]
    if builtin is not None:
        assert issubclass(cls, builtin)
    assert cls.__module__ == "overlay"
    assert cls.__doc__


def check(err: overlay.OverlayError, kind: str) -> None:
    """The parts of the Rust error are attributes, and the message carries them all."""
    assert err.kind == kind
    assert err.op and err.op in str(err)
    assert err.context and err.context in str(err)
    assert err.hint and str(err).endswith(f"({err.hint})")


def test_not_found(tmp_path: Path) -> None:
    with pytest.raises(overlay.NotFoundError) as info:
        overlay.Store(f"file://{tmp_path}/missing-dir/store.db")
    check(info.value, "not found")
    assert "missing-dir" in str(info.value)
    assert isinstance(info.value, LookupError)


def test_already_exists(embedded_url: str) -> None:
    with overlay.Store(embedded_url) as store:
        store.create("k", b"1")
        with pytest.raises(overlay.AlreadyExistsError) as info:
            store.create("k", b"2")
    check(info.value, "already exists")
    assert "k" in info.value.context


def test_conflict(embedded_url: str) -> None:
    with overlay.Store(embedded_url) as store:
        version = store.put("k", b"1")
        with pytest.raises(overlay.ConflictError) as info:
            store.cas("k", b"2", version + 1000)
        check(info.value, "conflict")
        with pytest.raises(overlay.ConflictError):
            store.cas_delete("absent", 1)


@pytest.mark.parametrize("key", ["", "a//b", "../escape", "bad\nkey", "/abs"])
def test_invalid_key(embedded_url: str, key: str) -> None:
    with overlay.Store(embedded_url) as store:
        with pytest.raises(overlay.InvalidArgumentError) as info:
            store.put(key, b"v")
        check(info.value, "invalid argument")
        assert isinstance(info.value, ValueError)
        assert store.list() == [], "a refused write changed the store"


def test_invalid_url() -> None:
    with pytest.raises(overlay.InvalidArgumentError) as info:
        overlay.Store("bogus://somewhere")
    check(info.value, "invalid argument")
    with pytest.raises(ValueError):
        overlay.Store("etcd://h?timeout=soon")


def test_invalid_watch_timeout(embedded_url: str) -> None:
    with overlay.Store(embedded_url) as store, store.watch("x") as watch:
        with pytest.raises(overlay.InvalidArgumentError):
            watch.next(timeout=-1)
        with pytest.raises(overlay.InvalidArgumentError):
            watch.next(timeout=float("nan"))


def test_unavailable_after_close(embedded_url: str) -> None:
    store = overlay.Store(embedded_url)
    store.close()
    with pytest.raises(overlay.UnavailableError) as info:
        store.get("k")
    check(info.value, "unavailable")
    assert isinstance(info.value, ConnectionError)


def test_unavailable_server_down() -> None:
    # Nothing listens on this port: the etcd backend reports the store unreachable within
    # the URL's timeout instead of hanging.
    port = free_port()
    with pytest.raises((overlay.UnavailableError, overlay.TimeoutError)) as info:
        with overlay.Store(f"etcd://127.0.0.1:{port}/t?timeout=1s") as store:
            store.get("k")
    assert str(port) in str(info.value) or "127.0.0.1" in str(info.value)


def test_timeout_while_another_process_holds_the_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    overlay.Store(f"file://{path}").close()
    # Another process: SQLite's POSIX locks do not separate two SQLite libraries (Python's and
    # the module's) inside one process.
    holder = subprocess.Popen(
        [sys.executable, "-c", LOCK_HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with overlay.Store(f"file://{path}?timeout=300ms") as store:
            with pytest.raises(overlay.TimeoutError) as info:
                store.put("k", b"v")
            check(info.value, "timeout")
            assert isinstance(info.value, builtins.TimeoutError)
            holder.communicate("release\n", timeout=30)
            store.put("k", b"v")  # the lock is gone: the same call succeeds
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


LOCK_HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
db.execute("ROLLBACK")
"""

SCHEMA_BUMP = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA user_version = 999")
db.close()
"""


def test_permission_denied(tmp_path: Path) -> None:
    # A directory only root may enter, opened by a process that gave up root (root itself
    # ignores file permissions, so the check needs an unprivileged process).
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o700)
    script = textwrap.dedent(
        f"""
        import os, overlay
        if os.geteuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        try:
            overlay.Store("file://{locked}/store.db")
        except overlay.PermissionDeniedError as e:
            assert isinstance(e, PermissionError)
            assert e.kind == "permission denied" and e.hint, e
            print("raised", e)
        """
    )
    if os.geteuid() != 0:
        locked.chmod(0)
    try:
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    finally:
        locked.chmod(0o700)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("raised "), out.stdout + out.stderr


def test_kernel_error_carries_errno(tmp_path: Path) -> None:
    # A path through a regular file: the kernel answers ENOTDIR, which has no kind of its own.
    (tmp_path / "plain-file").write_text("not a directory")
    with pytest.raises(overlay.KernelError) as info:
        overlay.Store(f"file://{tmp_path}/plain-file/sub/store.db")
    check(info.value, "kernel error")
    assert info.value.errno == errno.ENOTDIR
    assert isinstance(info.value, OSError)
    assert f"errno {errno.ENOTDIR}" in str(info.value)


def test_unsupported_newer_store_file(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    overlay.Store(f"file://{path}").close()
    # What a future release would leave behind: a schema version this build does not know.
    subprocess.run([sys.executable, "-c", SCHEMA_BUMP, str(path)], check=True, timeout=60)
    with pytest.raises(overlay.UnsupportedError) as info:
        overlay.Store(f"file://{path}")
    check(info.value, "unsupported")
    assert "999" in str(info.value)


def test_errno_is_none_without_a_kernel_error(embedded_url: str) -> None:
    with overlay.Store(embedded_url) as store:
        store.create("k", b"1")
        with pytest.raises(overlay.OverlayError) as info:
            store.create("k", b"1")
    assert info.value.errno is None


def test_silent_server_times_out() -> None:
    # A server that accepts connections and never answers: the call gives up within the URL's
    # timeout rather than hanging.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        with pytest.raises((overlay.TimeoutError, overlay.UnavailableError)):
            with overlay.Store(f"zk://127.0.0.1:{port}/t?timeout=1s") as store:
                store.get("k")
