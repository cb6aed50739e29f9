"""The .pyi stubs match the built module (mypy's stubtest) and type-check a typical use."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def have_mypy() -> bool:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if IN_CI:
            pytest.fail("mypy is not installed; CI=true requires it (pip install mypy)", pytrace=False)
        pytest.skip("mypy is not installed")
    return True


def mypy_strict(code: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict's verdict on `code`, checked against the installed module's stubs
    (from outside the source tree, so that only the installed package is seen)."""
    have_mypy()
    with tempfile.TemporaryDirectory() as cwd:
        path = os.path.join(cwd, "checked.py")
        with open(path, "w") as f:
            f.write(code)
        return subprocess.run(
            [sys.executable, "-m", "mypy", "--strict", "--python-version", "3.11", path],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )


def test_stubtest() -> None:
    have_mypy()
    # Run outside the source tree so that only the installed package is seen.
    with tempfile.TemporaryDirectory() as cwd:
        out = subprocess.run(
            [sys.executable, "-m", "mypy.stubtest", "overlay"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert out.returncode == 0, out.stdout + out.stderr


USE = """
import overlay

def latest(store: overlay.Store, key: str) -> bytes:
    got = store.get(key)
    if got is None:
        raise KeyError(key)
    value, version = got
    store.cas(key, value + b"!", version)
    for event in store.watch(key):
        if event.kind == "put" and event.value is not None:
            return event.value
    return value

try:
    overlay.Store("file:///tmp/x.db")
except overlay.KernelError as e:
    errno: int | None = e.errno

def walk(url: str) -> list[str]:
    with overlay.Controller(store=url, advertise="192.0.2.1", host_ttl=2.0,
                            default_pools=[("10.0.0.0/8", 24)]) as c:
        net = c.create_network("my-net", subnet="10.0.9.0/24", labels={"a": "b"})
        entry = c.connect(str(net["Id"]), netns="/run/netns/zk1", container_id="1", name="zk1",
                          aliases=["zk"], hosts_file="/tmp/zk1.hosts")
        for event in c.events():
            print(event["type"], entry["IPv4Address"])
            break
        names = [str(n["Name"]) for n in c.networks()]
        return names + c.resolve("zk1")
"""


def test_typical_use_type_checks() -> None:
    out = mypy_strict(USE)
    assert out.returncode == 0, out.stdout + out.stderr
