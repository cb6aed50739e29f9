//! Shared by the real-server store tests: the conformance suite as one test per check, and
//! fault tests that kill and restart a server.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay_core::ErrorKind;
use overlay_core::store::conformance::{self, PeerProcess, next_event};
use overlay_core::store::{self, KvStore, Watch, WatchEvent};
use overlay_testkit::{EtcdServer, ZooKeeperServer};

/// Options for test stores: short deadlines and TTLs keep the suite fast.
pub(crate) const OPTS: &str = "timeout=3s&ttl=2s";
pub(crate) const TTL: Duration = Duration::from_secs(2);

/// A server a fault test can kill and restart.
pub(crate) trait TestServer {
    fn url_with(&self, options: &str) -> String;
    fn kill(&mut self);
    fn restart(&mut self);
}

impl TestServer for EtcdServer {
    fn url_with(&self, options: &str) -> String {
        EtcdServer::url_with(self, options)
    }
    fn kill(&mut self) {
        EtcdServer::kill(self)
    }
    fn restart(&mut self) {
        EtcdServer::restart(self)
    }
}

impl TestServer for ZooKeeperServer {
    fn url_with(&self, options: &str) -> String {
        ZooKeeperServer::url_with(self, options)
    }
    fn kill(&mut self) {
        ZooKeeperServer::kill(self)
    }
    fn restart(&mut self) {
        ZooKeeperServer::restart(self)
    }
}

