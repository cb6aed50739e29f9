//! The conformance suite every [`KvStore`] backend must pass.
//!
//! Public async functions, each taking the store(s) under test, called from every backend's
//! tests (the shape of object_store's `integration.rs`). They panic on the first assertion that
//! fails, with a message naming the check. Each works below its own random scratch prefix, so
//! several can run against one server at once and leftovers never collide.
//!
//! The cross-process checks drive a second process through the `overlay-kv` binary of this crate
//! ([`PeerProcess`]).

mod process;

use std::sync::Arc;
use std::time::Duration;

use super::{KeyValue, KvStore, TxnOp, Version, Watch, WatchEvent};
use crate::error::ErrorKind;

pub use process::{
    PeerProcess, cas_race_across_processes, ephemeral_removed_when_owner_killed,
    watch_across_processes,
};

/// How long a check waits for an event that must come.
pub(crate) const EVENT_WAIT: Duration = Duration::from_secs(10);

/// A fresh scratch prefix for one check.
pub fn scratch(check: &str) -> String {
    format!("conformance/{check}-{:016x}", rand::random::<u64>())
}

/// Runs every single-process check against `store`.
pub async fn run_all(store: &dyn KvStore) {
    put_get_delete(store).await;
    list_prefix(store).await;
    create_existing_fails(store).await;
    compare_and_swap(store).await;
    compare_and_delete(store).await;
    transactions(store).await;
    watch_key_and_prefix(store).await;
    watch_from_version(store).await;
    concurrent_cas_increments(store, 16).await;
    large_values(store).await;
    oversized_values_refused(store).await;
    invalid_keys_refused(store).await;
}

/// Waits for the next event, failing the check if none comes in time.
pub async fn next_event(watch: &mut Watch, what: &str) -> WatchEvent {
    match tokio::time::timeout(EVENT_WAIT, watch.next()).await {
        Ok(Some(Ok(ev))) => ev,
        Ok(Some(Err(e))) => panic!("{what}: watch failed: {e}"),
        Ok(None) => panic!("{what}: watch ended"),
        Err(_) => panic!("{what}: no event within {EVENT_WAIT:?}"),
    }
}

pub(crate) async fn expect_put(watch: &mut Watch, key: &str, value: &[u8], what: &str) -> Version {
    match next_event(watch, what).await {
        WatchEvent::Put(KeyValue {
            key: k,
            value: v,
            version,
        }) => {
            assert_eq!(
                (k.as_str(), v.as_slice()),
                (key, value),
                "{what}: wrong put event"
            );
            version
        }
        other => panic!("{what}: expected a put of {key}, got {other:?}"),
    }
}

pub(crate) async fn expect_delete(watch: &mut Watch, key: &str, what: &str) -> Version {
    match next_event(watch, what).await {
        WatchEvent::Delete { key: k, version } => {
            assert_eq!(k, key, "{what}: wrong delete event");
            version
        }
        other => panic!("{what}: expected a delete of {key}, got {other:?}"),
    }
}

/// put/get/delete on keys at several depths; versions agree between put and get and grow.
pub async fn put_get_delete(store: &dyn KvStore) {
    let p = scratch("put_get_delete");
    for key in [p.clone(), format!("{p}/a"), format!("{p}/a/b/c/d")] {
        assert_eq!(
            store.get(&key).await.unwrap(),
            None,
            "fresh key {key} must be absent"
        );
        let v1 = store.put(&key, b"one").await.unwrap();
        let got = store.get(&key).await.unwrap().expect("key just put");
        assert_eq!(
            (got.key.as_str(), got.value.as_slice(), got.version),
            (key.as_str(), &b"one"[..], v1)
        );
        let v2 = store.put(&key, b"two").await.unwrap();
        assert!(v2 > v1, "versions of {key} must increase: {v1} then {v2}");
        assert_eq!(store.get(&key).await.unwrap().unwrap().value, b"two");
        assert!(
            store.delete(&key).await.unwrap(),
            "delete of existing {key} reports true"
        );
        assert_eq!(store.get(&key).await.unwrap(), None, "{key} must be gone");
        assert!(
            !store.delete(&key).await.unwrap(),
            "delete of absent {key} reports false"
        );
    }
    // An empty value is a value, not an absence.
    let key = format!("{p}/empty");
    store.put(&key, b"").await.unwrap();
    assert_eq!(
        store.get(&key).await.unwrap().map(|kv| kv.value),
        Some(vec![])
    );
    store.delete(&key).await.unwrap();
}

