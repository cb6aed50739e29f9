//! Unit tests of the embedded store: behaviour that needs short internal timings (compaction,
//! lease sweeps) or a look at the file behind the API.

use std::time::Duration;

use rusqlite::Connection;

use super::background::Tuning;
use super::*;
use crate::store::WatchEvent;

const WAIT: Duration = Duration::from_secs(10);

fn url(dir: &tempfile::TempDir, query: &str) -> StoreUrl {
    StoreUrl::parse(&format!("file://{}/s.db?{query}", dir.path().display())).unwrap()
}

async fn open(dir: &tempfile::TempDir, query: &str) -> EmbeddedStore {
    EmbeddedStore::open(&url(dir, query)).await.unwrap()
}

async fn open_tuned(dir: &tempfile::TempDir, query: &str, tuning: Tuning) -> EmbeddedStore {
    EmbeddedStore::open_tuned(&url(dir, query), tuning)
        .await
        .unwrap()
}

async fn next(w: &mut Watch) -> WatchEvent {
    match tokio::time::timeout(WAIT, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

fn put_of(ev: &WatchEvent) -> (&str, &[u8]) {
    match ev {
        WatchEvent::Put(kv) => (kv.key.as_str(), kv.value.as_slice()),
        other => panic!("expected a put, got {other:?}"),
    }
}

fn delete_of(ev: &WatchEvent) -> &str {
    match ev {
        WatchEvent::Delete { key, .. } => key,
        other => panic!("expected a delete, got {other:?}"),
    }
}

#[tokio::test]
async fn two_clients_of_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "").await;
    let b = open(&dir, "").await;
    let mut wb = b.watch("k", None).await.unwrap();
    let v = a.put("k/1", b"from a").await.unwrap();
    assert_eq!(b.get("k/1").await.unwrap().unwrap().version, v);
    let ev = next(&mut wb).await;
    assert_eq!(put_of(&ev), ("k/1", &b"from a"[..]));
    b.compare_and_swap("k/1", b"from b", v).await.unwrap();
    assert_eq!(a.get("k/1").await.unwrap().unwrap().value, b"from b");
    let ev = next(&mut wb).await;
    assert_eq!(
        put_of(&ev),
        ("k/1", &b"from b"[..]),
        "a write of the watching client itself"
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

#[tokio::test]
async fn prefixes_sharing_a_file_are_separate() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir, "prefix=one").await;
    let b = open(&dir, "prefix=one/two").await;
    let mut wa = a.watch("", None).await.unwrap();
    b.put("k", b"b").await.unwrap();
    a.put("k", b"a").await.unwrap();
    assert_eq!(b.get("k").await.unwrap().unwrap().value, b"b");
    // "one/two/k" is below prefix "one" as key "two/k": the prefix is part of the key path.
    let listed: Vec<String> = a
        .list("")
        .await
        .unwrap()
        .kvs
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(listed, ["k", "two/k"]);
    assert_eq!(b.list("").await.unwrap().kvs.len(), 1);
    assert_eq!(put_of(&next(&mut wa).await).0, "two/k");
    assert_eq!(put_of(&next(&mut wa).await).0, "k");
}

#[tokio::test]
async fn reopened_file_keeps_data_and_revision() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "").await;
    let v = s.put("a/b", b"kept").await.unwrap();
    s.close().await.unwrap();
    drop(s);
    let s = open(&dir, "").await;
    let kv = s.get("a/b").await.unwrap().unwrap();
    assert_eq!((kv.value.as_slice(), kv.version), (&b"kept"[..], v));
    assert!(
        s.put("a/c", b"").await.unwrap() > v,
        "the revision survives a reopen"
    );
}

