//! A cluster on one machine for the cross-process tests: hosts are namespaces joined by an
//! underlay, each driven by its own `overlay-host` process; containers are namespaces.
#![allow(dead_code, unreachable_pub)]

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use overlay::dataplane::lab::Lab;
use overlay::dataplane::{Dataplane, NetlinkDataplane, Netns, Peer};
use overlay::model::NetworkId;
use overlay::rpc::WireError;
use overlay_testkit::{EtcdCluster, EtcdServer, ZooKeeperCluster, ZooKeeperServer, ip_of};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// Which cluster store a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Etcd,
    ZooKeeper,
}

/// The store a test cluster shares, kept alive for the test's duration.
pub struct Store {
    server: Server,
    url: String,
}

enum Server {
    File(tempfile::TempDir),
    Etcd(EtcdServer),
    Zk(ZooKeeperServer),
    EtcdCluster(EtcdCluster),
    ZkCluster(ZooKeeperCluster),
}

impl Store {
    /// A fresh store of `backend`. With `own_server` the test gets a server of its own, which
    /// it may kill and restart, even when `OVERLAY_TEST_*` names an external one.
    pub fn start(backend: Backend, own_server: bool) -> Store {
        // Each `url_with` call names a fresh key prefix: take it once, for every host.
        let (server, url) = match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("file://{}/store.db", dir.path().display());
                (Server::File(dir), url)
            }
            Backend::Etcd => {
                let s = if own_server {
                    EtcdServer::start_local()
                } else {
                    EtcdServer::start()
                };
                let url = s.url_with("timeout=1s");
                (Server::Etcd(s), url)
            }
            Backend::ZooKeeper => {
                let s = if own_server {
                    ZooKeeperServer::start_local()
                } else {
                    ZooKeeperServer::start()
                };
                let url = s.url_with("timeout=1s");
                (Server::Zk(s), url)
            }
        };
        Store { server, url }
    }

    /// A 3-member cluster of `backend` (etcd or ZooKeeper), the test's own.
    pub fn cluster(backend: Backend) -> Store {
        let (server, url) = match backend {
            Backend::Etcd => {
                let c = EtcdCluster::start(3);
                let url = c.url_with("timeout=1s");
                (Server::EtcdCluster(c), url)
            }
            Backend::ZooKeeper => {
                let c = ZooKeeperCluster::start(3);
                let url = c.url_with("timeout=1s");
                (Server::ZkCluster(c), url)
            }
            Backend::Embedded => panic!("the embedded store has no cluster"),
        };
        Store { server, url }
    }

    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// The member of a cluster that leads now (waiting up to 30 s for one).
    pub fn leader(&self) -> usize {
        let leader = match &self.server {
            Server::EtcdCluster(c) => c.wait_leader(Duration::from_secs(30)),
            Server::ZkCluster(c) => c.wait_leader(Duration::from_secs(30)),
            _ => panic!("only a cluster has a leader"),
        };
        leader.expect("the cluster elects a leader")
    }

    /// Kills member `i` of a cluster.
    pub fn kill_member(&mut self, i: usize) {
        match &mut self.server {
            Server::EtcdCluster(c) => c.kill(i),
            Server::ZkCluster(c) => c.kill(i),
            _ => panic!("only a cluster has members"),
        }
    }

    /// Starts member `i` of a cluster again.
    pub fn restart_member(&mut self, i: usize) {
        match &mut self.server {
            Server::EtcdCluster(c) => c.restart(i),
            Server::ZkCluster(c) => c.restart(i),
            _ => panic!("only a cluster has members"),
        }
    }

    pub fn kill(&mut self) {
        match &mut self.server {
            Server::File(_) => panic!("the embedded store has no server to kill"),
            Server::Etcd(s) => s.kill(),
            Server::Zk(s) => s.kill(),
            Server::EtcdCluster(_) | Server::ZkCluster(_) => panic!("kill a cluster's members"),
        }
    }

    pub fn restart(&mut self) {
        match &mut self.server {
            Server::File(_) => panic!("the embedded store has no server to restart"),
            Server::Etcd(s) => s.restart(),
            Server::Zk(s) => s.restart(),
            Server::EtcdCluster(_) | Server::ZkCluster(_) => {
                panic!("restart a cluster's members")
            }
        }
    }
}

