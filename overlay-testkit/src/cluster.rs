//! Three-member etcd clusters and ZooKeeper ensembles on loopback, for fault tests: a member
//! can be killed, restarted, or partitioned from everybody else.
//!
//! Each member runs in a network namespace of its own that holds only its loopback. The
//! members' peer ports and the clients' ports are reached through the testkit's links: in each
//! member's namespace, a listener on every other member's peer port forwards there; in the
//! test's namespace, a listener on every member's client port forwards to it. Every address is
//! `127.0.0.1:PORT` wherever it is used, so the members' configuration is the same as on one
//! machine, and holding a member's links cuts it off in both directions while it keeps
//! running — a real partition, which a proxy on one side of a connection cannot make.

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::netns::PrivateNetns;
use crate::pipe::Link;
use crate::process::{clean_at_exit, missing, require_root, spawn_bound, unique_prefix};
use crate::servers::{Kind, READY_DEADLINE, ZK_CLASSPATH, ask, probe_request, store_url};
use crate::tls::{self, TlsFiles};

/// Ports inside the members' namespaces (nothing else listens there): member `i` has
/// `PEER_BASE + i` for etcd's peer traffic or ZooKeeper's quorum, and `SECOND_BASE + i` for
/// etcd's plain-HTTP metrics and health or ZooKeeper's leader election.
const PEER_BASE: u16 = 12380;
const SECOND_BASE: u16 = 13380;

#[derive(Debug)]
struct Member {
    ns: Arc<PrivateNetns>,
    child: Option<Child>,
    /// The client port, the same number in the test's namespace (a link) and the member's.
    client: u16,
}

/// A link's ends: from the test's namespace (`None`) or a member's, to a member's `port`.
/// A dead member's links are closed, so that connecting to it is refused as it would be
/// without links in between.
#[derive(Debug)]
struct Wire {
    from: Option<usize>,
    to: usize,
    port: u16,
    link: Option<Link>,
    /// The listener that picked a client port, held until the link opens on it: a port
    /// merely known to be free may meanwhile become the source port of another test's
    /// connection.
    reserved: Option<TcpListener>,
}

