"""Every exception class, each provoked by a real failure, and its place in the hierarchy; and
the one rule for bad arguments: the wrong type or shape is a TypeError, the right type with a
bad value an InvalidArgumentError naming the parameter and the value."""

from __future__ import annotations

import builtins
import errno
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Dict, Iterator

import pytest

import overlay
from netns import Lab, require_namespaces
from procs import write_lock_held
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


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[overlay.Controller]:
    """A controller on a fresh embedded store, its host a namespace of its own."""
    require_namespaces()
    lab = Lab()
    try:
        host = lab.namespace("h1")
        url = f"file://{tmp_path / 'cluster.db'}"
        with overlay.Controller(
            store=url, advertise="127.0.0.1", host_id=f"args-{lab.tag}", host_netns=lab.path(host),
            state_dir=tmp_path / "state",
        ) as c:
            yield c
    finally:
        lab.cleanup()


def test_not_found(controller: overlay.Controller) -> None:
    with pytest.raises(overlay.NotFoundError) as info:
        controller.inspect("no-such-net")
    check(info.value, "not found")
    assert "no-such-net" in str(info.value)
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
    with write_lock_held(path) as holder:
        with overlay.Store(f"file://{path}?timeout=300ms") as store:
            with pytest.raises(overlay.TimeoutError) as info:
                store.put("k", b"v")
            check(info.value, "timeout")
            assert isinstance(info.value, builtins.TimeoutError)
            holder.communicate("release\n", timeout=30)
            store.put("k", b"v")  # the lock is gone: the same call succeeds


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
    # A directory name longer than any file system allows: the kernel answers ENAMETOOLONG,
    # which has no kind of its own.
    with pytest.raises(overlay.KernelError) as info:
        overlay.Store(f"file://{tmp_path}/{'d' * 300}/store.db")
    check(info.value, "kernel error")
    assert info.value.errno == errno.ENAMETOOLONG
    assert isinstance(info.value, OSError)
    assert f"errno {errno.ENAMETOOLONG}" in str(info.value)


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


# Bad arguments. The C face takes JSON documents and tells a document of the wrong shape
# (OVL_ERR_JSON) from one with a bad value (OVL_ERR_INVALID_ARGUMENT). This face takes keyword
# arguments, so the same line runs between TypeError (a wrong type, as for any Python call)
# and InvalidArgumentError (the right type, a bad value), with the core's wording of the value.


BAD_NETWORK_VALUES = {
    "subnet": ({"subnet": "10.999.0.0/24"}, 'subnet "10.999.0.0/24" is not a valid subnet'),
    "subnet6": ({"ipv6": True, "subnet6": "fd00::/129"}, 'subnet6 "fd00::/129" is not a valid subnet'),
    "gateway": (
        {"subnet": "10.0.9.0/24", "gateway": "10.0.9.256"},
        'gateway "10.0.9.256" is not a valid IP address',
    ),
    "ip_range": (
        {"subnet": "10.0.9.0/24", "ip_range": "10.0.9.128"},
        'ip_range "10.0.9.128" is not a valid subnet',
    ),
    "aux_address": (
        {"subnet": "10.0.9.0/24", "aux_addresses": {"router": "10.0.9"}},
        'aux_addresses["router"] "10.0.9" is not a valid IP address',
    ),
    "vni_zero": ({"vni": 0}, "vni 0 is out of range"),
    "vni_too_big": ({"vni": 2**24}, "vni 16777216 is out of range"),
    "vni_beyond_u64": ({"vni": 2**64}, f"vni {2**64} is out of range"),
    "vni_beyond_i128": ({"vni": -(2**200)}, f"vni {-(2**200)} is out of range"),
    "mtu": ({"mtu": -1}, "mtu -1 is out of range"),
}


@pytest.mark.parametrize("case", list(BAD_NETWORK_VALUES))
def test_bad_network_value_is_invalid_argument(controller: overlay.Controller, case: str) -> None:
    kwargs, context = BAD_NETWORK_VALUES[case]
    with pytest.raises(overlay.InvalidArgumentError) as info:
        controller.create_network("x-net", **kwargs)
    check(info.value, "invalid argument")
    assert info.value.op == "create network"
    assert context in info.value.context, info.value
    assert controller.networks() == [], "a refused create made a network"


def test_bad_values_say_what_to_write(controller: overlay.Controller) -> None:
    with pytest.raises(overlay.InvalidArgumentError) as info:
        controller.create_network("x-net", subnet="10.999.0.0/24")
    assert "ADDRESS/PREFIX" in info.value.hint
    with pytest.raises(overlay.InvalidArgumentError) as info:
        controller.create_network("x-net", vni=2**32)
    assert info.value.hint == "use a whole number from 1 to 16777215"


