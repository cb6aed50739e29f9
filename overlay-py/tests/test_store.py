"""Store operations through Python against the embedded store, etcd and ZooKeeper."""

from __future__ import annotations

import pytest

import overlay


def test_get_put_create_cas_delete(store_url: str) -> None:
    with overlay.Store(store_url) as store:
        assert store.get("greeting") is None
        v1 = store.create("greeting", b"hello")
        assert store.get("greeting") == (b"hello", v1)
        with pytest.raises(overlay.AlreadyExistsError):
            store.create("greeting", b"again")
        v2 = store.cas("greeting", bytearray(b"hello again"), v1)
        assert v2 > v1
        assert store.get("greeting") == (b"hello again", v2)
        with pytest.raises(overlay.ConflictError):
            store.cas("greeting", b"stale", v1)
        assert store.get("greeting") == (b"hello again", v2), "a failed CAS changed the value"
        v3 = store.put("greeting", b"")
        assert store.get("greeting") == (b"", v3)
        with pytest.raises(overlay.ConflictError):
            store.cas_delete("greeting", v2)
        store.cas_delete("greeting", v3)
        assert store.get("greeting") is None
        assert store.delete("greeting") is False
        store.put("greeting", b"x")
        assert store.delete("greeting") is True


def test_binary_values_round_trip(store_url: str) -> None:
    value = bytes(range(256)) * 4
    with overlay.Store(store_url) as store:
        version = store.put("blob", value)
        got = store.get("blob")
        assert got is not None and got[0] == value and got[1] == version
        assert isinstance(got[0], bytes)


def test_list_sorted_below_prefix(store_url: str) -> None:
    with overlay.Store(store_url) as store:
        versions = {k: store.put(k, k.encode()) for k in ["net/b", "net/a", "net/a/x", "other"]}
        entries = store.list("net")
        assert [k for k, _, _ in entries] == ["net/a", "net/a/x", "net/b"]
        for key, value, version in entries:
            assert value == key.encode() and version == versions[key]
        assert [k for k, _, _ in store.list()] == sorted(versions)
        assert store.list("nothing-here") == []
        entries2, revision = store.list_with_revision("net")
        assert entries2 == entries
        assert revision >= max(versions.values())


def test_watch_sees_puts_and_deletes_in_order(store_url: str) -> None:
    with overlay.Store(store_url) as store:
        _, revision = store.list_with_revision("w")
        with store.watch("w") as watch:
            v1 = store.put("w/a", b"1")
            v2 = store.put("w/b", b"2")
            store.put("elsewhere", b"not watched")
            assert store.delete("w/a")
            seen = []
            while len(seen) < 3:
                event = watch.next(timeout=10)
                assert event is not None, f"no event within 10s; seen so far {seen}"
                if event.kind == "resync":
                    continue
                seen.append(event)
            assert [(e.kind, e.key) for e in seen] == [("put", "w/a"), ("put", "w/b"), ("delete", "w/a")]
            assert (seen[0].value, seen[0].version) == (b"1", v1)
            assert (seen[1].value, seen[1].version) == (b"2", v2)
            assert seen[2].value is None and seen[2].version is not None
            assert seen[2].version > v2
            assert "w/a" in repr(seen[0])
            assert watch.next(timeout=0.2) is None, "an event for an unwatched key arrived"
        # A replay from the listing's revision sees the same history (or a resync first).
        with store.watch("w", from_version=revision) as replay:
            first = replay.next(timeout=10)
            assert first is not None
            assert first.kind == "resync" or (first.kind, first.key) == ("put", "w/a")


def test_closed_watch_ends_iteration(store_url: str) -> None:
    with overlay.Store(store_url) as store:
        watch = store.watch("x")
        store.put("x/1", b"1")
        assert next(iter(watch)).kind in ("put", "resync")
        watch.close()
        with pytest.raises(StopIteration):
            watch.next(timeout=1)
        assert list(watch) == []


def test_ephemeral_key_vanishes_on_close(store_url: str) -> None:
    with overlay.Store(store_url) as owner, overlay.Store(store_url) as other:
        owner.put_ephemeral("hosts/h1", b"alive")
        assert other.get("hosts/h1") is not None
        owner.close()
        assert other.get("hosts/h1") is None


def test_two_connections_share_one_store(store_url: str) -> None:
    with overlay.Store(store_url) as a, overlay.Store(store_url) as b:
        version = a.create("shared", b"from a")
        assert b.get("shared") == (b"from a", version)
        assert a.backend == b.backend
        assert a.backend in ("embedded", "etcd", "zookeeper")
        assert "Store(" in repr(a)


def test_wrong_argument_types_raise_type_error_before_io(embedded_url: str) -> None:
    with overlay.Store(embedded_url) as store:
        with pytest.raises(TypeError):
            store.put("k", "text, not bytes")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.get(42)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.cas("k", b"v", "1")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            store.watch("k").next(timeout="soon")  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            overlay.Store(None)  # type: ignore[arg-type]
        assert store.list() == [], "a refused call wrote something"


def test_transaction_all_or_nothing(store_url: str) -> None:
    with overlay.Store(store_url) as store:
        v_old = store.put("old", b"1")
        store.put("gone", b"x")
        versions = store.txn(
            [
                ("create", "new", b"n"),
                ("put", "other", bytearray(b"o")),
                ("update", "old", b"2", v_old),
                ("delete", "gone"),
                ("check", "absent", None),
            ]
        )
        assert len(versions) == 5
        assert versions[0] is not None and versions[1] is not None and versions[2] is not None
        assert versions[3] is None and versions[4] is None
        assert store.get("new") == (b"n", versions[0])
        assert store.get("old") == (b"2", versions[2])
        assert store.get("gone") is None
        before = store.list()
        with pytest.raises(overlay.AlreadyExistsError):
            store.txn([("put", "side", b"effect"), ("create", "new", b"again")])
        with pytest.raises(overlay.ConflictError) as info:
            store.txn([("put", "side", b"effect"), ("update", "old", b"3", v_old)])
        assert "old" in str(info.value)
        with pytest.raises(overlay.ConflictError):
            store.txn([("put", "side", b"effect"), ("delete_if", "old", v_old)])
        assert store.list() == before, "a failed transaction wrote something"


def test_transaction_ops_checked_before_io(embedded_url: str) -> None:
    with overlay.Store(embedded_url) as store:
        with pytest.raises(TypeError):
            store.txn([["put", "k", b"v"]])  # type: ignore[list-item]
        with pytest.raises(TypeError):
            store.txn([("put", "k")])
        with pytest.raises(TypeError):
            store.txn([("put", "k", "text")])
        with pytest.raises(overlay.InvalidArgumentError):
            store.txn([("put", "ok", b"v"), ("upsert", "k", b"v")])
        with pytest.raises(overlay.InvalidArgumentError):
            store.txn([("put", "ok", b"v"), ("put", "bad//key", b"v")])
        assert store.list() == []


def test_watch_ends_when_the_store_closes(store_url: str) -> None:
    store = overlay.Store(store_url)
    watch = store.watch("x")
    store.close()
    with pytest.raises(StopIteration):
        while True:  # a resync may come first; the end must follow within 10 s
            if watch.next(timeout=10) is None:
                raise AssertionError("the watch did not end within 10s of close()")
