//! The server-backed stores where their users run them: 3-member etcd clusters and 3-node
//! ZooKeeper ensembles (the testkit's, each member in a namespace of its own, so these tests
//! need root), and secured servers.
//!
//! Faults, on each backend: a follower partitioned away changes nothing a client sees; with
//! quorum lost every call fails with `Unavailable` or `Timeout` naming the store, within its
//! timeout, and the same client works again when the members return; ephemeral keys outlive a
//! leader's death. (The leader killed under the IPAM stress is in `ipam_stress`; agents, kernel
//! state and traffic through a quorum loss are in the root crate's `cluster` tests.)
//!
//! Secured: the conformance suite through an etcd cluster serving TLS only, with client
//! certificates and user/password authentication, and through ZooKeeper with digest
//! credentials; a wrong CA, a missing or foreign client certificate and a wrong password each
//! fail with `PermissionDenied` or `Unavailable` and a hint naming the option to fix.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use overlay_core::ErrorKind;
use overlay_core::store::conformance::{next_event, reads_follow_acknowledged_writes, scratch};
use overlay_core::store::{KvStore, WatchEvent};
use overlay_testkit::{EtcdCluster, ZooKeeperCluster};

/// Short deadlines and TTLs, as in the single-server fault tests.
const OPTS: &str = "timeout=2s&ttl=2s";
const TTL: Duration = Duration::from_secs(2);

/// What the fault tests do to a cluster.
trait TestCluster {
    fn url_with(&self, options: &str) -> String;
    fn member_urls(&self, options: &str) -> Vec<String>;
    fn wait_leader(&self, timeout: Duration) -> Option<usize>;
    fn kill(&mut self, i: usize);
    fn restart(&mut self, i: usize);
    fn partition(&mut self, i: usize);
    fn heal(&mut self, i: usize);
    fn name(&self) -> &'static str;
}

macro_rules! test_cluster {
    ($t:ty, $name:literal) => {
        impl TestCluster for $t {
            fn url_with(&self, options: &str) -> String {
                <$t>::url_with(self, options)
            }
            fn member_urls(&self, options: &str) -> Vec<String> {
                <$t>::member_urls(self, options)
            }
            fn wait_leader(&self, timeout: Duration) -> Option<usize> {
                <$t>::wait_leader(self, timeout)
            }
            fn kill(&mut self, i: usize) {
                <$t>::kill(self, i)
            }
            fn restart(&mut self, i: usize) {
                <$t>::restart(self, i)
            }
            fn partition(&mut self, i: usize) {
                <$t>::partition(self, i)
            }
            fn heal(&mut self, i: usize) {
                <$t>::heal(self, i)
            }
            fn name(&self) -> &'static str {
                $name
            }
        }
    };
}
test_cluster!(EtcdCluster, "etcd");
test_cluster!(ZooKeeperCluster, "ZooKeeper");

fn leader_of(c: &impl TestCluster) -> usize {
    c.wait_leader(Duration::from_secs(30))
        .unwrap_or_else(|| panic!("the {} cluster elects a leader", c.name()))
}

