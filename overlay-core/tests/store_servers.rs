//! The server-backed stores against real servers: Debian's `etcd-server` and `zookeeper`
//! (3.8, default `jute.maxbuffer`), started by the testkit on free loopback ports, or the ones
//! `OVERLAY_TEST_ETCD` and `OVERLAY_TEST_ZK` name. Each backend runs the same suite
//! ([`server_suite!`]: the conformance checks, a server killed and restarted, a partition, an
//! unreachable server, a dead server among several), then what only it has.
//!
//! No Consul package exists for this build machine, so the tests against a real agent are
//! `#[ignore]`d (cargo reports them as ignored, never as passed) and run with
//! `OVERLAY_TEST_CONSUL=host:port cargo test -p overlay-core --features testing --test
//! store_servers consul -- --ignored` against an agent such as `consul agent -dev`. The check
//! that needs no agent (an unreachable agent fails fast) always runs.

mod common;

/// The tests every server-backed backend passes alike, for test server type `$server` and URL
/// scheme `$scheme`; `resync_ok` when the backend may answer a watch with Resync after an
/// outage (ZooKeeper's journal can be pruned meanwhile).
macro_rules! server_suite {
    ($server:ty, $scheme:literal, $backend:expr, resync_ok: $resync_ok:expr) => {
        crate::conformance_tests!(<$server>::shared());

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn server_killed_and_restarted() {
            let mut server = <$server>::start_local();
            common::server_killed_and_restarted(&mut server, $resync_ok).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn unreachable_server_fails_fast() {
            common::unreachable_server_fails_fast($scheme).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ephemeral_key_comes_back_after_partition() {
            common::ephemeral_key_comes_back_after_partition(<$server>::shared()).await;
        }

        /// One dead server among several does not stop the client, from connect on.
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn several_servers() {
            let server = <$server>::shared();
            let dead = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let url = server.url_with(common::OPTS);
            let scheme = concat!($scheme, "://");
            let url = url.replacen(scheme, &format!("{scheme}127.0.0.1:{dead},"), 1);
            for round in 0..3 {
                let store = common::open(&url).await;
                assert_eq!(store.backend(), $backend);
                for i in 0..5 {
                    let key = format!("several/{round}/k{i}");
                    let v = store.put(&key, b"v").await.unwrap();
                    assert_eq!(store.get(&key).await.unwrap().unwrap().version, v);
                }
                store.close().await.unwrap();
            }
        }
    };
}

mod etcd {
    use std::time::Duration;

    use overlay_core::store::conformance::{next_event, scratch};
    use overlay_core::store::{Backend, WatchEvent};
    use overlay_testkit::EtcdServer;

    use crate::common;

    server_suite!(EtcdServer, "etcd", Backend::Etcd, resync_ok: false);

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
            Ok(Some(Ok(WatchEvent::Put(kv)))) => {
                assert_eq!((kv.key, kv.value), (key, b"me".to_vec()))
            }
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

        let store =
            common::open(&server.url_with("timeout=3s&username=root&password=s3cret")).await;
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
}

mod zookeeper {
    use std::time::Duration;

    use overlay_core::store::conformance::{next_event, scratch};
    use overlay_core::store::{Backend, WatchEvent};
    use overlay_testkit::ZooKeeperServer;

    use crate::common;

    server_suite!(ZooKeeperServer, "zk", Backend::ZooKeeper, resync_ok: true);

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
}

mod consul {
    use std::time::Duration;

    use overlay_core::store::conformance::{self, PeerProcess};
    use overlay_core::store::{self, KvStore};

    use crate::common;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_agent_fails_fast() {
        common::unreachable_server_fails_fast("consul").await;
    }

    /// Why the agent tests are ignored by default.
    const NEEDS_AGENT: &str =
        "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored";

    /// The agent's address; fails the test when none is named (it was run with `--ignored`).
    fn agent() -> String {
        match std::env::var("OVERLAY_TEST_CONSUL") {
            Ok(a) if !a.trim().is_empty() => a.trim().to_string(),
            _ => overlay_testkit::missing("a Consul agent", NEEDS_AGENT),
        }
    }

    fn url(agent: &str) -> String {
        // Consul's shortest session TTL is 10 s.
        format!(
            "consul://{agent}/{}?timeout=5s&ttl=10s",
            overlay_testkit::unique_prefix()
        )
    }

    async fn open(url: &str) -> std::sync::Arc<dyn KvStore> {
        store::connect_str(url)
            .await
            .unwrap_or_else(|e| panic!("connect {url}: {e}"))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored"]
    async fn conformance_suite() {
        let agent = agent();
        let store = open(&url(&agent)).await;
        conformance::run_all(&*store).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored"]
    async fn ephemeral_keys() {
        let agent = agent();
        let u = url(&agent);
        let observer = open(&u).await;
        conformance::ephemeral_removed_on_close(&*observer, open(&u).await).await;
        let peer = PeerProcess {
            exe: env!("CARGO_BIN_EXE_overlay-kv").into(),
            url: u.clone(),
        };
        // Consul invalidates a session between TTL and twice the TTL after its last renewal.
        conformance::ephemeral_removed_when_owner_killed(
            &*observer,
            &peer,
            Duration::from_secs(20),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored"]
    async fn across_processes() {
        let agent = agent();
        let u = url(&agent);
        let store = open(&u).await;
        let peer = PeerProcess {
            exe: env!("CARGO_BIN_EXE_overlay-kv").into(),
            url: u,
        };
        conformance::watch_across_processes(&*store, &peer).await;
        conformance::cas_race_across_processes(&*store, &peer, 40).await;
    }
}
