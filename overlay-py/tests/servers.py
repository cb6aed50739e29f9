"""Real etcd and ZooKeeper servers for the tests, on free loopback ports in temporary dirs.

Each server runs in its own process group and is killed (and its directory removed) by
``Server.stop``, which the fixtures call even when a test fails. A server that is not installed
gives ``ServerMissing``: the fixtures skip with its reason, or fail under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pytest

ZK_JAR = "/usr/share/java/zookeeper.jar"
ZK_CLASSPATH = "/etc/zookeeper/conf:" + ZK_JAR
START_TIMEOUT = 60.0
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


class ServerMissing(Exception):
    """The server's program is not installed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(port: int, request: bytes) -> bytes:
    """Sends `request` to 127.0.0.1:port and returns everything the server answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(request)
        chunks = []
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


class Server:
    """A server process with its data dir; `url()` names it as a store URL."""

    def __init__(self, name: str, argv: List[str], workdir: Path, port: int, scheme: str) -> None:
        self.name = name
        self.address = f"127.0.0.1:{port}"
        self.scheme = scheme
        self.workdir = workdir
        self.log = open(workdir / "server.log", "wb")
        self.proc: Optional[subprocess.Popen[bytes]] = subprocess.Popen(
            argv,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def url(self, prefix: Optional[str] = None) -> str:
        """A store URL with a fresh prefix, so tests sharing the server never see each other."""
        prefix = prefix or "t" + uuid.uuid4().hex[:12]
        return f"{self.scheme}://{self.address}/{prefix}?timeout=5s"

    def wait_ready(self, healthy: Callable[[], bool]) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                break
            try:
                if healthy():
                    return
            except OSError:
                pass
            time.sleep(0.1)
        log = (self.workdir / "server.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not become ready within {START_TIMEOUT}s:\n{log}")

    def stop(self) -> None:
        """Kills the server's process group and removes its directory; safe to call twice."""
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
        self.log.close()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start_etcd() -> Server:
    """A one-member etcd cluster on loopback."""
    program = shutil.which("etcd") or "/usr/bin/etcd"
    if not os.access(program, os.X_OK):
        raise ServerMissing("etcd is not installed (Debian package etcd-server)")
    workdir = Path(tempfile.mkdtemp(prefix="overlay-py-etcd-"))
    client, peer = free_port(), free_port()
    client_url, peer_url = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    argv = [
        program,
        "--name=test",
        f"--data-dir={workdir / 'data'}",
        f"--listen-client-urls={client_url}",
        f"--advertise-client-urls={client_url}",
        f"--listen-peer-urls={peer_url}",
        f"--initial-advertise-peer-urls={peer_url}",
        f"--initial-cluster=test={peer_url}",
        "--log-level=warn",
        "--logger=zap",
    ]
    server = Server("etcd", argv, workdir, client, "etcd")
    request = b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n"
    server.wait_ready(lambda: b'"health":"true"' in ask(client, request))
    return server


def start_zookeeper() -> Server:
    """A standalone ZooKeeper on loopback, admin server off."""
    java = shutil.which("java")
    if java is None or not os.path.exists(ZK_JAR):
        raise ServerMissing("ZooKeeper is not installed (Debian packages zookeeper, default-jre-headless)")
    workdir = Path(tempfile.mkdtemp(prefix="overlay-py-zk-"))
    port = free_port()
    cfg = workdir / "zoo.cfg"
    cfg.write_text(
        f"tickTime=500\ndataDir={workdir / 'data'}\nclientPort={port}\n"
        "clientPortAddress=127.0.0.1\nadmin.enableServer=false\n"
        "4lw.commands.whitelist=ruok,srvr\nmaxClientCnxns=0\n"
    )
    argv = [
        java,
        "-Xmx256m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        "-Dzookeeper.admin.enableServer=false",
        "-Dzookeeper.forceSync=no",
        "-cp",
        ZK_CLASSPATH,
        "org.apache.zookeeper.server.ZooKeeperServerMain",
        str(cfg),
    ]
    server = Server("zookeeper", argv, workdir, port, "zk")
    server.wait_ready(lambda: ask(port, b"ruok") == b"imok")
    return server


_started: Dict[str, Server] = {}
_missing: Dict[str, str] = {}


class External:
    """A server someone else runs, named by OVERLAY_TEST_ETCD / OVERLAY_TEST_ZK (host:port)."""

    def __init__(self, scheme: str, address: str) -> None:
        self.scheme = scheme
        self.address = address

    def url(self, prefix: Optional[str] = None) -> str:
        prefix = prefix or "t" + uuid.uuid4().hex[:12]
        return f"{self.scheme}://{self.address}/{prefix}?timeout=5s"


EXTERNAL = {"etcd": ("etcd", "OVERLAY_TEST_ETCD"), "zookeeper": ("zk", "OVERLAY_TEST_ZK")}


def server(name: str, start: Callable[[], Server]) -> "Server | External":
    """Starts `name` once per test session, or names the one OVERLAY_TEST_ETCD / OVERLAY_TEST_ZK
    gives; skips (fails under CI=true) when it is not installed."""
    scheme, variable = EXTERNAL[name]
    if os.environ.get(variable):
        return External(scheme, os.environ[variable])
    if name not in _started and name not in _missing:
        try:
            _started[name] = start()
        except ServerMissing as e:
            _missing[name] = str(e)
    if name in _missing:
        if IN_CI:
            pytest.fail(f"{_missing[name]}; CI=true requires it", pytrace=False)
        pytest.skip(_missing[name])
    return _started[name]


def stop_all() -> None:
    """Stops every server `server` started."""
    for started in _started.values():
        started.stop()
    _started.clear()