/// list returns exactly the keys below a prefix, at every depth, with their versions.
pub async fn list_prefix(store: &dyn KvStore) {
    let p = scratch("list_prefix");
    let mut want = Vec::new();
    for key in [format!("{p}/d/x"), format!("{p}/d/y/z"), format!("{p}/d/a")] {
        let v = store.put(&key, key.as_bytes()).await.unwrap();
        want.push(KeyValue {
            value: key.clone().into_bytes(),
            key,
            version: v,
        });
    }
    // The prefix itself, as a key: listed with what is below it, with or without the '/'.
    let own = format!("{p}/d");
    let v = store.put(&own, b"itself").await.unwrap();
    want.push(KeyValue {
        key: own,
        value: b"itself".to_vec(),
        version: v,
    });
    // Neighbours that share a string prefix but are not below the directory.
    store.put(&format!("{p}/dx"), b"no").await.unwrap();
    store.put(&format!("{p}/e"), b"no").await.unwrap();
    want.sort_by(|a, b| a.key.cmp(&b.key));
    let listing = store.list(&format!("{p}/d")).await.unwrap();
    assert_eq!(listing.kvs, want, "list of {p}/d");
    let max = want.iter().map(|kv| kv.version).max().unwrap();
    assert!(
        listing.revision >= max,
        "listing revision {} below a listed version {max}",
        listing.revision
    );
    let listing = store.list(&format!("{p}/d/")).await.unwrap();
    assert_eq!(
        listing.kvs, want,
        "a trailing '/' on the prefix changes nothing"
    );
    assert!(
        store
            .list(&format!("{p}/nothing"))
            .await
            .unwrap()
            .kvs
            .is_empty()
    );
    let all = store.list(&p).await.unwrap();
    assert_eq!(
        all.kvs.len(),
        6,
        "list of {p} sees all six keys: {:?}",
        all.kvs
    );
    for kv in &all.kvs {
        let got = store.get(&kv.key).await.unwrap().unwrap();
        assert_eq!(
            got.version, kv.version,
            "get and list agree on the version of {}",
            kv.key
        );
    }
}

/// create on an existing key fails with AlreadyExists and changes nothing.
pub async fn create_existing_fails(store: &dyn KvStore) {
    let key = format!("{}/k", scratch("create"));
    let v = store.create(&key, b"first").await.unwrap();
    let e = store.create(&key, b"second").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(e.to_string().contains(&key), "the error names the key: {e}");
    let kv = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.version),
        (&b"first"[..], v),
        "failed create changed the key"
    );
}

/// compare-and-swap succeeds at the current version only; a failure changes nothing.
pub async fn compare_and_swap(store: &dyn KvStore) {
    let key = format!("{}/k", scratch("cas"));
    let e = store.compare_and_swap(&key, b"x", 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "CAS of an absent key: {e}");
    assert_eq!(
        store.get(&key).await.unwrap(),
        None,
        "failed CAS created the key"
    );
    let v1 = store.put(&key, b"a").await.unwrap();
    let v2 = store.compare_and_swap(&key, b"b", v1).await.unwrap();
    assert!(v2 > v1);
    for stale in [v1, v2 + 1_000_000, 0] {
        let e = store.compare_and_swap(&key, b"c", stale).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict, "CAS at version {stale}: {e}");
        let kv = store.get(&key).await.unwrap().unwrap();
        assert_eq!(
            (kv.value.as_slice(), kv.version),
            (&b"b"[..], v2),
            "failed CAS changed the key"
        );
    }
}

