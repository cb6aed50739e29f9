//! The embedded store (`file://`) against the store conformance suite, including its
//! cross-process checks (a second process runs `overlay-kv` on the same file), plus the ways
//! opening a store file can go wrong.

use std::sync::Arc;
use std::time::Duration;

use overlay_core::ErrorKind;
use overlay_core::store::conformance::{self, PeerProcess};
use overlay_core::store::{self, Backend, KvStore};
use tempfile::TempDir;
use tokio::io::AsyncBufReadExt as _;

/// A store file in a fresh temporary directory, removed with it.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().expect("temporary directory"),
        }
    }

    fn url(&self, query: &str) -> String {
        format!("file://{}/store.db{query}", self.dir.path().display())
    }

    async fn open(&self, query: &str) -> Arc<dyn KvStore> {
        store::connect_str(&self.url(query))
            .await
            .expect("open the embedded store")
    }

    fn peer(&self, query: &str) -> PeerProcess {
        PeerProcess {
            exe: env!("CARGO_BIN_EXE_overlay-kv").into(),
            url: self.url(query),
        }
    }
}

/// One test per single-process conformance check, each on its own file.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let s = Scratch::new();
            let store = s.open("").await;
            assert_eq!(store.backend(), Backend::Embedded);
            conformance::$name(store.as_ref()).await;
            store.close().await.unwrap();
        }
    )*};
}