#[tokio::test]
async fn compacted_history_gives_resync() {
    let dir = tempfile::tempdir().unwrap();
    let tuning = Tuning {
        poll: Duration::from_millis(5),
        sweep: Duration::from_millis(50),
        compact: Duration::from_millis(10),
        log_keep: 10,
    };
    let s = open_tuned(&dir, "", tuning).await;
    let first = s.put("k", b"0").await.unwrap();
    for i in 1..40u32 {
        s.put("k", i.to_string().as_bytes()).await.unwrap();
    }
    let conn = Connection::open(dir.path().join("s.db")).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (compacted, rows): (i64, i64) = conn
            .query_row(
                "SELECT compacted, (SELECT count(*) FROM log) FROM meta",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        // Compaction may have run mid-way through the writes; wait for it to catch up.
        if compacted > first as i64 && rows <= 11 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log was never compacted to about log_keep rows"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut w = s.watch("k", Some(first)).await.unwrap();
    assert!(matches!(next(&mut w).await, WatchEvent::Resync { .. }));
    s.put("k", b"live").await.unwrap();
    assert_eq!(
        put_of(&next(&mut w).await),
        ("k", &b"live"[..]),
        "the watch goes on after Resync"
    );
    // Recent history is still replayed exactly.
    let last = s.get("k").await.unwrap().unwrap().version;
    s.put("k", b"after").await.unwrap();
    let mut w = s.watch("k", Some(last)).await.unwrap();
    assert_eq!(put_of(&next(&mut w).await), ("k", &b"after"[..]));
}

#[tokio::test]
async fn swept_lease_of_a_live_owner_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(&dir, "ttl=2s").await;
    let observer = open(&dir, "").await;
    let mut w = observer.watch("hosts", None).await.unwrap();
    owner.put_ephemeral("hosts/me", b"alive").await.unwrap();
    assert_eq!(put_of(&next(&mut w).await), ("hosts/me", &b"alive"[..]));
    // Pretend the owner stalled past its TTL: its lease expires and a sweeper (this test,
    // right away, so the owner's renewal cannot come between) removes it with its key.
    let mut conn = Connection::open(dir.path().join("s.db")).unwrap();
    conn.busy_timeout(WAIT).unwrap();
    assert_eq!(
        conn.execute("UPDATE leases SET expires_ms = 0", [])
            .unwrap(),
        1
    );
    assert_eq!(
        super::lease::sweep(&mut conn).unwrap(),
        1,
        "the sweep removes the key"
    );
    assert_eq!(delete_of(&next(&mut w).await), "hosts/me");
    // The owner, alive, notices on its next renewal and puts its key back.
    assert_eq!(put_of(&next(&mut w).await), ("hosts/me", &b"alive"[..]));
    let leases: i64 = conn
        .query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leases, 1, "exactly one live lease after re-creation");
    owner.close().await.unwrap();
    assert_eq!(delete_of(&next(&mut w).await), "hosts/me");
    let leases: i64 = conn
        .query_row("SELECT count(*) FROM leases", [], |r| r.get(0))
        .unwrap();
    assert_eq!(leases, 0, "close removes the lease");
}

#[tokio::test]
async fn overwritten_ephemeral_key_is_not_restored() {
    let dir = tempfile::tempdir().unwrap();
    let owner = open(&dir, "ttl=2s").await;
    let other = open(&dir, "").await;
    owner.put_ephemeral("e/1", b"mine").await.unwrap();
    owner.put_ephemeral("e/2", b"mine").await.unwrap();
    // A plain put detaches the key from the lease: it outlives the owner's session.
    other.put("e/2", b"theirs").await.unwrap();
    owner.close().await.unwrap();
    assert_eq!(other.get("e/1").await.unwrap(), None);
    assert_eq!(other.get("e/2").await.unwrap().unwrap().value, b"theirs");
}

/// When `close` returns, the store's connections are closed: the last one removed the WAL
/// files, and a caller may move or delete the store file (the C face's `ovl_store_free`, just
/// before the process exits, left them behind, and the test harness's directory with them).
#[tokio::test]
async fn close_returns_once_the_files_are_released() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let s = open(&dir, "").await;
        s.put("k", format!("{round}").as_bytes()).await.unwrap();
        s.close().await.unwrap();
        for ext in ["-wal", "-shm"] {
            let file = dir.path().join(format!("s.db{ext}"));
            assert!(
                !file.exists(),
                "round {round}: {} is still there after close",
                file.display()
            );
        }
    }
}

#[tokio::test]
async fn close_ends_watches_and_refuses_work() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "").await;
    let mut w = s.watch("", None).await.unwrap();
    s.put_ephemeral("eph", b"x").await.unwrap();
    assert_eq!(put_of(&next(&mut w).await).0, "eph");
    s.close().await.unwrap();
    // The watch sees the session's own cleanup, then ends.
    assert_eq!(delete_of(&next(&mut w).await), "eph");
    assert!(
        tokio::time::timeout(WAIT, w.next())
            .await
            .unwrap()
            .is_none()
    );
    for e in [
        s.get("k").await.unwrap_err(),
        s.put("k", b"").await.unwrap_err(),
        s.list("").await.unwrap_err(),
        s.watch("", None).await.unwrap_err(),
        s.put_ephemeral("k", b"").await.unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    }
    s.close().await.unwrap();
}

