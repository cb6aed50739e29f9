//! The ZooKeeper backend against a real ZooKeeper 3.8 (Debian's `zookeeper`), started by the
//! testkit on a free loopback port (with the default `jute.maxbuffer`), or the one
//! `OVERLAY_TEST_ZK` names.

mod common;

use std::time::Duration;

use overlay_core::store::conformance::{next_event, scratch};
use overlay_core::store::{Backend, WatchEvent};
use overlay_testkit::ZooKeeperServer;

conformance_tests!(ZooKeeperServer::shared());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted() {
    let mut server = ZooKeeperServer::start_local();
    common::server_killed_and_restarted(&mut server, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_fast() {
    common::unreachable_server_fails_fast("zk").await;
}

/// Keys and directories: a key with keys below it survives their deletion and vice versa,
/// and a directory node made for a deeper key is not a key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_parent_nodes() {
    let server = ZooKeeperServer::shared();
    let store = common::open(&server.url_with(common::OPTS)).await;
    assert_eq!(store.backend(), Backend::ZooKeeper);
    let p = scratch("parents");
    store.put(&format!("{p}/a/b/c"), b"deep").await.unwrap();
    assert_eq!(
        store.get(&format!("{p}/a")).await.unwrap(),
        None,
        "a parent is not a key"
    );
    assert_eq!(store.list(&p).await.unwrap().kvs.len(), 1);
    store.create(&format!("{p}/a"), b"top").await.unwrap();
    assert!(store.delete(&format!("{p}/a")).await.unwrap());
    assert_eq!(
        store
            .get(&format!("{p}/a/b/c"))
            .await
            .unwrap()
            .unwrap()
            .value,
        b"deep"
    );
    assert!(
        !store.delete(&format!("{p}/a/b")).await.unwrap(),
        "a parent is not a key"
    );
    let v = store.put(&format!("{p}/a"), b"again").await.unwrap();
    assert!(store.delete(&format!("{p}/a/b/c")).await.unwrap());
    assert_eq!(
        store.get(&format!("{p}/a")).await.unwrap().unwrap().version,
        v
    );
    // A persistent key without keys below it can become ephemeral; nothing can go below it.
    store
        .put(&format!("{p}/leaf"), b"persistent")
        .await
        .unwrap();
    store
        .put_ephemeral(&format!("{p}/leaf"), b"ephemeral")
        .await
        .unwrap();
    let e = store
        .put(&format!("{p}/leaf/child"), b"x")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), overlay_core::ErrorKind::InvalidArgument, "{e}");
    let e = store
        .put_ephemeral(&format!("{p}/a"), b"x")
        .await
        .unwrap_err();
    assert_eq!(
        e.kind(),
        overlay_core::ErrorKind::Unsupported,
        "a key with keys below: {e}"
    );
    store.close().await.unwrap();
}

/// A watch from a version older than the pruned journal starts with a Resync; a watch from
/// a recent version replays exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_replays_from_the_journal() {
    let server = ZooKeeperServer::shared();
    let store = common::open(&server.url_with(common::OPTS)).await;
    let p = scratch("journal");
    let mut versions = Vec::new();
    for i in 0..5 {
        versions.push(
            store
                .put(&format!("{p}/k"), format!("{i}").as_bytes())
                .await
                .unwrap(),
        );
    }
    let mut w = store.watch(&p, Some(versions[1])).await.unwrap();
    for (i, v) in versions.iter().enumerate().skip(2) {
        match next_event(&mut w, "replay").await {
            WatchEvent::Put(kv) => {
                assert_eq!((kv.value, kv.version), (format!("{i}").into_bytes(), *v))
            }
            other => panic!("expected put {i}, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_key_comes_back_after_partition() {
    let server = ZooKeeperServer::shared();
    common::ephemeral_key_comes_back_after_partition(server).await;
}

/// One dead server among several does not stop the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_servers() {
    let server = ZooKeeperServer::shared();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = server.url_with(common::OPTS);
    let url = url.replacen("zk://", &format!("zk://127.0.0.1:{dead},"), 1);
    for _ in 0..3 {
        let store = common::open(&url).await;
        let v = store.put("k", b"v").await.unwrap();
        assert_eq!(store.get("k").await.unwrap().unwrap().version, v);
        store.close().await.unwrap();
    }
}

/// A 1 MiB value, over what a default server (jute.maxbuffer 1 MiB, and each write carries the
/// value twice) takes in one packet, is refused before it is sent: the session, and with it
/// this client's ephemeral host record, survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_put_is_refused_and_the_session_survives() {
    let server = ZooKeeperServer::shared();
    let url = server.url_with(common::OPTS);
    let store = common::open(&url).await;
    let observer = common::open(&url).await;
    store.put_ephemeral("hosts/me", b"alive").await.unwrap();
    let e = store.put("big", &vec![0u8; 1 << 20]).await.unwrap_err();
    assert_eq!(e.kind(), overlay_core::ErrorKind::InvalidArgument, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("jute.maxbuffer") && text.contains("max_value="),
        "{text}"
    );
    // Past the session timeout: a dropped session would have taken the record with it.
    tokio::time::sleep(common::TTL + Duration::from_secs(1)).await;
    let kv = observer.get("hosts/me").await.unwrap();
    assert_eq!(kv.map(|kv| kv.value), Some(b"alive".to_vec()));
    store
        .put("small", b"ok")
        .await
        .expect("the client still works");
}