/// compare-and-delete deletes at the current version only; a failure changes nothing.
pub async fn compare_and_delete(store: &dyn KvStore) {
    let key = format!("{}/k", scratch("cad"));
    let e = store.compare_and_delete(&key, 1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "CAD of an absent key: {e}");
    let v1 = store.put(&key, b"a").await.unwrap();
    let v2 = store.put(&key, b"b").await.unwrap();
    let e = store.compare_and_delete(&key, v1).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "CAD at a stale version: {e}");
    assert_eq!(
        store.get(&key).await.unwrap().unwrap().version,
        v2,
        "failed CAD changed the key"
    );
    store.compare_and_delete(&key, v2).await.unwrap();
    assert_eq!(store.get(&key).await.unwrap(), None);
}

/// A transaction applies all its ops or none, and names the condition that failed.
pub async fn transactions(store: &dyn KvStore) {
    let p = scratch("txn");
    let (a, b, c, d) = (
        format!("{p}/a"),
        format!("{p}/b"),
        format!("{p}/c"),
        format!("{p}/x/d"),
    );
    let va = store.put(&a, b"a0").await.unwrap();
    let vd = store.put(&d, b"d0").await.unwrap();
    let ok = store
        .txn(&[
            TxnOp::Update {
                key: a.clone(),
                value: b"a1".to_vec(),
                version: va,
            },
            TxnOp::Create {
                key: b.clone(),
                value: b"b1".to_vec(),
            },
            TxnOp::Check {
                key: c.clone(),
                version: None,
            },
            TxnOp::DeleteIf {
                key: d.clone(),
                version: vd,
            },
        ])
        .await
        .unwrap();
    assert_eq!(ok.versions.len(), 4);
    let va1 = ok.versions[0].expect("version of the update");
    assert_eq!(store.get(&a).await.unwrap().unwrap().version, va1);
    assert_eq!(store.get(&b).await.unwrap().unwrap().value, b"b1");
    assert_eq!(store.get(&d).await.unwrap(), None);
    let before = store.list(&p).await.unwrap().kvs;

    // Each of these fails on its last op: nothing of the earlier ops may be written.
    let failing: [(TxnOp, ErrorKind, &str); 4] = [
        (
            TxnOp::Create {
                key: b.clone(),
                value: vec![],
            },
            ErrorKind::AlreadyExists,
            &b,
        ),
        (
            TxnOp::Update {
                key: a.clone(),
                value: vec![],
                version: va,
            },
            ErrorKind::Conflict,
            &a,
        ),
        (
            TxnOp::Check {
                key: c.clone(),
                version: Some(1),
            },
            ErrorKind::Conflict,
            &c,
        ),
        (
            TxnOp::DeleteIf {
                key: d.clone(),
                version: vd,
            },
            ErrorKind::Conflict,
            &d,
        ),
    ];
    for (last, kind, key) in failing {
        // The first op's key differs from every `last` key: a key twice is InvalidArgument.
        let ops = [
            TxnOp::Put {
                key: format!("{p}/e"),
                value: b"c".to_vec(),
            },
            TxnOp::Create {
                key: format!("{p}/new"),
                value: b"n".to_vec(),
            },
            last,
        ];
        let e = store.txn(&ops).await.unwrap_err();
        assert_eq!(e.kind(), kind, "txn failing on {key}: {e}");
        assert!(e.to_string().contains(key), "the error names {key}: {e}");
        assert_eq!(
            store.list(&p).await.unwrap().kvs,
            before,
            "a failed txn wrote something"
        );
    }
    let e = store
        .txn(&[
            TxnOp::Put {
                key: c.clone(),
                value: vec![],
            },
            TxnOp::Delete { key: c.clone() },
        ])
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidArgument,
        "a key twice in one txn: {e}"
    );
    assert_eq!(store.list(&p).await.unwrap().kvs, before);
}