#[tokio::test]
async fn drop_without_close_cleans_up_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let observer = open(&dir, "").await;
    let mut w = observer.watch("", None).await.unwrap();
    let s = open(&dir, "").await;
    let mut own = s.watch("", None).await.unwrap();
    s.put_ephemeral("eph", b"x").await.unwrap();
    assert_eq!(put_of(&next(&mut w).await).0, "eph");
    let t = std::time::Instant::now();
    drop(s);
    assert!(
        t.elapsed() < Duration::from_millis(100),
        "drop blocked for {:?}",
        t.elapsed()
    );
    assert_eq!(delete_of(&next(&mut w).await), "eph");
    // The dropped store's own watch delivers what was left, then ends.
    assert_eq!(put_of(&next(&mut own).await).0, "eph");
    assert_eq!(delete_of(&next(&mut own).await), "eph");
    assert!(
        tokio::time::timeout(WAIT, own.next())
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn limits_are_checked_before_io() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "").await;
    let caps = s.capabilities();
    assert!(caps.watch_replay && caps.max_value_len >= 1 << 20 && caps.max_txn_ops == 128);
    let big = vec![0u8; MAX_VALUE_LEN + 1];
    let e = s.put("k", &big).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("\"k\""), "{e}");
    let ops: Vec<TxnOp> = (0..=MAX_TXN_OPS)
        .map(|i| TxnOp::Delete {
            key: format!("k/{i}"),
        })
        .collect();
    let e = s.txn(&ops).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let r = s.txn(&ops[..MAX_TXN_OPS]).await.unwrap();
    assert_eq!(r.versions, vec![None; MAX_TXN_OPS]);
    assert_eq!(s.list("").await.unwrap().revision, 0, "nothing was written");
}

/// A hub over a fresh file with one watcher of everything, and a second connection that writes:
/// the tests below drive the poller by hand, so what it has read when is not left to timing.
struct HandDriven {
    _dir: tempfile::TempDir,
    conn: Connection,
    writer: Connection,
    hub: super::hub::Hub,
    rx: mpsc::Receiver<Result<WatchEvent>>,
}

fn hand_driven(channel: usize) -> HandDriven {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut conn = schema::open(&path, WAIT).unwrap();
    let writer = schema::open(&path, WAIT).unwrap();
    let keys = Keys::new("p");
    let mut hub = super::hub::Hub::new(&mut conn, keys.clone()).unwrap();
    let (tx, rx) = mpsc::channel(channel);
    hub.register(&mut conn, keys.scope(""), None, tx).unwrap();
    HandDriven {
        _dir: dir,
        conn,
        writer,
        hub,
        rx,
    }
}

impl HandDriven {
    fn write(&mut self, key: &str, value: &[u8]) {
        let mut t = super::tx::WriteTx::begin(&mut self.writer).unwrap();
        t.write(&format!("p/{key}"), value, None).unwrap();
        t.commit().unwrap();
    }

    /// Reads the whole log and hands the channel what it takes, as one turn of the poller does.
    fn poll(&mut self) {
        self.hub.poll(&mut self.conn).unwrap();
        self.hub.flush();
    }

    /// Polls, then takes what the channel holds, until the hub has nothing queued: every
    /// event the watcher gets, as (Resync reasons, keys of puts).
    fn poll_until_drained(&mut self) -> (Vec<String>, Vec<String>) {
        let (mut resyncs, mut puts) = (Vec::new(), Vec::new());
        loop {
            self.poll();
            while let Ok(ev) = self.rx.try_recv() {
                match ev.unwrap() {
                    WatchEvent::Resync { reason } => resyncs.push(reason),
                    WatchEvent::Put(kv) => puts.push(kv.key),
                    other => panic!("unexpected {other:?}"),
                }
            }
            if !self.hub.has_backlog() {
                return (resyncs, puts);
            }
        }
    }
}