/// One `overlay-host` process.
pub struct HostProc {
    pub id: String,
    pub tag: String,
    pub ns: Netns,
    pub vtep: IpAddr,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl HostProc {
    /// Sends one request and returns its `ok` value or its error.
    pub async fn call(&mut self, request: Value) -> Result<Value, WireError> {
        let stdin = self.stdin.as_mut().expect("host process stdin");
        stdin
            .write_all(format!("{request}\n").as_bytes())
            .await
            .expect("write request");
        stdin.flush().await.expect("flush request");
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await
            .expect("host process answered within 30 s")
            .expect("read response")
            .expect("host process is alive");
        let v: Value = serde_json::from_str(&line).expect("response is JSON");
        if let Some(ok) = v.get("ok") {
            return Ok(ok.clone());
        }
        Err(serde_json::from_value(v["error"].clone()).expect("error response"))
    }

    /// Sends `request` every 200 ms until it succeeds or `limit` passes; the last answer.
    pub async fn call_until_ok(
        &mut self,
        request: &Value,
        limit: Duration,
    ) -> Result<Value, WireError> {
        let deadline = Instant::now() + limit;
        loop {
            let result = self.call(request.clone()).await;
            if result.is_ok() || Instant::now() > deadline {
                return result;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Like [`HostProc::call`], failing the test on an error.
    pub async fn ok(&mut self, request: Value) -> Value {
        let what = request.to_string();
        self.call(request)
            .await
            .unwrap_or_else(|e| panic!("{what} failed: {}", e.message))
    }

    /// SIGKILL: the agent dies without withdrawing anything.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("kill host process");
        let _ = self.child.wait().await;
    }

    /// Closes stdin and waits for a clean exit.
    pub async fn stop(&mut self) {
        self.stdin.take();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// The peers the kernel holds in this host's sandbox of `network`. Panics when they cannot
    /// be listed (no sandbox among them): "no such peer" is only read from a listing.
    pub async fn peers(&self, network: &str) -> Vec<Peer> {
        let id: NetworkId = network.parse().expect("network id");
        let dp = NetlinkDataplane::in_namespace(&self.tag, &self.ns)
            .await
            .expect("dataplane");
        dp.list_peers(&id)
            .await
            .unwrap_or_else(|e| panic!("the peers of {network} on host {}: {e}", self.tag))
    }
}

/// Hosts, containers and the store of one test.
pub struct Cluster {
    /// First to drop: a host still running while the lab sweeps would heal its sandboxes
    /// back, and they would outlive the test.
    pub hosts: Vec<HostProc>,
    pub lab: Lab,
    pub store: Store,
    pub dir: tempfile::TempDir,
    pub host_ttl_ms: u64,
    pub reclaim_grace_ms: u64,
}

impl Cluster {
    /// Stops every host process cleanly (closing its stdin).
    pub async fn stop(&mut self) {
        for h in &mut self.hosts {
            h.stop().await;
        }
    }

    /// Two hosts on one underlay sharing `backend`'s store. Fails the test when not root or
    /// when the store's server cannot be had.
    pub async fn new(test: &str, backend: Backend) -> Cluster {
        Self::build(test, backend, false, 3000).await
    }

    /// Like [`Cluster::new`], with hosts whose reclaim grace is `grace_ms` (a sweep every
    /// half of it).
    pub async fn with_reclaim_grace(test: &str, backend: Backend, grace_ms: u64) -> Cluster {
        Self::build(test, backend, false, grace_ms).await
    }

    /// Like [`Cluster::new`], on a store server of the test's own, which it may kill.
    pub async fn with_own_server(test: &str, backend: Backend) -> Cluster {
        Self::build(test, backend, true, 3000).await
    }

    /// Like [`Cluster::new`], on a 3-member store cluster of the test's own.
    pub async fn on_store_cluster(test: &str, backend: Backend) -> Cluster {
        overlay_testkit::require_root(test);
        Self::assemble(Store::cluster(backend), 3000).await
    }

    async fn build(test: &str, backend: Backend, own_server: bool, grace_ms: u64) -> Cluster {
        overlay_testkit::require_root(test);
        Self::assemble(Store::start(backend, own_server), grace_ms).await
    }

    async fn assemble(store: Store, grace_ms: u64) -> Cluster {
        let lab = Lab::new(&format!("t{:x}", rand_u32())).expect("lab");
        let mut c = Cluster {
            lab,
            store,
            hosts: Vec::new(),
            dir: tempfile::tempdir().expect("temp dir"),
            host_ttl_ms: 2000,
            reclaim_grace_ms: grace_ms,
        };
        let (a, b) = c.lab.two_hosts("host1", "host2").await.expect("two hosts");
        for (i, ns) in [a, b].into_iter().enumerate() {
            let host = c.spawn_host(i, ns).await;
            c.hosts.push(host);
        }
        c
    }

    /// Starts (or restarts) the process of host `i` in namespace `ns`.
    pub async fn spawn_host(&self, i: usize, ns: Netns) -> HostProc {
        let id = self.lab.host_id(&format!("host{}", i + 1));
        let vtep: IpAddr = format!("198.51.100.{}", i + 1).parse().unwrap();
        let state = self.dir.path().join(format!("host{}-state", i + 1));
        self.start_host(&id, vtep, ns, &state)
            .await
            .unwrap_or_else(|e| panic!("overlay-host {id} did not start: {}", e.message))
    }

    /// Starts an `overlay-host` process with host id `id` advertising `vtep` in namespace `ns`,
    /// keeping its state in `state`; the error it answered with when it cannot start.
    pub async fn start_host(
        &self,
        id: &str,
        vtep: IpAddr,
        ns: Netns,
        state: &Path,
    ) -> Result<HostProc, WireError> {
        let config = json!({
            "store": self.store.url(),
            "advertise": vtep.to_string(),
            "host_id": id,
            "host_netns": ns.path(),
            "host_ttl": self.host_ttl_ms,
            "reclaim_grace": self.reclaim_grace_ms,
            "state_dir": state,
        });
        let mut child = Command::new(env!("CARGO_BIN_EXE_overlay-host"))
            .arg("--config")
            .arg(config.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn overlay-host");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .expect("overlay-host ready within 30 s")
            .expect("read ready line")
            .expect("overlay-host answered (see its stderr)");
        let first: Value = serde_json::from_str(&ready).expect("the first line is JSON");
        if let Some(e) = first.get("error") {
            let _ = child.wait().await;
            return Err(serde_json::from_value(e.clone()).expect("an error line"));
        }
        assert!(
            first.get("ready").is_some(),
            "unexpected first line {ready}"
        );
        let tag = id.replace('-', "_");
        Ok(HostProc {
            id: id.to_string(),
            tag,
            ns,
            vtep,
            child,
            stdin,
            stdout,
        })
    }

    /// A container namespace `name` and the path of its hosts file.
    pub async fn container(&self, name: &str) -> (Netns, PathBuf) {
        let ns = self.lab.namespace(name).await.expect("container namespace");
        (ns, self.dir.path().join(format!("{name}.hosts")))
    }

    /// Connects a fresh container `name` on host `h`, with `extra` fields of its spec.
    pub async fn run(&mut self, h: usize, name: &str, extra: Value) -> Running {
        let (ns, hosts_file) = self.container(name).await;
        let id = format!("{name}-{:08x}", rand_u32());
        let mut container = json!({
            "id": id,
            "name": name,
            "netns": {"path": ns.path()},
            "hosts_file": hosts_file,
        });
        if let (Some(obj), Some(extra)) = (container.as_object_mut(), extra.as_object()) {
            obj.extend(extra.clone());
        }
        let endpoint = self.hosts[h]
            .ok(json!({"op": "connect", "network": "my-net", "container": container}))
            .await;
        Running {
            id,
            name: name.to_string(),
            host: h,
            ns,
            hosts_file,
            endpoint,
        }
    }

    /// The two containers most tests start from, on `my-net`: `a` on host 0 and `b` on host 1,
    /// `b` answering "imok" on port 2181 until the pair is dropped.
    pub async fn run_pair(&mut self) -> Pair {
        let a = self.run(0, "a", json!({})).await;
        let b = self.run(1, "b", json!({})).await;
        let server = serve(&b.ns, 2181, "imok");
        Pair { a, b, server }
    }

    /// Creates `my-net` through host 0 and answers its id.
    pub async fn create_my_net(&mut self) -> String {
        let net = self.hosts[0]
            .ok(json!({"op": "create_network", "name": "my-net"}))
            .await;
        net["Id"]
            .as_str()
            .unwrap_or_else(|| panic!("create_network answered no Id: {net}"))
            .to_string()
    }
}

/// What [`Cluster::run_pair`] started.
pub struct Pair {
    /// The container on host 0.
    pub a: Running,
    /// The container on host 1.
    pub b: Running,
    /// `b`'s "imok" server on port 2181.
    pub server: overlay_testkit::TcpGreeter,
}

/// A container a test connected through [`Cluster::run`].
pub struct Running {
    /// Its container id.
    pub id: String,
    /// Its name on the network.
    pub name: String,
    /// The index of its host in [`Cluster::hosts`].
    pub host: usize,
    /// Its network namespace.
    pub ns: Netns,
    /// The hosts file its host keeps for it.
    pub hosts_file: PathBuf,
    /// The connect's answer: Docker's inspect entry.
    pub endpoint: Value,
}

impl Running {
    /// Its IPv4 address.
    pub fn ip(&self) -> IpAddr {
        ip_of(&self.endpoint)
    }
}

pub fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    t.subsec_nanos() ^ std::process::id().rotate_left(16)
}

/// Deletes the namespace name at `path` (`/run/netns/NAME`) with `ip netns del`, as when a
/// container dies or its runtime crashes before its DEL. A handle still open on the namespace
/// keeps the namespace itself alive.
pub fn ip_netns_del(path: &Path) {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_else(|| panic!("{} is not a named namespace", path.display()));
    // Run from the test's own network namespace: `ip netns` acts on /run/netns.
    overlay_testkit::look(
        Path::new("/proc/self/ns/net"),
        "ip",
        &["netns", "del", name],
    );
}

/// Answers TCP on `port` (IPv4 and IPv6) in a namespace with a fixed greeting until dropped.
pub fn serve(ns: &Netns, port: u16, greeting: &'static str) -> overlay_testkit::TcpGreeter {
    let any: IpAddr = std::net::Ipv6Addr::UNSPECIFIED.into();
    overlay_testkit::TcpGreeter::start(ns.path(), (any, port).into(), greeting).expect("serve")
}

/// Connects from `ns` to `ip:port` and reads the greeting; `None` when unreachable.
pub fn fetch(ns: &Netns, ip: IpAddr, port: u16) -> Option<String> {
    fetch_within(ns, ip, port, Duration::from_secs(1))
}

/// Like [`fetch`], giving up on the connection and the read after `limit` each (a caller that
/// retries soon rather than waiting for TCP's own SYN retransmission).
pub fn fetch_within(ns: &Netns, ip: IpAddr, port: u16, limit: Duration) -> Option<String> {
    overlay_testkit::fetch(ns.path(), (ip, port).into(), limit)
}

/// One `#[tokio::test]` per backend for a scenario `async fn(test: &str, backend: Backend)`.
#[macro_export]
macro_rules! on_backends {
    ($scenario:ident: $($test:ident => $backend:expr),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $test() {
                $scenario(stringify!($test), $backend).await;
            }
        )+
    };
}