/// Watches of a key and of a prefix see puts and deletes in order, with increasing versions
/// equal to what get reports, and nothing outside the prefix.
pub async fn watch_key_and_prefix(store: &dyn KvStore) {
    let p = scratch("watch");
    let (k1, k2, outside) = (
        format!("{p}/d/k1"),
        format!("{p}/d/sub/k2"),
        format!("{p}/dx"),
    );
    let mut dir = store.watch(&format!("{p}/d"), None).await.unwrap();
    let mut one = store.watch(&k1, None).await.unwrap();
    store.put(&outside, b"no").await.unwrap();
    let v1 = store.put(&k1, b"1").await.unwrap();
    let v2 = store.put(&k2, b"2").await.unwrap();
    let v3 = store.put(&k1, b"3").await.unwrap();
    store.delete(&k2).await.unwrap();

    assert_eq!(expect_put(&mut dir, &k1, b"1", "prefix watch").await, v1);
    assert_eq!(expect_put(&mut dir, &k2, b"2", "prefix watch").await, v2);
    assert_eq!(expect_put(&mut dir, &k1, b"3", "prefix watch").await, v3);
    let vd = expect_delete(&mut dir, &k2, "prefix watch").await;
    assert!(
        v1 < v2 && v2 < v3 && v3 < vd,
        "versions increase: {v1} {v2} {v3} {vd}"
    );

    assert_eq!(expect_put(&mut one, &k1, b"1", "key watch").await, v1);
    assert_eq!(expect_put(&mut one, &k1, b"3", "key watch").await, v3);
    store.delete(&k1).await.unwrap();
    expect_delete(&mut one, &k1, "key watch").await;
    expect_delete(&mut dir, &k1, "prefix watch").await;
    // The put outside the prefix must never arrive: a marker written after it comes first.
    let marker = format!("{p}/d/marker");
    store.put(&marker, b"m").await.unwrap();
    expect_put(
        &mut dir,
        &marker,
        b"m",
        "prefix watch after the outside put",
    )
    .await;
}

/// A watch from a version replays what came after it (or, for backends without replay, starts
/// with a Resync), then goes on live.
pub async fn watch_from_version(store: &dyn KvStore) {
    let p = scratch("watch_from");
    let k = format!("{p}/k");
    let listing = store.list(&p).await.unwrap();
    let v1 = store.put(&k, b"1").await.unwrap();
    store.put(&k, b"2").await.unwrap();
    store.delete(&k).await.unwrap();
    let mut w = store.watch(&p, Some(listing.revision)).await.unwrap();
    if store.capabilities().watch_replay {
        assert_eq!(expect_put(&mut w, &k, b"1", "replay").await, v1);
        expect_put(&mut w, &k, b"2", "replay").await;
        expect_delete(&mut w, &k, "replay").await;
        let mut after = store.watch(&p, Some(v1)).await.unwrap();
        expect_put(&mut after, &k, b"2", "replay from the first put").await;
    } else {
        match next_event(&mut w, "watch from a version without replay").await {
            WatchEvent::Resync { .. } => {}
            other => panic!("a backend without replay must start with Resync, got {other:?}"),
        }
    }
    store.put(&k, b"live").await.unwrap();
    expect_put(&mut w, &k, b"live", "live after replay").await;
}

/// `tasks` tasks racing CAS increments on one key end with exactly one increment each.
pub async fn concurrent_cas_increments(store: &dyn KvStore, tasks: u64) {
    let key = format!("{}/counter", scratch("cas_race"));
    store.put(&key, b"0").await.unwrap();
    let one = |_| async {
        cas_increment(store, &key).await.expect("CAS increment");
    };
    futures::future::join_all((0..tasks).map(one)).await;
    let v = store.get(&key).await.unwrap().unwrap().value;
    assert_eq!(
        String::from_utf8(v).unwrap(),
        tasks.to_string(),
        "every increment counted once"
    );
}

