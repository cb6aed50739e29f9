"""Fixtures: store URLs for the embedded store and for real etcd and ZooKeeper servers."""

from __future__ import annotations

from pathlib import Path

import pytest

from servers import server, start_etcd, start_zookeeper, stop_all


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    stop_all()


@pytest.fixture
def embedded_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store.db'}"


@pytest.fixture(params=["embedded", "etcd", "zookeeper"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store of each backend."""
    if request.param == "embedded":
        return f"file://{tmp_path / 'store.db'}"
    if request.param == "etcd":
        return server("etcd", start_etcd).url()
    return server("zookeeper", start_zookeeper).url()
