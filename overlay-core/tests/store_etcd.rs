//! The etcd backend against a real etcd (Debian's `etcd-server`), started by the testkit on a
//! free loopback port, or the one `OVERLAY_TEST_ETCD` names.

mod common;

use std::time::Duration;

use overlay_core::store::conformance::{next_event, scratch};
use overlay_core::store::{Backend, WatchEvent};
use overlay_testkit::EtcdServer;

conformance_tests!(EtcdServer::shared());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_killed_and_restarted() {
    let mut server = EtcdServer::start_local();
    common::server_killed_and_restarted(&mut server, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_server_fails_fast() {
    common::unreachable_server_fails_fast("etcd").await;
}

/// One dead endpoint among several does not stop the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints() {
    let server = EtcdServer::shared();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = server.url_with(common::OPTS);
    let url = url.replacen("etcd://", &format!("etcd://127.0.0.1:{dead},"), 1);
    let store = common::open(&url).await;
    assert_eq!(store.backend(), Backend::Etcd);
    for i in 0..10 {
        let key = format!("k{i}");
        let v = store.put(&key, b"v").await.unwrap();
        assert_eq!(store.get(&key).await.unwrap().unwrap().version, v);
    }
}

/// A compacted history gives a Resync, and the watch goes on live afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_from_compacted_revision_resyncs() {
    let server = EtcdServer::shared();
    let store = common::open(&server.url_with(common::OPTS)).await;
    let p = scratch("compacted");
    let v1 = store.put(&format!("{p}/a"), b"1").await.unwrap();
    let v2 = store.put(&format!("{p}/a"), b"2").await.unwrap();
    let mut raw = etcd_client::Client::connect([server.endpoints()], None)
        .await
        .unwrap();
    raw.compact(v2 as i64, None).await.unwrap();
    let mut w = store.watch(&p, Some(v1 - 1)).await.unwrap();
    match next_event(&mut w, "watch from a compacted revision").await {
        WatchEvent::Resync { reason } => assert!(reason.contains("compacted"), "{reason}"),
        other => panic!("expected Resync, got {other:?}"),
    }
    let v3 = store.put(&format!("{p}/a"), b"3").await.unwrap();
    match next_event(&mut w, "live after Resync").await {
        WatchEvent::Put(kv) => assert_eq!(kv.version, v3),
        other => panic!("expected the live put, got {other:?}"),
    }
}

/// If the lease expires while the client lives (here: revoked behind its back), the client
/// grants a new one and puts its ephemeral keys again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_key_comes_back_after_lease_loss() {
    let server = EtcdServer::shared();
    let url = server.url_with(common::OPTS);
    let store = common::open(&url).await;
    let observer = common::open(&url).await;
    let key = format!("{}/host", scratch("lease_loss"));
    store.put_ephemeral(&key, b"me").await.unwrap();
    let mut w = observer.watch(&key, None).await.unwrap();
    let mut raw = etcd_client::Client::connect([server.endpoints()], None)
        .await
        .unwrap();
    let full = format!(
        "{}/{key}",
        url.split('/').nth(3).unwrap().split('?').next().unwrap()
    );
    let got = raw.get(full, None).await.unwrap();
    let lease = got.kvs()[0].lease();
    assert_ne!(lease, 0, "the ephemeral key rides a lease");
    raw.lease_revoke(lease).await.unwrap();
    match next_event(&mut w, "revoked lease").await {
        WatchEvent::Delete { key: k, .. } => assert_eq!(k, key),
        other => panic!("expected the delete, got {other:?}"),
    }
    let deadline = Duration::from_secs(5) + common::TTL;
    match tokio::time::timeout(deadline, w.next()).await {
        Ok(Some(Ok(WatchEvent::Put(kv)))) => assert_eq!((kv.key, kv.value), (key, b"me".to_vec())),
        other => panic!("the key was not put again within {deadline:?}: {other:?}"),
    }
    store.close().await.unwrap();
}

/// TLS files that cannot be read give a clear error before any connection.
#[tokio::test]
async fn unreadable_tls_files_are_reported() {
    let e = overlay_core::store::connect_str("etcd://127.0.0.1:1/x?ca=/nonexistent/ca.pem")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), overlay_core::ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_key_comes_back_after_partition() {
    let server = EtcdServer::shared();
    common::ephemeral_key_comes_back_after_partition(server).await;
}

/// With etcd authentication on, the URL's username and password are used, and wrong or
/// missing credentials give PermissionDenied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_and_password() {
    let server = EtcdServer::start_local();
    let mut admin = etcd_client::Client::connect([server.endpoints()], None)
        .await
        .unwrap();
    admin.user_add("root", "s3cret", None).await.unwrap();
    admin.user_grant_role("root", "root").await.unwrap();
    admin.auth_enable().await.unwrap();

    let store = common::open(&server.url_with("timeout=3s&username=root&password=s3cret")).await;
    let v = store.put("k", b"v").await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().version, v);
    for opts in ["timeout=3s&username=root&password=wrong", "timeout=3s"] {
        let e = overlay_core::store::connect_str(&server.url_with(opts))
            .await
            .unwrap_err();
        assert_eq!(
            e.kind(),
            overlay_core::ErrorKind::PermissionDenied,
            "{opts}: {e}"
        );
        assert!(
            !e.to_string().contains("wrong"),
            "the password is not echoed: {e}"
        );
    }
}