pub(crate) async fn open(url: &str) -> Arc<dyn KvStore> {
    store::connect_str(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

pub(crate) fn peer(url: &str) -> PeerProcess {
    PeerProcess {
        exe: env!("CARGO_BIN_EXE_overlay-kv").into(),
        url: url.to_string(),
    }
}

/// Generates one `#[tokio::test]` per conformance check, each on its own prefix of the
/// server `$shared()` returns.
#[macro_export]
macro_rules! conformance_tests {
    ($shared:expr) => {
        macro_rules! check {
            ($name:ident) => {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let server = $shared;
                    let store = common::open(&server.url_with(common::OPTS)).await;
                    overlay_core::store::conformance::$name(&*store).await;
                    store.close().await.unwrap();
                }
            };
        }
        check!(put_get_delete);
        check!(list_prefix);
        check!(create_existing_fails);
        check!(compare_and_swap);
        check!(compare_and_delete);
        check!(transactions);
        check!(watch_key_and_prefix);
        check!(watch_from_version);
        check!(large_values);
        check!(oversized_values_refused);
        check!(invalid_keys_refused);

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn create_ephemeral_claims_once() {
            let server = $shared;
            let url = server.url_with(common::OPTS);
            let other = common::open(&url).await;
            let holder = common::open(&url).await;
            overlay_core::store::conformance::create_ephemeral_claims_once(&*other, holder).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_cas_increments() {
            let server = $shared;
            let store = common::open(&server.url_with(common::OPTS)).await;
            overlay_core::store::conformance::concurrent_cas_increments(&*store, 16).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ephemeral_removed_on_close() {
            let server = $shared;
            let url = server.url_with(common::OPTS);
            let observer = common::open(&url).await;
            let owner = common::open(&url).await;
            overlay_core::store::conformance::ephemeral_removed_on_close(&*observer, owner).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn watch_across_processes() {
            let server = $shared;
            let url = server.url_with(common::OPTS);
            let store = common::open(&url).await;
            overlay_core::store::conformance::watch_across_processes(&*store, &common::peer(&url))
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cas_race_across_processes() {
            let server = $shared;
            let url = server.url_with(common::OPTS);
            let store = common::open(&url).await;
            overlay_core::store::conformance::cas_race_across_processes(
                &*store,
                &common::peer(&url),
                40,
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ephemeral_removed_when_owner_killed() {
            let server = $shared;
            let url = server.url_with(common::OPTS);
            let store = common::open(&url).await;
            overlay_core::store::conformance::ephemeral_removed_when_owner_killed(
                &*store,
                &common::peer(&url),
                common::TTL,
            )
            .await;
        }
    };
}

/// Asserts that `r` failed as an outage should, within the deadline.
pub(crate) fn assert_outage<T: std::fmt::Debug>(
    what: &str,
    r: overlay_core::Result<T>,
    took: Duration,
) {
    let e = r.expect_err(&format!("{what} must fail while the server is down"));
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{what} while the server is down: {e}"
    );
    assert!(
        took <= DEADLINE + SLACK,
        "{what} took {took:?}, over the {DEADLINE:?} timeout"
    );
}

const DEADLINE: Duration = Duration::from_secs(2);
const SLACK: Duration = Duration::from_millis(1500);

/// Kills the server while a watch is open and CAS operations are in flight: every operation
/// fails with Unavailable or Timeout within the URL timeout, none hangs. After a restart the
/// same client works again and the watch reports every change made since, in order, or a
/// Resync (only allowed when `resync_ok`).
pub(crate) async fn server_killed_and_restarted(server: &mut impl TestServer, resync_ok: bool) {
    let url = server.url_with("timeout=2s&ttl=10s");
    let store = open(&url).await;
    let other_url = url.clone();
    let p = conformance::scratch("fault");
    let counter = format!("{p}/counter");
    let mut watch = store.watch(&p, None).await.unwrap();
    let v0 = store.put(&counter, b"0").await.unwrap();
    expect_put(&mut watch, &counter, b"0").await;

    // CAS operations in flight while the server dies.
    let racers: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                let end = Instant::now() + Duration::from_secs(2);
                while Instant::now() < end {
                    let t = Instant::now();
                    let r = conformance::cas_increment(&*store, &counter).await;
                    outcomes.push((r.map_err(|e| (e.kind(), e.to_string())), t.elapsed()));
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.kill();
    let killed = Instant::now();
    for r in racers {
        let outcomes = tokio::time::timeout(Duration::from_secs(15), r)
            .await
            .expect("a CAS hung after the server was killed")
            .unwrap();
        for (r, took) in outcomes {
            if let Err((kind, msg)) = r {
                assert!(
                    matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout),
                    "CAS during the kill failed with {kind:?}: {msg}"
                );
            }
            assert!(took <= 2 * (DEADLINE + SLACK), "one CAS took {took:?}");
        }
    }
    assert!(killed.elapsed() < Duration::from_secs(12));

    let t = Instant::now();
    let r = store.get(&counter).await;
    assert_outage("get", r, t.elapsed());
    let t = Instant::now();
    let r = store.compare_and_swap(&counter, b"x", v0).await;
    assert_outage("compare-and-swap", r, t.elapsed());
    let t = Instant::now();
    let r = store.list(&p).await;
    assert_outage("list", r, t.elapsed());

    server.restart();
    // Changes made by another client right after the restart, while the watch reconnects.
    let other = open(&other_url).await;
    let before = other
        .get(&counter)
        .await
        .unwrap()
        .expect("counter survives the restart");
    let mut want = Vec::new();
    for i in 0..5 {
        let key = format!("{p}/after-{i}");
        let v = other.put(&key, b"x").await.unwrap();
        want.push((key, v));
    }
    other.delete(&counter).await.unwrap();

    // Events from before the kill may come first (the CAS increments); then every change.
    let mut got_resync = false;
    let mut seen = Vec::new();
    let mut deleted = false;
    while seen.len() < want.len() || !deleted {
        match next_event(&mut watch, "watch after restart").await {
            WatchEvent::Put(kv) if kv.key.starts_with(&format!("{p}/after-")) => {
                seen.push((kv.key, kv.version))
            }
            WatchEvent::Put(kv) => assert_eq!(kv.key, counter, "unexpected {kv:?}"),
            WatchEvent::Delete { key, .. } => {
                assert_eq!(key, counter);
                deleted = true;
            }
            WatchEvent::Resync { reason } => {
                assert!(resync_ok, "unexpected Resync: {reason}");
                got_resync = true;
                // After a Resync the watcher re-lists; the listing must hold every change.
                let listing = store.list(&p).await.unwrap();
                let keys: Vec<(String, u64)> = listing
                    .kvs
                    .iter()
                    .filter(|kv| kv.key.contains("/after-"))
                    .map(|kv| (kv.key.clone(), kv.version))
                    .collect();
                if keys == want && listing.kvs.iter().all(|kv| kv.key != counter) {
                    break;
                }
            }
        }
    }
    if !got_resync {
        assert_eq!(seen, want, "the watch saw every change, in order");
    }
    // The same client works again.
    assert_eq!(store.get(&counter).await.unwrap(), None);
    let _ = before;
    store.close().await.unwrap();
    other.close().await.unwrap();
}

async fn expect_put(watch: &mut Watch, key: &str, value: &[u8]) {
    match next_event(watch, "watch").await {
        WatchEvent::Put(kv) => assert_eq!((kv.key.as_str(), kv.value.as_slice()), (key, value)),
        other => panic!("expected a put of {key}, got {other:?}"),
    }
}

/// A store whose servers are all unreachable fails to connect within its timeout.
pub(crate) async fn unreachable_server_fails_fast(scheme: &str) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("{scheme}://127.0.0.1:{port}/x?timeout=1s");
    let t = Instant::now();
    let e = store::connect_str(&url)
        .await
        .expect_err("nothing listens there");
    assert!(
        matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
        "{e}"
    );
    // A bound that only catches a hang: the refusal answers at once.
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "connect took {:?}",
        t.elapsed()
    );
    let text = e.to_string();
    assert!(
        text.contains(&port.to_string()),
        "the error names the server: {e}"
    );
    // One sentence a person can act on, never a client library's Debug dump.
    for dump in [
        "tonic",
        "Os {",
        "ConnectError",
        "code:",
        "source:",
        "Error(",
    ] {
        assert!(!text.contains(dump), "{dump:?} in {text}");
    }
    if e.kind() == ErrorKind::Unavailable {
        assert!(text.contains("connection refused"), "{text}");
    }
}

/// A client cut off from a running server longer than its TTL loses its session or lease:
/// the server deletes its ephemeral key (a watcher sees the delete), its operations fail
/// with Unavailable or Timeout meanwhile, and once the network is back the client puts its
/// ephemeral key again by itself.
pub(crate) async fn ephemeral_key_comes_back_after_partition(server: &impl TestServer) {
    let direct = server.url_with("timeout=1s&ttl=2s");
    let (scheme, rest) = direct.split_once("://").unwrap();
    let (endpoints, path) = rest.split_once('/').unwrap();
    let proxy = overlay_testkit::TcpProxy::start(endpoints).expect("start a TCP proxy");
    let cut_off = format!("{scheme}://{}/{path}", proxy.addr());
    let owner = open(&cut_off).await;
    let observer = open(&direct).await;
    let key = format!("{}/host", conformance::scratch("partition"));
    owner.put_ephemeral(&key, b"me").await.unwrap();
    let mut w = observer.watch(&key, None).await.unwrap();

    proxy.cut();
    let t = Instant::now();
    let r = owner.get(&key).await;
    assert_outage("get through a cut network", r, t.elapsed());
    let limit = Duration::from_secs(12);
    match tokio::time::timeout(limit, w.next()).await {
        Ok(Some(Ok(WatchEvent::Delete { key: k, .. }))) => assert_eq!(k, key),
        other => panic!("the server did not drop {key} within {limit:?}: {other:?}"),
    }
    proxy.restore();
    let limit = Duration::from_secs(20);
    match tokio::time::timeout(limit, w.next()).await {
        Ok(Some(Ok(WatchEvent::Put(kv)))) => {
            assert_eq!((kv.key, kv.value), (key.clone(), b"me".to_vec()))
        }
        other => panic!("the owner did not put {key} again within {limit:?}: {other:?}"),
    }
    assert_eq!(observer.get(&key).await.unwrap().unwrap().value, b"me");
    owner.close().await.unwrap();
    observer.close().await.unwrap();
}