conformance!(
    put_get_delete,
    list_prefix,
    create_existing_fails,
    compare_and_swap,
    compare_and_delete,
    transactions,
    watch_key_and_prefix,
    watch_from_version,
    large_values,
    oversized_values_refused,
    invalid_keys_refused,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_ephemeral_claims_once() {
    let s = Scratch::new();
    let other = s.open("").await;
    let holder = s.open("").await;
    conformance::create_ephemeral_claims_once(other.as_ref(), holder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_cas_increments() {
    let s = Scratch::new();
    let store = s.open("").await;
    conformance::concurrent_cas_increments(store.as_ref(), 32).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_one_store() {
    let s = Scratch::new();
    let store = s.open("?prefix=shared/by/all").await;
    conformance::run_all(store.as_ref()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_removed_on_close() {
    let s = Scratch::new();
    let observer = s.open("").await;
    let owner = s.open("").await;
    conformance::ephemeral_removed_on_close(observer.as_ref(), owner).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_across_processes() {
    let s = Scratch::new();
    let store = s.open("").await;
    conformance::watch_across_processes(store.as_ref(), &s.peer("")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_removed_when_owner_killed() {
    let s = Scratch::new();
    let observer = s.open("").await;
    let ttl = Duration::from_secs(2);
    conformance::ephemeral_removed_when_owner_killed(observer.as_ref(), &s.peer("?ttl=2s"), ttl)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_race_across_processes() {
    let s = Scratch::new();
    let store = s.open("").await;
    conformance::cas_race_across_processes(store.as_ref(), &s.peer(""), 300).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_race_across_clients_of_one_file() {
    let s = Scratch::new();
    let stores = [s.open("").await, s.open("").await, s.open("").await];
    let key = "counter";
    let each = 100u64;
    let runs = stores.iter().map(|st| async move {
        for _ in 0..each {
            conformance::cas_increment(st.as_ref(), key).await.unwrap();
        }
    });
    futures::future::join_all(runs).await;
    let v = stores[0].get(key).await.unwrap().unwrap();
    assert_eq!(String::from_utf8(v.value).unwrap(), (3 * each).to_string());
}

#[tokio::test]
async fn data_survives_reopening_the_file() {
    let s = Scratch::new();
    let store = s.open("").await;
    let v = store.put("networks/n1", b"net").await.unwrap();
    store.close().await.unwrap();
    let store = s.open("").await;
    let kv = store
        .get("networks/n1")
        .await
        .unwrap()
        .expect("the key survives");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"net"[..], v));
}

/// First use works: a missing directory (as /var/lib/overlay on a new host) is created, private
/// to its owner.
#[tokio::test]
async fn missing_directory_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scratch::new();
    let missing = s.dir.path().join("nope/deeper");
    let store = store::connect_str(&format!("file://{}/store.db", missing.display()))
        .await
        .unwrap();
    store.put("k", b"v").await.unwrap();
    for dir in [s.dir.path().join("nope"), missing.clone()] {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} has mode {mode:o}", dir.display());
    }
    assert!(missing.join("store.db").is_file());
}

#[tokio::test]
async fn foreign_file_is_refused_unchanged() {
    let s = Scratch::new();
    let path = s.dir.path().join("store.db");
    let text = b"this is not a database, it is a shopping list\n".repeat(100);
    std::fs::write(&path, &text).unwrap();
    let e = store::connect_str(&s.url("")).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("not an overlay store"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), text, "the file was modified");
}

#[tokio::test]
async fn other_schemes_are_not_opened_here() {
    let url = store::StoreUrl::parse("zk://127.0.0.1:1").unwrap();
    let e = store::embedded::EmbeddedStore::open(&url)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
}

/// A child process, stopped or not, that is killed when dropped.
struct Peer(tokio::process::Child);

impl Peer {
    fn signal(&self, sig: libc::c_int) {
        let pid = self.0.id().expect("peer still running") as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "signal {sig} to the peer");
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn next_event(w: &mut store::Watch, within: Duration, what: &str) -> store::WatchEvent {
    match tokio::time::timeout(within, w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("{what}: no event within {within:?}: {other:?}"),
    }
}

/// An owner process stopped (SIGSTOP) for longer than its TTL loses its ephemeral key to
/// another process's sweep; once continued it re-creates its lease and puts the key back; when
/// it closes its session the key goes for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_owner_process_recovers_its_ephemeral_key() {
    use std::process::Stdio;
    use store::WatchEvent;
    use tokio::io::AsyncBufReadExt;

    let s = Scratch::new();
    let observer = s.open("").await;
    let mut w = observer.watch("hosts", None).await.unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_overlay-kv"))
        .args([s.url("?ttl=2s").as_str(), "hold", "hosts/h1", "up"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn overlay-kv hold");
    let mut peer = Peer(child);
    let mut lines = tokio::io::BufReader::new(peer.0.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    assert!(
        matches!(&ready, Ok(Ok(Some(l))) if l.starts_with("ready ")),
        "overlay-kv hold did not start: {ready:?}"
    );
    let first = match next_event(&mut w, Duration::from_secs(10), "the put").await {
        WatchEvent::Put(kv) => kv.version,
        other => panic!("expected the put, got {other:?}"),
    };

    peer.signal(libc::SIGSTOP);
    match next_event(&mut w, Duration::from_secs(8), "sweep of the stalled owner").await {
        WatchEvent::Delete { key, .. } => assert_eq!(key, "hosts/h1"),
        other => panic!("expected the delete, got {other:?}"),
    }
    peer.signal(libc::SIGCONT);
    match next_event(&mut w, Duration::from_secs(8), "re-put after the stall").await {
        WatchEvent::Put(kv) => {
            assert_eq!(
                (kv.key.as_str(), kv.value.as_slice()),
                ("hosts/h1", &b"up"[..])
            );
            assert!(kv.version > first);
        }
        other => panic!("expected the key back, got {other:?}"),
    }
    // It stays: the owner renews its new lease (more than a TTL passes without a delete).
    assert!(
        tokio::time::timeout(Duration::from_secs(3), w.next())
            .await
            .is_err()
    );

    drop(peer.0.stdin.take());
    match next_event(
        &mut w,
        Duration::from_secs(10),
        "close of the owner's session",
    )
    .await
    {
        WatchEvent::Delete { key, .. } => assert_eq!(key, "hosts/h1"),
        other => panic!("expected the delete, got {other:?}"),
    }
    let status = tokio::time::timeout(Duration::from_secs(10), peer.0.wait()).await;
    assert!(
        matches!(status, Ok(Ok(st)) if st.success()),
        "overlay-kv hold: {status:?}"
    );
}

/// A writer killed with SIGKILL in the middle of a stream of CAS writes leaves a consistent
/// file: it passes SQLite's integrity check, the counter holds the last committed count, and
/// work goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_killed_mid_stream_leaves_a_consistent_file() {
    let s = Scratch::new();
    let store = s.open("").await;
    store.put("counter", b"0").await.unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_overlay-kv"))
        .args([s.url("").as_str(), "incr", "counter", "1000000", "--report"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn overlay-kv incr");
    // How many increments the writer reports committed (one line each), as it reports them.
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let reported = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let reader = {
        let reported = reported.clone();
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                if l.trim().parse::<u64>().is_ok() {
                    reported.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        })
    };
    let mut peer = Peer(child);
    // Let it get going, then kill it wherever it is.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while reported.load(std::sync::atomic::Ordering::SeqCst) < 100 {
        if let Some(status) = peer.0.try_wait().unwrap() {
            let mut err = String::new();
            let mut pipe = peer.0.stderr.take().unwrap();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut pipe, &mut err).await;
            panic!("overlay-kv incr exited early ({status}): {err}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the peer did not reach 100 increments in 20 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    peer.signal(libc::SIGKILL);
    let _ = peer.0.wait().await;
    // What it printed before it died is all in the pipe.
    reader.await.unwrap();
    let last = reported.load(std::sync::atomic::Ordering::SeqCst);
    store.close().await.unwrap();

    let conn = rusqlite::Connection::open(s.dir.path().join("store.db")).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    drop(conn);
    let store = s.open("").await;
    let n: u64 = String::from_utf8(store.get("counter").await.unwrap().unwrap().value)
        .unwrap()
        .parse()
        .unwrap();
    // From 0, one per increment it reported, or one more: committed, killed before it could
    // say so.
    assert!(
        n == last || n == last + 1,
        "counter at {n}, the writer reported {last} increments"
    );
    assert_eq!(
        conformance::cas_increment(store.as_ref(), "counter")
            .await
            .unwrap(),
        n + 1
    );
}

/// Several clients creating the same fresh file at once all get a working store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_opens_agree_on_one_schema() {
    let s = Scratch::new();
    let url = s.url("");
    let opens = (0..8).map(|_| store::connect_str(&url));
    let stores: Vec<_> = futures::future::join_all(opens)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("every concurrent open succeeds");
    for (i, st) in stores.iter().enumerate() {
        st.put(&format!("k/{i}"), b"x").await.unwrap();
    }
    assert_eq!(stores[0].list("k").await.unwrap().kvs.len(), 8);
}

/// A second process sees what the first wrote, in the file, after the first exited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_written_by_another_process_is_read_here() {
    let s = Scratch::new();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_overlay-kv"))
        .args([s.url("").as_str(), "put", "from/peer", "hello"])
        .output()
        .await
        .expect("run overlay-kv put");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: u64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let store = s.open("").await;
    let kv = store
        .get("from/peer")
        .await
        .unwrap()
        .expect("the peer's key");
    assert_eq!((kv.value.as_slice(), kv.version), (&b"hello"[..], version));
}