/// Runs `f` until it succeeds or `limit` passes; how long it took.
async fn until_ok<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> (T, Duration)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = overlay_core::Result<T>>,
{
    let t0 = Instant::now();
    loop {
        match f().await {
            Ok(v) => return (v, t0.elapsed()),
            Err(e) if t0.elapsed() > limit => panic!("{what}: still failing after {limit:?}: {e}"),
            Err(e) => assert!(
                matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout),
                "{what}: only Unavailable or Timeout may come while the cluster recovers: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A follower cut off from everybody (both ways, still running) for three TTLs, with two
/// clients putting, getting and watching, and an ephemeral key.
///
/// Asserted on etcd (requests kept on the leader): every call succeeds, and no round of a put
/// and a get takes 2 s (none waits on the follower), and the leader stays when the follower
/// returns. On ZooKeeper a client's session lives on one server, and a client whose server is
/// the partitioned one moves to another: asserted, a call may fail only within the first
/// [`MOVE_WINDOW`] of the partition, only with `Unavailable` or `Timeout`, within the store's
/// timeout (a read lost with its connection is asked again until then, and a write in flight
/// cannot be known applied or not); every call after the window succeeds. On both, each
/// successful get of a key just put returns that put (the read contract, synced where reads
/// may lag), the watch sees every put that succeeded, in order, and the ephemeral key stays.
async fn follower_partitioned(c: &mut impl TestCluster) {
    let strict = c.name() == "etcd";
    let url = c.url_with(OPTS);
    let (a, b) = (common::open(&url).await, common::open(&url).await);
    let p = scratch("partition");
    let eph = format!("{p}/host-a");
    a.put_ephemeral(&eph, b"alive").await.unwrap();
    let mut w = b.watch(&format!("{p}/k"), None).await.unwrap();
    let leader = leader_of(c);
    let follower = (leader + 1) % 3;
    c.partition(follower);
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let (mut rounds, mut failed_puts, mut failed_reads) = (0, 0, 0);
    let mut undecided = std::collections::BTreeSet::new();
    let tolerate = |what: &str, e: overlay_core::Error, took: Duration| {
        assert!(
            !strict && t0.elapsed() < MOVE_WINDOW,
            "{what} {:?} into the partition: {e}",
            t0.elapsed()
        );
        common::assert_outage(what, Err::<(), _>(e), took);
    };
    while t0.elapsed() < 3 * TTL {
        let key = format!("{p}/k/{rounds}");
        rounds += 1;
        let t = Instant::now();
        let v = match a.put(&key, b"v").await {
            Ok(v) => v,
            Err(e) => {
                tolerate("a put", e, t.elapsed());
                undecided.insert(key);
                failed_puts += 1;
                continue;
            }
        };
        // The read contract: current, or (where reads may lag: ZooKeeper's leader) after a sync.
        let read = async {
            let got = b.get(&key).await?;
            if got.as_ref().map(|kv| kv.version) == Some(v) || b.capabilities().current_reads {
                return Ok(got);
            }
            b.sync().await?;
            b.get(&key).await
        };
        let got = match read.await {
            Ok(got) => got,
            Err(e) => {
                tolerate("a get", e, t.elapsed());
                // Its put is not awaited from the watch.
                undecided.insert(key);
                failed_reads += 1;
                continue;
            }
        };
        slowest = slowest.max(t.elapsed());
        assert_eq!(got.map(|kv| kv.version), Some(v), "b reads a's put {key}");
        loop {
            match next_event(&mut w, "the watch with a follower partitioned").await {
                WatchEvent::Put(kv) if kv.key == key => {
                    assert_eq!(kv.version, v);
                    break;
                }
                WatchEvent::Put(kv) if undecided.contains(&kv.key) => {}
                WatchEvent::Resync { .. } if !strict => {}
                other => panic!("the watch with a follower partitioned, awaiting {key}: {other:?}"),
            }
        }
        match b.get(&eph).await {
            Ok(found) => assert!(
                found.is_some(),
                "the ephemeral key is gone {:?} into the partition",
                t0.elapsed()
            ),
            Err(e) => {
                tolerate("a get of the ephemeral key", e, t.elapsed());
                failed_reads += 1;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.heal(follower);
    // The member's return changes nothing either: etcd's members run with pre-vote (as etcd
    // 3.5 does by default), so the term the member raised while cut off calls no election.
    // Without it the cluster had no leader for 1.1-2.7 s of the 4 s after the heal (starting
    // 0.05-2.1 s after it), and the close just below failed to revoke its lease in 2 of 20
    // runs.
    if strict {
        let t = Instant::now();
        while t.elapsed() < HEALED_WATCH {
            let now = c.wait_leader(Duration::ZERO);
            assert_eq!(
                now,
                Some(leader),
                "etcd's leader {:?} after the follower's return",
                t.elapsed()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            slowest < Duration::from_secs(2),
            "a put and a get took {slowest:?} with a follower partitioned: the client waited on it"
        );
    }
    eprintln!(
        "{}: {rounds} rounds of put, get and watch with a follower partitioned; {failed_puts} \
         puts and {failed_reads} reads failed; slowest round that succeeded {slowest:?}",
        c.name()
    );
    a.close().await.unwrap();
    b.close().await.unwrap();
}

/// The store's read contract where it can break: two clients, each on one member, one writing
/// and the other reading at once: leader to follower (a follower that was not in the write's
/// quorum may not have applied it yet), follower to leader (ZooKeeper's leader applies a
/// commit after sending it to the followers, so a follower's client can be answered first),
/// and follower to follower.
async fn reads_across_servers(c: &impl TestCluster) {
    let leader = leader_of(c);
    let urls = c.member_urls(OPTS);
    let mut clients = Vec::new();
    for url in &urls {
        clients.push(common::open(url).await);
    }
    let (f1, f2) = ((leader + 1) % 3, (leader + 2) % 3);
    let role = |m: usize| if m == leader { "leader" } else { "follower" };
    for (w, r) in [(leader, f1), (f1, leader), (f1, f2)] {
        let lagged = reads_follow_acknowledged_writes(&*clients[w], &*clients[r], ROUNDS).await;
        eprintln!(
            "{}: member {w} ({}) writes, member {r} ({}) reads: of the reads without a sync, \
             {} of the writer's {ROUNDS} and {} of the reader's {} came from before the write",
            c.name(),
            role(w),
            role(r),
            lagged.0,
            lagged.1,
            2 * ROUNDS
        );
        // Every read on ZooKeeper is preceded by its `sync`, which makes a follower current:
        // only the leader's reads may lag.
        for (member, n) in [(w, lagged.0), (r, lagged.1)] {
            assert!(
                member == leader || n == 0,
                "{}: {n} reads of follower {member} came from before a write",
                c.name()
            );
        }
    }
    for client in clients {
        client.close().await.unwrap();
    }
}

/// How long etcd's leader is watched after a partitioned follower returns: more than the
/// members' randomized election timeout (1-2 s by default), by which the returning member
/// would have called its disrupting vote.
const HEALED_WATCH: Duration = Duration::from_secs(3);

/// Rounds of [`reads_across_servers`] per pair.
const ROUNDS: usize = 150;

/// How long a ZooKeeper client on a partitioned server may take to move to another: its
/// session's ping goes unanswered for a fraction of the TTL, then it reconnects elsewhere.
const MOVE_WINDOW: Duration = Duration::from_secs(4);

/// Two members of three killed: calls fail with Unavailable or Timeout within the timeout,
/// naming the store; once they are back, the same clients work again without being reopened,
/// the watch reports what changed, and the ephemeral key is there.
async fn quorum_lost(c: &mut impl TestCluster) {
    let url = c.url_with(OPTS);
    let store = common::open(&url).await;
    let p = scratch("quorum");
    let eph = format!("{p}/host");
    store.put_ephemeral(&eph, b"me").await.unwrap();
    let mut w = store.watch(&format!("{p}/k"), None).await.unwrap();
    let leader = leader_of(c);
    let down = [leader, (leader + 1) % 3];
    for m in down {
        c.kill(m);
    }
    for what in ["put", "get"] {
        let t = Instant::now();
        let r = match what {
            "put" => store.put(&format!("{p}/k/lost"), b"x").await.map(|_| ()),
            _ => store.get(&format!("{p}/k/lost")).await.map(|_| ()),
        };
        let took = t.elapsed();
        let message = r
            .as_ref()
            .err()
            .map(ToString::to_string)
            .unwrap_or_default();
        common::assert_outage(&format!("{what} without quorum"), r, took);
        assert!(
            message.contains(c.name()),
            "{what} without quorum names the store: {message}"
        );
    }
    for m in down {
        c.restart(m);
    }
    let key = format!("{p}/k/back");
    let (v, took) = until_ok(
        "a put after the quorum is back",
        Duration::from_secs(30),
        || store.put(&key, b"back"),
    )
    .await;
    loop {
        match next_event(&mut w, "the watch after the quorum is back").await {
            WatchEvent::Put(kv) if kv.key == key => {
                assert_eq!(kv.version, v);
                break;
            }
            // A failed put may or may not have been applied before the members died.
            WatchEvent::Put(kv) if kv.key.ends_with("/lost") => {}
            WatchEvent::Resync { .. } => {}
            other => panic!("the watch after the quorum is back: {other:?}"),
        }
    }
    let (_, eph_back) = until_ok("the ephemeral key", Duration::from_secs(20), || async {
        match store.get(&eph).await? {
            Some(kv) => Ok(kv),
            None => Err(overlay_core::Error::new(
                ErrorKind::Unavailable,
                "test",
                "the ephemeral key is not back yet",
            )),
        }
    })
    .await;
    eprintln!(
        "{}: quorum back: the first put {took:?} after the restarts, the ephemeral key {eph_back:?}",
        c.name()
    );
    store.close().await.unwrap();
}

/// The leader killed: an ephemeral key of a live client is never deleted (no false "host
/// died"), over three TTLs, and reads answer throughout but for the election.
async fn ephemeral_outlives_leader(c: &mut impl TestCluster) {
    let url = c.url_with(OPTS);
    let (owner, observer) = (common::open(&url).await, common::open(&url).await);
    let p = scratch("leader");
    let eph = format!("{p}/host");
    owner.put_ephemeral(&eph, b"alive").await.unwrap();
    let mut w = observer.watch(&p, None).await.unwrap();
    let leader = leader_of(c);
    c.kill(leader);
    let t0 = Instant::now();
    let mut failed_reads = 0;
    while t0.elapsed() < 3 * TTL {
        match observer.get(&eph).await {
            Ok(Some(_)) => {}
            Ok(None) => panic!(
                "the ephemeral key is gone {:?} after the leader died",
                t0.elapsed()
            ),
            Err(e) if matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout) => {
                failed_reads += 1
            }
            Err(e) => panic!("a read while the leader is replaced: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The watch saw nothing: no delete, and no put either (the key was never re-created).
    match tokio::time::timeout(Duration::from_millis(300), w.next()).await {
        Err(_) | Ok(Some(Ok(WatchEvent::Resync { .. }))) => {}
        Ok(other) => panic!("the watch saw the key change after the leader died: {other:?}"),
    }
    let after = format!("{p}/after");
    let (_, put_after) = until_ok("a put after the election", Duration::from_secs(20), || {
        owner.put(&after, b"x")
    })
    .await;
    c.restart(leader);
    eprintln!(
        "{}: ephemeral key kept over {:?} after the leader died; {failed_reads} reads failed \
         meanwhile; a put 3 TTLs later took {put_after:?}",
        c.name(),
        3 * TTL
    );
    owner.close().await.unwrap();
    observer.close().await.unwrap();
}

macro_rules! fault_tests {
    ($cluster:ty) => {
        use super::*;

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn follower_partitioned_changes_nothing() {
            let mut c = <$cluster>::start(3);
            follower_partitioned(&mut c).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn reads_follow_writes_across_servers() {
            let c = <$cluster>::start(3);
            reads_across_servers(&c).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn quorum_lost_fails_fast_then_recovers() {
            let mut c = <$cluster>::start(3);
            quorum_lost(&mut c).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn ephemeral_keys_outlive_the_leader() {
            let mut c = <$cluster>::start(3);
            ephemeral_outlives_leader(&mut c).await;
        }
    };
}

mod etcd_cluster {
    fault_tests!(EtcdCluster);
}

mod zookeeper_ensemble {
    fault_tests!(ZooKeeperCluster);
}

/// A store whose URLs carry credentials: what the conformance suite runs through.
struct Secured {
    url: Box<dyn Fn(&str) -> String + Send + Sync>,
}

impl Secured {
    fn url_with(&self, options: &str) -> String {
        (self.url)(options)
    }
}

/// The user and password the secured stores accept.
const USER: &str = "overlay";
const PASSWORD: &str = "s3cret-overlay";

fn credentials() -> String {
    format!("username={USER}&password={PASSWORD}")
}

/// Runs `f` on a runtime of its own (the shared stores are set up from inside tests'
/// runtimes, which cannot block on another future).
fn blocking<T: Send + 'static>(f: impl std::future::Future<Output = T> + Send + 'static) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(f)
    })
    .join()
    .expect("the setup thread")
}

mod etcd_tls {
    use super::*;
    use crate::common;

    /// The TLS cluster with authentication on, shared by the tests of this process.
    fn cluster() -> &'static EtcdCluster {
        static CLUSTER: OnceLock<&'static EtcdCluster> = OnceLock::new();
        CLUSTER.get_or_init(|| {
            let c = EtcdCluster::start_tls(3).into_shared();
            let tls = c.tls().expect("a TLS cluster").clone();
            let endpoints: Vec<String> = c
                .endpoints()
                .split(',')
                .map(|e| format!("https://{e}"))
                .collect();
            blocking(enable_auth(endpoints, tls));
            c
        })
    }

    /// Adds `root` and [`USER`] (read-write on every key) and turns authentication on.
    async fn enable_auth(endpoints: Vec<String>, tls: overlay_testkit::TlsFiles) {
        use etcd_client as ec;
        let read = |p: &std::path::Path| std::fs::read(p).expect("read a certificate");
        let options = ec::ConnectOptions::new().with_tls(
            ec::TlsOptions::new()
                .ca_certificate(ec::Certificate::from_pem(read(&tls.ca)))
                .identity(ec::Identity::from_pem(
                    read(&tls.client_cert),
                    read(&tls.client_key),
                )),
        );
        let mut client = ec::Client::connect(endpoints, Some(options))
            .await
            .expect("connect to the TLS cluster");
        client
            .user_add("root", "root-pw", None)
            .await
            .expect("add root");
        client
            .user_grant_role("root", "root")
            .await
            .expect("root gets the root role");
        client.role_add(USER).await.expect("add a role");
        client
            .role_grant_permission(USER, ec::Permission::read_write("").with_all_keys())
            .await
            .expect("grant the role every key");
        client
            .user_add(USER, PASSWORD, None)
            .await
            .expect("add the user");
        client
            .user_grant_role(USER, USER)
            .await
            .expect("grant the user its role");
        client.auth_enable().await.expect("enable authentication");
    }

    fn good_options() -> String {
        let tls = cluster().tls().expect("TLS files");
        format!("{}&{}", tls.client_options(), credentials())
    }

    fn secured() -> &'static Secured {
        static SECURED: OnceLock<Secured> = OnceLock::new();
        SECURED.get_or_init(|| Secured {
            url: Box::new(|options| cluster().url_with(&format!("{options}&{}", good_options()))),
        })
    }

    crate::conformance_tests!(secured());

    /// Connecting with `options` fails with one of `kinds`, and the message names `fix`.
    async fn refused(what: &str, options: &str, kinds: &[ErrorKind], fix: &str) {
        let url = cluster().url_with(&format!("timeout=3s&{options}"));
        let t = Instant::now();
        let e = overlay_core::store::connect_str(&url)
            .await
            .map(|_| ())
            .expect_err(&format!("{what}: connect must fail"));
        assert!(kinds.contains(&e.kind()), "{what}: {:?}: {e}", e.kind());
        assert!(
            e.to_string().contains(fix),
            "{what}: the message names {fix}: {e}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "{what}: took {:?}",
            t.elapsed()
        );
        eprintln!("{what}: {e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_ca_is_refused() {
        let tls = cluster().tls().unwrap();
        let options = format!(
            "ca={}&cert={}&key={}&{}",
            tls.other_ca.display(),
            tls.client_cert.display(),
            tls.client_key.display(),
            credentials()
        );
        refused(
            "a CA that did not sign the servers' certificate",
            &options,
            &[ErrorKind::Unavailable, ErrorKind::PermissionDenied],
            "ca=",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn missing_client_certificate_is_refused() {
        let tls = cluster().tls().unwrap();
        let options = format!("ca={}&{}", tls.ca.display(), credentials());
        refused(
            "no client certificate",
            &options,
            &[ErrorKind::Unavailable, ErrorKind::PermissionDenied],
            "cert=",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn foreign_client_certificate_is_refused() {
        let tls = cluster().tls().unwrap();
        let options = format!(
            "ca={}&cert={}&key={}&{}",
            tls.ca.display(),
            tls.other_client_cert.display(),
            tls.other_client_key.display(),
            credentials()
        );
        refused(
            "a client certificate of another CA",
            &options,
            &[ErrorKind::Unavailable, ErrorKind::PermissionDenied],
            "cert=",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_password_is_refused() {
        let tls = cluster().tls().unwrap();
        let options = format!("{}&username={USER}&password=wrong", tls.client_options());
        refused(
            "a wrong password",
            &options,
            &[ErrorKind::PermissionDenied],
            "password=",
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn plain_http_to_a_tls_cluster_is_refused() {
        refused(
            "no TLS options",
            &credentials(),
            &[ErrorKind::Unavailable],
            "ca=",
        )
        .await;
    }
}

mod zookeeper_digest {
    use super::*;
    use crate::common;
    use overlay_testkit::ZooKeeperServer;

    fn secured() -> &'static Secured {
        static SECURED: OnceLock<Secured> = OnceLock::new();
        SECURED.get_or_init(|| Secured {
            url: Box::new(|options| {
                ZooKeeperServer::shared().url_with(&format!("{options}&{}", credentials()))
            }),
        })
    }

    crate::conformance_tests!(secured());

    /// The prefix a user made is closed to another password: PermissionDenied, naming it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wrong_password_is_refused() {
        let url = secured().url_with("timeout=3s");
        let owner: Arc<dyn KvStore> = common::open(&url).await;
        owner.put("k", b"v").await.unwrap();
        let wrong = url.replace(&format!("password={PASSWORD}"), "password=wrong");
        let e = overlay_core::store::connect_str(&wrong)
            .await
            .map(|_| ())
            .expect_err("a wrong password must not open the prefix");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        assert!(e.to_string().contains("password="), "{e}");
        let anonymous = url.replace(&format!("&{}", credentials()), "");
        assert_ne!(anonymous, url);
        let e = overlay_core::store::connect_str(&anonymous)
            .await
            .map(|_| ())
            .expect_err("no credentials must not open the prefix");
        assert_eq!(e.kind(), ErrorKind::PermissionDenied, "{e}");
        owner.close().await.unwrap();
    }
}