WRONG_NETWORK_TYPES: Dict[str, Dict[str, Any]] = {
    "subnet_int": {"subnet": 10},
    "vni_str": {"vni": "4097"},
    "vni_float": {"vni": 4097.0},
    "mtu_str": {"mtu": "big"},
    "labels_int_value": {"labels": {"team": 1}},
    "aux_list": {"subnet": "10.0.9.0/24", "aux_addresses": ["10.0.9.2"]},
}


@pytest.mark.parametrize("case", list(WRONG_NETWORK_TYPES))
def test_wrong_network_type_is_type_error(controller: overlay.Controller, case: str) -> None:
    with pytest.raises(TypeError) as info:
        controller.create_network("x-net", **WRONG_NETWORK_TYPES[case])
    assert not isinstance(info.value, overlay.OverlayError)
    assert controller.networks() == []


def test_bad_container_values_are_invalid_argument(controller: overlay.Controller) -> None:
    controller.create_network("my-net", subnet="10.0.9.0/24")
    for kwargs, context in [
        ({"netns": 1, "ip": "10.0.9.300"}, 'ip "10.0.9.300" is not a valid IPv4 address'),
        ({"netns": 1, "ip": "fd00::1"}, 'ip "fd00::1" is not a valid IPv4 address'),
        ({"netns": 1, "ip6": "10.0.9.3"}, 'ip6 "10.0.9.3" is not a valid IPv6 address'),
        ({"netns": 2**40}, f"netns {2**40} is out of range"),
        ({"netns": -1}, "netns -1 is out of range"),
    ]:
        with pytest.raises(overlay.InvalidArgumentError) as info:
            controller.connect("my-net", container_id="c1", name="c1", **kwargs)
        check(info.value, "invalid argument")
        assert context in info.value.context, info.value
    for kwargs in [{"netns": 1, "ip": 167772170}, {"netns": 1.5}, {"netns": 1, "aliases": [1]}]:
        with pytest.raises(TypeError):
            controller.connect("my-net", container_id="c1", name="c1", **kwargs)
    assert controller.inspect("my-net")["Containers"] == {}


# Controller options are checked before the store is opened, so these need no namespace.

BAD_CONTROLLER_VALUES = {
    "pool_base": ({"default_pools": [("10.999.0.0/8", 24)]}, 'default_pools[0].base "10.999.0.0/8"'),
    "pool_size": (
        {"default_pools": [("10.0.0.0/8", 24), {"base": "10.1.0.0/16", "size": 300}]},
        "default_pools[1].size 300 is out of range",
    ),
    "pool_size_huge": ({"default_pools": [("10.0.0.0/8", 2**70)]}, f"default_pools[0].size {2**70}"),
    "mtu": ({"mtu": 2**40}, f"mtu {2**40} is out of range"),
    "vxlan_port": ({"vxlan_port": 70000}, "vxlan_port 70000 is out of range"),
    "host_ttl": ({"host_ttl": -1.0}, "host_ttl"),
}


@pytest.mark.parametrize("case", list(BAD_CONTROLLER_VALUES))
def test_bad_controller_value_is_invalid_argument(tmp_path: Path, case: str) -> None:
    kwargs, context = BAD_CONTROLLER_VALUES[case]
    with pytest.raises(overlay.InvalidArgumentError) as info:
        overlay.Controller(store=f"file://{tmp_path}/c.db", advertise="127.0.0.1", **kwargs)
    assert info.value.op == "open controller"
    assert context in info.value.context, info.value
    assert not (tmp_path / "c.db").exists(), "a refused open touched the store"


WRONG_CONTROLLER_TYPES: Dict[str, Dict[str, Any]] = {
    "pool_missing_size": {"default_pools": [{"base": "10.0.0.0/8"}]},
    "pool_extra_key": {"default_pools": [{"base": "10.0.0.0/8", "size": 24, "colour": "red"}]},
    "pool_size_str": {"default_pools": [("10.0.0.0/8", "24")]},
    "pool_not_a_pair": {"default_pools": ["10.0.0.0/8"]},
    "vxlan_port_str": {"vxlan_port": "4789"},
    "mtu_float": {"mtu": 1400.0},
}


@pytest.mark.parametrize("case", list(WRONG_CONTROLLER_TYPES))
def test_wrong_controller_type_is_type_error(tmp_path: Path, case: str) -> None:
    with pytest.raises(TypeError) as info:
        overlay.Controller(
            store=f"file://{tmp_path}/c.db", advertise="127.0.0.1", **WRONG_CONTROLLER_TYPES[case]
        )
    assert not isinstance(info.value, overlay.OverlayError)
    assert not (tmp_path / "c.db").exists()


def test_bad_controller_store_url_is_invalid_argument() -> None:
    with pytest.raises(overlay.InvalidArgumentError) as info:
        overlay.Controller(store="nonsense", advertise="127.0.0.1")
    check(info.value, "invalid argument")
    assert "nonsense" in str(info.value)