/// A large value (1 MiB, or the backend's limit if smaller) round-trips byte for byte,
/// through get, list and watch.
pub async fn large_values(store: &dyn KvStore) {
    let p = scratch("large");
    let key = format!("{p}/big");
    let len = store.capabilities().max_value_len.min(1 << 20) as u32;
    let value: Vec<u8> = (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut w = store.watch(&p, None).await.unwrap();
    let v = store.put(&key, &value).await.unwrap();
    assert!(
        store.get(&key).await.unwrap().unwrap().value == value,
        "get of a 1 MiB value"
    );
    assert!(
        store.list(&p).await.unwrap().kvs[0].value == value,
        "list of a 1 MiB value"
    );
    match next_event(&mut w, "watch of a 1 MiB value").await {
        WatchEvent::Put(kv) => assert!(kv.value == value && kv.version == v, "watched 1 MiB value"),
        other => panic!("expected the big put, got {other:?}"),
    }
}

/// A value over the backend's limit is refused with InvalidArgument naming the limit, before
/// any I/O, by every writing operation: the session survives, and with it this client's
/// ephemeral keys (a ZooKeeper server drops the connection of an oversized request).
pub async fn oversized_values_refused(store: &dyn KvStore) {
    let p = scratch("oversized");
    let held = format!("{p}/held");
    store.put_ephemeral(&held, b"mine").await.unwrap();
    let limit = store.capabilities().max_value_len;
    let big = vec![1u8; limit + 1];
    let key = format!("{p}/big");
    let half = vec![2u8; limit / 2 + 1];
    let results = [
        store.put(&key, &big).await.map(|_| ()),
        store.create(&key, &big).await.map(|_| ()),
        store.compare_and_swap(&key, &big, 1).await.map(|_| ()),
        store.put_ephemeral(&key, &big).await.map(|_| ()),
        store.create_ephemeral(&key, &big).await.map(|_| ()),
        // Each value fits; together they do not.
        store
            .txn(&[
                TxnOp::Put {
                    key: format!("{key}1"),
                    value: half.clone(),
                },
                TxnOp::Put {
                    key: format!("{key}2"),
                    value: half,
                },
            ])
            .await
            .map(|_| ()),
    ];
    for (i, r) in results.into_iter().enumerate() {
        let e = r.expect_err("an oversized value must be refused");
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "op {i}: {e}");
        assert!(
            e.to_string().contains(&limit.to_string()),
            "op {i} names the limit: {e}"
        );
    }
    assert_eq!(store.get(&key).await.unwrap(), None, "nothing was written");
    let kv = store
        .get(&held)
        .await
        .unwrap()
        .expect("the ephemeral key is still there");
    assert_eq!(kv.value, b"mine");
    store
        .put(&format!("{p}/after"), b"ok")
        .await
        .expect("the client still works");
    store.delete(&held).await.unwrap();
}

/// `create_ephemeral` is a claim one live client holds at a time: it fails with
/// AlreadyExists (writing nothing) while the key exists, whoever wrote it, and succeeds again
/// once the holder's session ended.
pub async fn create_ephemeral_claims_once(other: &dyn KvStore, holder: Arc<dyn KvStore>) {
    let p = scratch("claim");
    let key = format!("{p}/host");
    let v = holder.create_ephemeral(&key, b"first").await.unwrap();
    for (who, store) in [("the holder", &*holder), ("another client", other)] {
        let e = store.create_ephemeral(&key, b"second").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{who} again: {e}");
        assert!(e.to_string().contains(&key), "the error names the key: {e}");
    }
    let kv = other.get(&key).await.unwrap().expect("the claim is there");
    assert_eq!(
        (kv.value.as_slice(), kv.version),
        (&b"first"[..], v),
        "nothing was written"
    );
    let plain = format!("{p}/plain");
    other.put(&plain, b"ordinary").await.unwrap();
    let e = holder.create_ephemeral(&plain, b"x").await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::AlreadyExists,
        "over an ordinary key: {e}"
    );
    let mut w = other.watch(&key, None).await.unwrap();
    holder.close().await.unwrap();
    expect_delete(&mut w, &key, "the claim of a closed session").await;
    other
        .create_ephemeral(&key, b"next")
        .await
        .expect("free again after the holder closed");
    assert_eq!(other.get(&key).await.unwrap().unwrap().value, b"next");
    other.delete(&key).await.unwrap();
}

