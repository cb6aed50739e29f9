//! The embedded store (`file://`) against the store conformance suite, including its
//! cross-process checks (a second process runs `overlay-kv` on the same file), plus the ways
//! opening a store file can go wrong.

use std::sync::Arc;
use std::time::Duration;

use overlay_core::ErrorKind;
use overlay_core::store::conformance::{self, PeerProcess};
use overlay_core::store::{self, Backend, KvStore};
use tempfile::TempDir;

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
    invalid_keys_refused,
);

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

#[tokio::test]
async fn missing_directory_is_named_and_not_created() {
    let s = Scratch::new();
    let missing = s.dir.path().join("nope/deeper");
    let e = store::connect_str(&format!("file://{}/store.db", missing.display()))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    assert!(
        e.to_string().contains("mkdir -p"),
        "the hint says what to do: {e}"
    );
    assert!(!s.dir.path().join("nope").exists());
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