#[test]
fn slow_watcher_gets_resync_not_unbounded_memory() {
    let mut h = hand_driven(super::hub::CHANNEL);
    // More events than the channel and the pending queue hold together, read while the
    // consumer takes none.
    for i in 0..super::hub::CHANNEL + 10_001 {
        h.write(&format!("k/{i}"), b"");
    }
    let (resyncs, puts) = h.poll_until_drained();
    assert_eq!(resyncs.len(), 1, "an overflowing watcher is told to resync");
    assert!(resyncs[0].contains("events"), "{resyncs:?}");
    assert!(
        puts.len() < super::hub::CHANNEL + 10_001,
        "events were dropped, not buffered without bound ({})",
        puts.len()
    );
    // After the Resync the watcher gets live events again.
    h.write("after", b"");
    let (resyncs, puts) = h.poll_until_drained();
    assert!(resyncs.is_empty());
    assert_eq!(puts, ["after"]);
}

#[test]
fn slow_watcher_of_large_values_gets_resync() {
    let mut h = hand_driven(4);
    // Fill the channel with small events, then queue more than the byte bound behind it.
    for i in 0..4 {
        h.write(&format!("small/{i}"), b"");
    }
    let big = vec![7u8; 1 << 20];
    for i in 0..70 {
        h.write(&format!("big/{i}"), &big);
    }
    let (resyncs, puts) = h.poll_until_drained();
    let big_seen = puts.iter().filter(|k| k.starts_with("big/")).count();
    assert_eq!(
        resyncs.len(),
        1,
        "a watcher more than 64 MiB behind is told to resync"
    );
    assert!(resyncs[0].contains("MiB"), "{resyncs:?}");
    assert!(
        big_seen < 70,
        "large events were dropped, not buffered ({big_seen})"
    );
}

#[test]
fn poller_overtaken_by_compaction_reports_resync() {
    use super::hub::{Hub, compact};
    use super::tx::WriteTx;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let mut conn = schema::open(&path, WAIT).unwrap();
    let mut writer = schema::open(&path, WAIT).unwrap();
    let keys = Keys::new("p");
    let mut hub = Hub::new(&mut conn, keys.clone()).unwrap();
    let (tx, mut rx) = mpsc::channel(100);
    hub.register(&mut conn, keys.scope(""), None, tx).unwrap();
    // Another client writes and compacts before this poller reads anything.
    for i in 0..20 {
        let mut t = WriteTx::begin(&mut writer).unwrap();
        t.write("p/k", i.to_string().as_bytes(), None).unwrap();
        t.commit().unwrap();
    }
    compact(&mut writer, 5).unwrap();
    hub.poll(&mut conn).unwrap();
    hub.flush();
    match rx.try_recv().unwrap().unwrap() {
        WatchEvent::Resync { reason } => assert!(reason.contains("compacted"), "{reason}"),
        other => panic!("expected a Resync first, got {other:?}"),
    }
    let mut values = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev.unwrap() {
            WatchEvent::Put(kv) => values.push(String::from_utf8(kv.value).unwrap()),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        values,
        ["15", "16", "17", "18", "19"],
        "the rows left after compaction follow"
    );
}

#[tokio::test]
async fn a_held_write_lock_gives_timeout_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir, "timeout=200ms").await;
    s.put("k", b"before").await.unwrap();
    let blocker = Connection::open(dir.path().join("s.db")).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    let t = std::time::Instant::now();
    let e = s.put("k", b"during").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(
        e.to_string().contains("\"k\"") && e.to_string().contains("timeout"),
        "{e}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    // Reads go on while another client writes.
    assert_eq!(s.get("k").await.unwrap().unwrap().value, b"before");
    blocker.execute_batch("COMMIT").unwrap();
    s.put("k", b"after").await.unwrap();
}

#[tokio::test]
async fn another_clients_commit_wakes_the_poller_without_waiting_for_the_period() {
    let dir = tempfile::tempdir().unwrap();
    // A poll period far longer than the wait below: only inotify can deliver in time.
    let slow = Tuning {
        poll: Duration::from_secs(60),
        ..Tuning::for_ttl(Duration::from_secs(10))
    };
    let watcher = open_tuned(&dir, "", slow).await;
    let writer = open(&dir, "").await;
    let mut w = watcher.watch("k", None).await.unwrap();
    for i in 0..5u8 {
        writer.put("k", &[i]).await.unwrap();
        match tokio::time::timeout(Duration::from_secs(5), w.next()).await {
            Ok(Some(Ok(WatchEvent::Put(kv)))) => assert_eq!(kv.value, [i]),
            other => panic!("write {i} of another client not delivered: {other:?}"),
        }
    }
}