/// Bad keys get InvalidArgument from every operation.
pub async fn invalid_keys_refused(store: &dyn KvStore) {
    for key in ["", "/a", "a//b", "a/../b", "a\u{7}b", "a b"] {
        let results = [
            store.get(key).await.map(|_| ()),
            store.put(key, b"x").await.map(|_| ()),
            store.create(key, b"x").await.map(|_| ()),
            store.compare_and_swap(key, b"x", 1).await.map(|_| ()),
            store.delete(key).await.map(|_| ()),
            store.compare_and_delete(key, 1).await,
            store
                .txn(&[TxnOp::Put {
                    key: key.into(),
                    value: vec![],
                }])
                .await
                .map(|_| ()),
            store.put_ephemeral(key, b"x").await.map(|_| ()),
            store.create_ephemeral(key, b"x").await.map(|_| ()),
        ];
        for (i, r) in results.into_iter().enumerate() {
            let e = r.expect_err("a bad key must be refused");
            assert_eq!(
                e.kind(),
                ErrorKind::InvalidArgument,
                "op {i} on {key:?}: {e}"
            );
        }
    }
    for prefix in ["/a", "a//b", "a/./b"] {
        assert_eq!(
            store.list(prefix).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            store.watch(prefix, None).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }
}

/// An ephemeral key of `owner` disappears when `owner` closes, and `observer`'s watch sees the
/// delete. After close, `owner` refuses work with Unavailable, but refuses bad keys with
/// InvalidArgument: proof that keys are checked before any I/O.
pub async fn ephemeral_removed_on_close(observer: &dyn KvStore, owner: Arc<dyn KvStore>) {
    let p = scratch("ephemeral_close");
    let key = format!("{p}/host");
    let mut w = observer.watch(&p, None).await.unwrap();
    let v = owner.put_ephemeral(&key, b"alive").await.unwrap();
    assert_eq!(
        observer.get(&key).await.unwrap().map(|kv| kv.version),
        Some(v)
    );
    expect_put(&mut w, &key, b"alive", "ephemeral put").await;
    owner.close().await.unwrap();
    expect_delete(&mut w, &key, "ephemeral key of a closed session").await;
    assert_eq!(observer.get(&key).await.unwrap(), None);
    let e = owner.get(&key).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "a closed store: {e}");
    let e = owner.put("a//b", b"x").await.unwrap_err();
    assert_eq!(
        e.kind(),
        ErrorKind::InvalidArgument,
        "bad key on a closed store: {e}"
    );
}