/// Binds `addr`, waiting out (for up to 10 s) a port that another test's connection holds
/// for a moment as its source port, as can happen when a link opens again after a restart.
fn bind_retrying(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match TcpListener::bind(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

#[derive(Debug)]
struct Cluster {
    kind: Kind,
    program: PathBuf,
    dir: TempDir,
    members: Vec<Member>,
    wires: Vec<Wire>,
    partitioned: Vec<bool>,
    tls: Option<TlsFiles>,
    token: String,
}

impl Cluster {
    fn start(kind: Kind, size: usize, tls: bool) -> Cluster {
        let what = format!("a {size}-member {} test cluster", kind.name());
        require_root(&what);
        let program = kind.program().unwrap_or_else(|why| missing(&what, &why));
        let dir = tempfile::Builder::new()
            .prefix(&format!("overlay-test-{}-cluster-", kind.scheme()))
            .tempdir()
            .unwrap_or_else(|e| panic!("create a temp dir for {what}: {e}"));
        let tls = tls.then(|| {
            tls::generate(dir.path()).unwrap_or_else(|e| panic!("certificates for {what}: {e}"))
        });
        let mut cluster = Cluster {
            kind,
            program,
            dir,
            members: Vec::new(),
            wires: Vec::new(),
            partitioned: vec![false; size],
            tls,
            token: unique_prefix(),
        };
        cluster.wire(size);
        for i in 0..size {
            fs::create_dir_all(cluster.data_dir(i)).expect("create a member's data dir");
            cluster.spawn(i);
        }
        cluster.wait_ready(None, &what);
        cluster
    }

    /// Makes the namespaces and the list of links between them and from the test's namespace
    /// (opened when each member starts).
    fn wire(&mut self, size: usize) {
        for to in 0..size {
            let ns = Arc::new(
                PrivateNetns::new().unwrap_or_else(|e| panic!("a member's namespace: {e}")),
            );
            // The client port is picked free in the test's namespace, where its link listens.
            let listener = TcpListener::bind("127.0.0.1:0").expect("pick a client port");
            let client = listener.local_addr().expect("pick a client port").port();
            self.wires.push(Wire {
                from: None,
                to,
                port: client,
                link: None,
                reserved: Some(listener),
            });
            self.members.push(Member {
                ns,
                child: None,
                client,
            });
        }
        let ports: &[u16] = match self.kind {
            Kind::Etcd => &[PEER_BASE],
            Kind::ZooKeeper => &[PEER_BASE, SECOND_BASE],
        };
        for from in 0..size {
            for to in (0..size).filter(|&to| to != from) {
                for base in ports {
                    self.wires.push(Wire {
                        from: Some(from),
                        to,
                        port: base + to as u16,
                        link: None,
                        reserved: None,
                    });
                }
            }
        }
    }

    /// Opens (or, `open == false`, closes) every link to member `i`.
    fn links_to(&mut self, i: usize, open: bool) {
        for w in self.wires.iter_mut().filter(|w| w.to == i) {
            if !open {
                w.link = None;
                continue;
            }
            if w.link.is_some() {
                continue;
            }
            let port = w.port;
            let bind = move || bind_retrying(local(port));
            let listener = match (w.reserved.take(), w.from) {
                (Some(l), _) => Ok(l),
                (None, None) => bind(),
                (None, Some(from)) => self.members[from].ns.run(bind).and_then(|r| r),
            }
            .unwrap_or_else(|e| panic!("listen on 127.0.0.1:{port} for member {i}: {e}"));
            let link = Link::start(listener, Some(self.members[i].ns.clone()), local(port))
                .expect("start a link");
            if self.partitioned[i] || w.from.is_some_and(|f| self.partitioned[f]) {
                link.hold();
            }
            w.link = Some(link);
        }
    }

    fn member_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("m{i}"))
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.member_dir(i).join("data")
    }

    fn command(&self, i: usize) -> Command {
        let size = self.members.len();
        let data = self.data_dir(i);
        let client = self.members[i].client;
        let mut cmd = match self.kind {
            Kind::Etcd => {
                let scheme = if self.tls.is_some() { "https" } else { "http" };
                let peer = |m: usize| format!("http://127.0.0.1:{}", PEER_BASE + m as u16);
                let initial: Vec<String> = (0..size).map(|m| format!("m{m}={}", peer(m))).collect();
                let client_url = format!("{scheme}://127.0.0.1:{client}");
                let mut cmd = Command::new(&self.program);
                cmd.arg(format!("--name=m{i}"))
                    .arg(format!("--data-dir={}", data.display()))
                    .arg(format!("--listen-client-urls={client_url}"))
                    .arg(format!("--advertise-client-urls={client_url}"))
                    .arg(format!("--listen-peer-urls={}", peer(i)))
                    .arg(format!("--initial-advertise-peer-urls={}", peer(i)))
                    .arg(format!("--initial-cluster={}", initial.join(",")))
                    .arg(format!("--initial-cluster-token={}", self.token))
                    .arg("--initial-cluster-state=new")
                    // A member back from a partition would otherwise call an election with
                    // the term it raised while cut off, leaving the cluster without a leader
                    // for 1-3 s just after it heals (etcd 3.5 turns this on by default).
                    .arg("--pre-vote=true")
                    .arg(format!(
                        "--listen-metrics-urls=http://127.0.0.1:{}",
                        SECOND_BASE + i as u16
                    ))
                    .arg("--log-level=warn")
                    .arg("--logger=zap");
                if let Some(t) = &self.tls {
                    cmd.arg(format!("--cert-file={}", t.server_cert.display()))
                        .arg(format!("--key-file={}", t.server_key.display()))
                        .arg(format!("--trusted-ca-file={}", t.ca.display()))
                        .arg("--client-cert-auth");
                }
                cmd
            }
            Kind::ZooKeeper => {
                let mut text = format!(
                    "tickTime=250\ninitLimit=20\nsyncLimit=8\ndataDir={}\nclientPort={client}\n\
                     clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                     minSessionTimeout=500\nmaxSessionTimeout=60000\n\
                     4lw.commands.whitelist=srvr,ruok\nmaxClientCnxns=0\n",
                    data.display(),
                );
                for m in 0..size {
                    text.push_str(&format!(
                        "server.{}=127.0.0.1:{}:{}\n",
                        m + 1,
                        PEER_BASE + m as u16,
                        SECOND_BASE + m as u16
                    ));
                }
                let cfg = self.member_dir(i).join("zoo.cfg");
                fs::write(&cfg, text).expect("write zoo.cfg");
                fs::write(data.join("myid"), format!("{}\n", i + 1)).expect("write myid");
                let mut cmd = Command::new(&self.program);
                cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
                    .arg("-Dzookeeper.admin.enableServer=false")
                    .arg("-Dzookeeper.forceSync=no")
                    .args([
                        "-cp",
                        ZK_CLASSPATH,
                        "org.apache.zookeeper.server.quorum.QuorumPeerMain",
                    ])
                    .arg(&cfg);
                cmd
            }
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.member_dir(i).join("server.log"))
            .expect("open a member's log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the member's log"))
            .stderr(log)
            .current_dir(self.member_dir(i));
        let ns = self.members[i].ns.raw();
        // SAFETY: setns is async-signal-safe; the descriptor is open in the forked child (it
        // is closed on exec, after this).
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(ns, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    fn spawn(&mut self, i: usize) {
        let child = spawn_bound(self.command(i))
            .unwrap_or_else(|e| panic!("spawn {}: {e}", self.program.display()));
        self.members[i].child = Some(child);
        self.links_to(i, true);
    }

    /// What member `i` answers to the readiness probe, asked inside its namespace (a held
    /// link does not hide it).
    fn ask_member(&self, i: usize, port: u16, request: &'static [u8]) -> Option<String> {
        self.members[i]
            .ns
            .run(move || ask(local(port), request))
            .ok()
            .flatten()
    }

    /// The member's role: `Some(true)` leader, `Some(false)` follower, `None` not serving.
    fn role(&self, i: usize) -> Option<bool> {
        self.members[i].child.as_ref()?;
        match self.kind {
            Kind::Etcd => {
                let port = SECOND_BASE + i as u16;
                let health = self.ask_member(i, port, probe_request(Kind::Etcd))?;
                if !health.contains("\"health\":\"true\"") {
                    return None;
                }
                let metrics =
                    self.ask_member(i, port, b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                Some(
                    metrics
                        .lines()
                        .any(|l| l.trim() == "etcd_server_is_leader 1"),
                )
            }
            Kind::ZooKeeper => {
                let srvr =
                    self.ask_member(i, self.members[i].client, probe_request(Kind::ZooKeeper))?;
                if srvr.contains("Mode: leader") {
                    Some(true)
                } else if srvr.contains("Mode: follower") {
                    Some(false)
                } else {
                    None
                }
            }
        }
    }

    /// Waits until every running member serves (and `member`, if given) and one leads.
    fn wait_ready(&mut self, member: Option<usize>, what: &str) {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                if let Some(status) = m.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                    m.child = None;
                    panic!(
                        "{what}: member {i} exited with {status}; log tail:\n{}",
                        self.log_tail(i)
                    );
                }
            }
            let roles: Vec<Option<bool>> = (0..self.members.len()).map(|i| self.role(i)).collect();
            let running: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].child.is_some())
                .collect();
            let serving = running.iter().all(|&i| roles[i].is_some());
            let leaders = roles.iter().filter(|r| **r == Some(true)).count();
            if serving && leaders == 1 && member.is_none_or(|m| roles[m].is_some()) {
                return;
            }
            if Instant::now() > deadline {
                let tails: Vec<String> = (0..self.members.len())
                    .map(|i| format!("member {i}:\n{}", self.log_tail(i)))
                    .collect();
                panic!(
                    "{what} was not ready within {READY_DEADLINE:?} (roles {roles:?}); \
                     logs:\n{}",
                    tails.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_tail(&self, i: usize) -> String {
        let text = fs::read_to_string(self.member_dir(i).join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn endpoints(&self) -> String {
        let list: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client))
            .collect();
        list.join(",")
    }

    fn url_with(&self, options: &str) -> String {
        store_url(self.kind, &self.endpoints(), options)
    }

    fn member_urls(&self, options: &str) -> Vec<String> {
        let whole = self.url_with(options);
        let everyone = self.endpoints();
        (0..self.members.len())
            .map(|i| {
                whole.replacen(
                    &everyone,
                    &format!("127.0.0.1:{}", self.members[i].client),
                    1,
                )
            })
            .collect()
    }

    fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| self.role(i) == Some(true))
    }

    fn wait_leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(l) = self.leader() {
                return Some(l);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.links_to(i, false);
    }

    fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
        let what = format!("{} member {i} after a restart", self.kind.name());
        self.wait_ready(Some(i), &what);
    }

    fn register_at_exit(&self) {
        for m in &self.members {
            if let Some(child) = &m.child {
                clean_at_exit(child.id(), self.dir.path().to_path_buf());
            }
        }
    }

    fn set_partitioned(&mut self, i: usize, cut: bool) {
        self.partitioned[i] = cut;
        for w in self.wires.iter().filter(|w| w.to == i || w.from == Some(i)) {
            let other = if w.to == i { w.from } else { Some(w.to) };
            let held = cut || other.is_some_and(|o| self.partitioned[o]);
            match &w.link {
                Some(l) if held => l.hold(),
                Some(l) => l.release(),
                None => {}
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        // The links go with `wires`, the namespaces with the last link that holds them.
    }
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

macro_rules! cluster_type {
    ($name:ident, $kind:expr, $what:literal) => {
        #[doc = concat!("A ", $what, " cluster on loopback for fault tests; every member is ")]
        /// killed, and its namespace and data removed, when dropped.
        #[derive(Debug)]
        pub struct $name(Cluster);

        impl $name {
            #[doc = concat!("Starts a ", $what, " cluster of `size` members and waits until ")]
            /// every member serves and one leads. Fails the test (panics, saying what to
            /// install) without root or the server package.
            pub fn start(size: usize) -> Self {
                $name(Cluster::start($kind, size, false))
            }

            /// Keeps the cluster for the rest of the process, for tests that share it: its
            /// members are killed and its directory removed when the process exits (statics
            /// are never dropped).
            pub fn into_shared(self) -> &'static Self {
                self.0.register_at_exit();
                Box::leak(Box::new(self))
            }

            /// The number of members.
            pub fn size(&self) -> usize {
                self.0.members.len()
            }

            /// A store URL naming every member, with a fresh key prefix and `options` (a query
            /// string such as `timeout=1s&ttl=2s`).
            pub fn url_with(&self, options: &str) -> String {
                self.0.url_with(options)
            }

            /// One store URL per member, each naming only that member, all with one fresh key
            /// prefix and `options`: clients that share the data but talk to different
            /// servers.
            pub fn member_urls(&self, options: &str) -> Vec<String> {
                self.0.member_urls(options)
            }

            /// `127.0.0.1:PORT` of every member, comma-separated.
            pub fn endpoints(&self) -> String {
                self.0.endpoints()
            }

            /// `127.0.0.1:PORT` of member `i`'s client port.
            pub fn endpoint(&self, i: usize) -> String {
                format!("127.0.0.1:{}", self.0.members[i].client)
            }

            /// The member that leads now, if one does.
            pub fn leader(&self) -> Option<usize> {
                self.0.leader()
            }

            /// Waits up to `timeout` for a member to lead; which one.
            pub fn wait_leader(&self, timeout: Duration) -> Option<usize> {
                self.0.wait_leader(timeout)
            }

            /// Whether member `i` serves clients now (answers, as leader or follower).
            pub fn serving(&self, i: usize) -> bool {
                self.0.role(i).is_some()
            }

            /// Kills member `i` with SIGKILL.
            pub fn kill(&mut self, i: usize) {
                self.0.kill(i)
            }

            /// Starts member `i` again on its data directory and waits until it serves.
            pub fn restart(&mut self, i: usize) {
                self.0.restart(i)
            }

            /// Cuts member `i` off from the other members and from clients, both ways: its
            /// connections stop moving bytes and new ones get no answer. It keeps running.
            pub fn partition(&mut self, i: usize) {
                self.0.set_partitioned(i, true)
            }

            /// Ends [`partition`](Self::partition): bytes held meanwhile flow again.
            pub fn heal(&mut self, i: usize) {
                self.0.set_partitioned(i, false)
            }
        }
    };
}

cluster_type!(EtcdCluster, Kind::Etcd, "etcd");
cluster_type!(ZooKeeperCluster, Kind::ZooKeeper, "ZooKeeper");

impl EtcdCluster {
    /// Like [`start`](Self::start), serving clients over TLS only, with certificates made for
    /// this cluster ([`tls`](Self::tls)), and requiring a client certificate its CA signed.
    pub fn start_tls(size: usize) -> Self {
        EtcdCluster(Cluster::start(Kind::Etcd, size, true))
    }

    /// The certificates of a cluster from [`start_tls`](Self::start_tls).
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.0.tls.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader is found, a killed leader is replaced (its port refusing meanwhile), a partitioned member stops serving
    /// clients (its link in the test's namespace gets no answer) and serves again on heal.
    fn check(kind: Kind) {
        let mut c = Cluster::start(kind, 3, false);
        let leader = c.leader().expect("a leader");
        c.kill(leader);
        let refused = std::net::TcpStream::connect(local(c.members[leader].client));
        assert_eq!(
            refused.map_err(|e| e.kind()).err(),
            Some(std::io::ErrorKind::ConnectionRefused),
            "a dead member's port refuses, as without a link in between"
        );
        let next = c
            .wait_leader(Duration::from_secs(30))
            .expect("a new leader");
        assert_ne!(next, leader);
        c.restart(leader);
        let follower = (0..3)
            .find(|&i| c.role(i) == Some(false))
            .expect("a follower");
        let via_link = local(c.members[follower].client);
        let request = probe_request(kind);
        assert!(ask(via_link, request).is_some_and(|r| !r.is_empty()));
        c.set_partitioned(follower, true);
        assert!(
            ask(via_link, request).is_none_or(|r| r.is_empty()),
            "a partitioned member answers through its link"
        );
        c.set_partitioned(follower, false);
        assert!(ask(via_link, request).is_some_and(|r| !r.is_empty()));
    }

    #[test]
    fn etcd_cluster_elects_restarts_and_partitions() {
        check(Kind::Etcd);
    }

    #[test]
    fn zookeeper_ensemble_elects_restarts_and_partitions() {
        check(Kind::ZooKeeper);
    }
}
