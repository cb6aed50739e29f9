"""Fixtures: store URLs for the embedded store and for real etcd and ZooKeeper servers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Dict, Iterator

import pytest

from servers import Server, ServerMissing, start_etcd, start_zookeeper

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

_started: Dict[str, Server] = {}
_missing: Dict[str, str] = {}


def _server(name: str, start: Callable[[], Server]) -> Server:
    """Starts `name` once per session; skips (fails under CI=true) when it is not installed."""
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


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    for server in _started.values():
        server.stop()
    _started.clear()


@pytest.fixture
def etcd() -> Server:
    return _server("etcd", start_etcd)


@pytest.fixture
def zookeeper() -> Server:
    return _server("zookeeper", start_zookeeper)


@pytest.fixture
def embedded_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store.db'}"


@pytest.fixture(params=["embedded", "etcd", "zookeeper"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store of each backend."""
    if request.param == "embedded":
        yield f"file://{tmp_path / 'store.db'}"
    elif request.param == "etcd":
        yield _server("etcd", start_etcd).url()
    else:
        yield _server("zookeeper", start_zookeeper).url()