/// The read contract ([`KvStore`]'s "reads after another client's write") across two
/// clients, for `rounds` rounds of a put by `writer`, a compare-and-swap by `reader` and a
/// delete by `writer`, each read by the other client at once. Where
/// [`Capabilities::current_reads`](super::Capabilities::current_reads) holds, the very next
/// `get` and `list` see each write; elsewhere a read may come from before it (never from
/// after), and after [`KvStore::sync`] it sees it. Returns how many of each client's reads
/// without a sync came from before the write (`writer`'s, `reader`'s). Meant for two clients on different servers of a cluster (on one
/// server, or the embedded store, it holds trivially).
pub async fn reads_follow_acknowledged_writes(
    writer: &dyn KvStore,
    reader: &dyn KvStore,
    rounds: usize,
) -> (usize, usize) {
    assert!(rounds > 0, "a check of no rounds checks nothing");
    let p = scratch("reads_follow_writes");
    let (mut writer_lagged, mut reader_lagged) = (0, 0);
    for round in 0..rounds {
        let key = format!("{p}/k/{round}");
        let what = |step: &str| format!("round {round}: {step} of {key}");
        let v = writer.put(&key, b"one").await.unwrap();
        reader_lagged += read_after(
            reader,
            &key,
            Some(v),
            &what("a read after another client's put"),
        )
        .await;
        let listed = reader.list(&format!("{p}/k")).await.unwrap();
        assert_eq!(
            listed
                .kvs
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| kv.version),
            Some(v),
            "{}",
            what("a list after a synced read of another client's put")
        );
        let mine = reader.compare_and_swap(&key, b"two", v).await.unwrap();
        writer_lagged += read_after(
            writer,
            &key,
            Some(mine),
            &what("a read after another client's compare-and-swap"),
        )
        .await;
        assert_eq!(
            writer.get(&key).await.unwrap().map(|kv| kv.value),
            Some(b"two".to_vec()),
            "{}",
            what("the value of another client's compare-and-swap")
        );
        assert!(writer.delete(&key).await.unwrap(), "{}", what("delete"));
        reader_lagged += read_after(
            reader,
            &key,
            None,
            &what("a read after another client's delete"),
        )
        .await;
    }
    let left = reader.list(&p).await.unwrap();
    assert!(left.kvs.is_empty(), "every key was deleted: {:?}", left.kvs);
    (writer_lagged, reader_lagged)
}

/// Reads `key` from `store` right after another client's acknowledged write left it at
/// `expected` (`None`: deleted): at once where reads are current, else first as it comes
/// (before the write, or at it) and again after a sync (at it). Whether the first read lagged.
async fn read_after(
    store: &dyn KvStore,
    key: &str,
    expected: Option<Version>,
    what: &str,
) -> usize {
    let version = |kv: Option<KeyValue>| kv.map(|kv| kv.version);
    let first = version(store.get(key).await.unwrap());
    if store.capabilities().current_reads {
        assert_eq!(first, expected, "{what}");
        return 0;
    }
    let lagged = first != expected;
    if lagged {
        // From before the write: the key's older version, or absent before a put.
        match (first, expected) {
            (Some(old), Some(new)) => assert!(old < new, "{what}: read {old}, newer than {new}"),
            (None, Some(_)) | (Some(_), None) => {}
            (None, None) => unreachable!("equal"),
        }
    }
    store.sync().await.unwrap();
    assert_eq!(
        version(store.get(key).await.unwrap()),
        expected,
        "{what}, after a sync"
    );
    usize::from(lagged)
}

/// Increments the decimal counter at `key` with compare-and-swap (creating it at 1), retrying
/// lost races; returns the new count. Shared with the `overlay-kv incr` command so both sides
/// of [`cas_race_across_processes`] count the same way.
pub async fn cas_increment(store: &dyn KvStore, key: &str) -> crate::Result<u64> {
    loop {
        let kv = store.get(key).await?;
        let (n, version) = match kv {
            Some(kv) => {
                let text = String::from_utf8_lossy(&kv.value).into_owned();
                let n: u64 = text.trim().parse().map_err(|_| {
                    crate::Error::invalid(
                        "increment",
                        format!("{key} holds {text:?}, not a number"),
                    )
                })?;
                (n, Some(kv.version))
            }
            None => (0, None),
        };
        let next = (n + 1).to_string();
        let r = match version {
            Some(v) => store.compare_and_swap(key, next.as_bytes(), v).await,
            None => store.create(key, next.as_bytes()).await,
        };
        match r {
            Ok(_) => return Ok(n + 1),
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Formats a watch event as one line, as `overlay-kv watch` prints it.
pub fn event_line(ev: &WatchEvent) -> String {
    match ev {
        WatchEvent::Put(kv) => {
            format!(
                "put {} {} {}",
                kv.key,
                kv.version,
                String::from_utf8_lossy(&kv.value)
            )
        }
        WatchEvent::Delete { key, version } => format!("delete {key} {version}"),
        WatchEvent::Resync { reason } => format!("resync {reason}"),
    }
}
