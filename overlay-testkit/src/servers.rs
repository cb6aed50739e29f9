//! etcd and ZooKeeper test servers: local processes or external ones from the environment.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{clean_at_exit, free_port, missing, spawn_bound, unique_prefix};

/// How long a server may take to answer after it was started.
pub(crate) const READY_DEADLINE: Duration = Duration::from_secs(60);
/// ZooKeeper's jar and configuration directory as Debian's `zookeeper` package installs them.
pub(crate) const ZK_CLASSPATH: &str = "/etc/zookeeper/conf:/usr/share/java/zookeeper.jar";
const ZK_JAR: &str = "/usr/share/java/zookeeper.jar";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Etcd,
    ZooKeeper,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::ZooKeeper => "ZooKeeper",
        }
    }

    pub(crate) fn scheme(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd",
            Kind::ZooKeeper => "zk",
        }
    }

    fn env_var(self) -> &'static str {
        match self {
            Kind::Etcd => "OVERLAY_TEST_ETCD",
            Kind::ZooKeeper => "OVERLAY_TEST_ZK",
        }
    }

    fn package(self) -> &'static str {
        match self {
            Kind::Etcd => "etcd-server",
            Kind::ZooKeeper => "zookeeper default-jre-headless",
        }
    }

    /// The program to run, or why it cannot be run.
    pub(crate) fn program(self) -> Result<PathBuf, String> {
        let (bin, extra) = match self {
            Kind::Etcd => ("etcd", None),
            Kind::ZooKeeper => ("java", Some(ZK_JAR)),
        };
        let found = std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
            .ok_or_else(|| format!("no `{bin}` in PATH (apt-get install {})", self.package()))?;
        if let Some(jar) = extra.filter(|j| !Path::new(j).is_file()) {
            return Err(format!("no {jar} (apt-get install {})", self.package()));
        }
        Ok(found)
    }
}

/// A server process started by the testkit.
#[derive(Debug)]
struct Local {
    kind: Kind,
    program: PathBuf,
    child: Option<Child>,
    port: u16,
    peer_port: u16,
    dir: TempDir,
    started_in: Duration,
}

impl Local {
    /// Starts a server; `Err` says why the program cannot be run. A server that runs but does
    /// not start is a panic: that is a failure of the test, not a missing package.
    fn start(kind: Kind) -> Result<Local, String> {
        let program = kind.program()?;
        let mut last_error = String::new();
        // A port picked free may be taken by another test before the server binds it: retry.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix(&format!("overlay-test-{}-", kind.scheme()))
                .tempdir()
                .unwrap_or_else(|e| panic!("create a temp dir for {}: {e}", kind.name()));
            let port = free_port().expect("find a free loopback port");
            let peer_port = free_port().expect("find a free loopback port");
            let mut server = Local {
                kind,
                program: program.clone(),
                child: None,
                port,
                peer_port,
                dir,
                started_in: Duration::ZERO,
            };
            match server.launch() {
                Ok(()) => return Ok(server),
                Err(e) => last_error = e,
            }
        }
        panic!("{} test server did not start: {last_error}", kind.name());
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn command(&self) -> Command {
        let data = self.data_dir();
        let mut cmd = match self.kind {
            Kind::Etcd => {
                let client = format!("http://127.0.0.1:{}", self.port);
                let peer = format!("http://127.0.0.1:{}", self.peer_port);
                let mut cmd = Command::new(&self.program);
                cmd.arg("--name=test")
                    .arg(format!("--data-dir={}", data.display()))
                    .arg(format!("--listen-client-urls={client}"))
                    .arg(format!("--advertise-client-urls={client}"))
                    .arg(format!("--listen-peer-urls={peer}"))
                    .arg(format!("--initial-advertise-peer-urls={peer}"))
                    .arg(format!("--initial-cluster=test={peer}"))
                    .arg("--log-level=warn")
                    .arg("--logger=zap");
                cmd
            }
            Kind::ZooKeeper => {
                let cfg = self.dir.path().join("zoo.cfg");
                let text = format!(
                    "tickTime=250\ninitLimit=10\nsyncLimit=5\ndataDir={}\nclientPort={}\n\
                     clientPortAddress=127.0.0.1\nadmin.enableServer=false\n\
                     minSessionTimeout=500\nmaxSessionTimeout=60000\n\
                     4lw.commands.whitelist=srvr,ruok\nmaxClientCnxns=0\n",
                    data.display(),
                    self.port
                );
                fs::write(&cfg, text).expect("write zoo.cfg");
                let mut cmd = Command::new(&self.program);
                cmd.args(["-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"])
                    .arg("-Dzookeeper.admin.enableServer=false")
                    .arg("-Dzookeeper.forceSync=no")
                    // jute.maxbuffer stays at its default (1 MiB), as on a server set up by
                    // the book: the store's size limit is tested against what users run.
                    .args([
                        "-cp",
                        ZK_CLASSPATH,
                        "org.apache.zookeeper.server.ZooKeeperServerMain",
                    ])
                    .arg(&cfg);
                cmd
            }
        };
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup the server log"))
            .stderr(log)
            .current_dir(self.dir.path());
        cmd
    }

    /// Starts the process and waits until it answers.
    fn launch(&mut self) -> Result<(), String> {
        fs::create_dir_all(self.data_dir()).map_err(|e| format!("create data dir: {e}"))?;
        let t0 = Instant::now();
        let child = spawn_bound(self.command())
            .map_err(|e| format!("spawn {}: {e}", self.program.display()))?;
        self.child = Some(child);
        let deadline = t0 + READY_DEADLINE;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!(
                    "it exited with {status} on port {}; log tail:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            if probe(self.kind, &format!("127.0.0.1:{}", self.port)) {
                self.started_in = t0.elapsed();
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!(
                    "it did not answer within {READY_DEADLINE:?} on port {}; log tail:\n{}",
                    self.port,
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether the server at `addr` answers: etcd's `/health`, ZooKeeper's `srvr` command.
fn probe(kind: Kind, addr: &str) -> bool {
    let Ok(addr) = addr.parse::<SocketAddr>() else {
        return false;
    };
    let reply = ask(addr, probe_request(kind)).unwrap_or_default();
    match kind {
        Kind::Etcd => reply.contains("\"health\":\"true\""),
        Kind::ZooKeeper => reply.contains("Mode: standalone") || reply.contains("Mode: leader"),
    }
}

/// `scheme://endpoints/<fresh prefix>[?options]`.
pub(crate) fn store_url(kind: Kind, endpoints: &str, options: &str) -> String {
    let mut url = format!("{}://{endpoints}/{}", kind.scheme(), unique_prefix());
    if !options.is_empty() {
        url.push('?');
        url.push_str(options.trim_start_matches('?'));
    }
    url
}

/// What [`probe`] sends: an HTTP request for etcd's `/health`, ZooKeeper's `srvr`.
pub(crate) fn probe_request(kind: Kind) -> &'static [u8] {
    match kind {
        Kind::Etcd => b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n",
        Kind::ZooKeeper => b"srvr",
    }
}

/// Sends `request` to `addr` and reads the reply until the server closes; `None` when it
/// cannot be reached.
pub(crate) fn ask(addr: SocketAddr, request: &[u8]) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    s.write_all(request).ok()?;
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    Some(reply)
}

#[derive(Debug)]
enum Server {
    Local(Local),
    External(String),
}

#[derive(Debug)]
struct Handle {
    kind: Kind,
    server: Server,
}

impl Handle {
    fn start(kind: Kind) -> Result<Handle, String> {
        match std::env::var(kind.env_var()) {
            Ok(list) if !list.trim().is_empty() => Ok(Handle {
                kind,
                server: Server::External(list.trim().to_string()),
            }),
            _ => Self::start_local(kind),
        }
    }

    fn start_local(kind: Kind) -> Result<Handle, String> {
        Local::start(kind).map(|l| Handle {
            kind,
            server: Server::Local(l),
        })
    }

    fn endpoints(&self) -> String {
        match &self.server {
            Server::Local(l) => format!("127.0.0.1:{}", l.port),
            Server::External(list) => list.clone(),
        }
    }

    fn url_with(&self, options: &str) -> String {
        store_url(self.kind, &self.endpoints(), options)
    }

    fn local(&mut self) -> &mut Local {
        match &mut self.server {
            Server::Local(l) => l,
            Server::External(list) => panic!(
                "cannot kill or restart the external {} server {list}; use start_local()",
                self.kind.name()
            ),
        }
    }

    fn kill(&mut self) {
        self.local().kill();
    }

    fn restart(&mut self) {
        let local = self.local();
        local.kill();
        let mut last = String::new();
        // The port may linger a moment after the kill; the data directory is kept.
        for _ in 0..5 {
            match local.launch() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        panic!(
            "restarting the {} test server failed: {last}",
            self.kind.name()
        );
    }

    fn started_in(&self) -> Option<Duration> {
        match &self.server {
            Server::Local(l) => Some(l.started_in),
            Server::External(_) => None,
        }
    }

    fn is_running(&self) -> bool {
        match &self.server {
            Server::Local(l) => l.child.is_some(),
            Server::External(_) => true,
        }
    }

    fn register_at_exit(&self) {
        if let Server::Local(l) = &self.server
            && let Some(child) = &l.child
        {
            clean_at_exit(child.id(), l.dir.path().to_path_buf());
        }
    }
}

macro_rules! server_type {
    ($name:ident, $kind:expr, $what:literal, $scheme:literal) => {
        #[doc = concat!("A ", $what, " server for tests; killed when dropped.")]
        #[derive(Debug)]
        pub struct $name(Handle);

        impl $name {
            #[doc = concat!("The ", $what, " server named by `", stringify!($kind), "`'s ")]
            /// environment variable if set, else a new local one. Fails the test (panics, saying
            /// what to install) when none can be had.
            pub fn start() -> Self {
                Self::try_start()
                    .unwrap_or_else(|why| missing(concat!("a ", $what, " test server"), &why))
            }

            /// Like [`start`](Self::start), returning why no server can be had instead of
            /// failing: for benchmarks, which report a backend they cannot measure and go on.
            pub fn try_start() -> Result<Self, String> {
                Handle::start($kind).map($name)
            }

            /// For a benchmark: [`try_start`](Self::try_start), saying on stderr why there is
            /// no server, so the bench leaves this backend's rows out and goes on.
            pub fn start_or_say() -> Option<Self> {
                Self::try_start()
                    .inspect_err(|why| eprintln!(concat!($what, ": no server: {}"), why))
                    .ok()
            }

            #[doc = concat!("A new local ", $what, " server, even when an external one is ")]
            /// configured: for fault tests that kill and restart it. Fails the test when none
            /// can be started.
            pub fn start_local() -> Self {
                Handle::start_local($kind)
                    .map($name)
                    .unwrap_or_else(|why| missing(concat!("a local ", $what, " test server"), &why))
            }

            #[doc = concat!("One ", $what, " server shared by every test of this process ")]
            /// (never killed by a test; removed when the process exits). Fails the test when
            /// none can be had.
            pub fn shared() -> &'static Self {
                static SHARED: OnceLock<$name> = OnceLock::new();
                SHARED.get_or_init(|| {
                    let s = Self::start();
                    s.0.register_at_exit();
                    s
                })
            }

            #[doc = concat!("A store URL `", $scheme, "://HOST:PORT/<fresh prefix>`.")]
            pub fn url(&self) -> String {
                self.0.url_with("")
            }

            /// Like [`url`](Self::url), with a query string such as `timeout=1s&ttl=2s`.
            pub fn url_with(&self, options: &str) -> String {
                self.0.url_with(options)
            }

            /// `host:port` of the server (comma-separated for several external ones).
            pub fn endpoints(&self) -> String {
                self.0.endpoints()
            }

            /// Kills the server with SIGKILL (fault tests). Panics for an external server.
            pub fn kill(&mut self) {
                self.0.kill()
            }

            /// Starts the server again on the same port and data directory and waits until it
            /// answers. Panics for an external server.
            pub fn restart(&mut self) {
                self.0.restart()
            }

            /// Whether the server process is running (always true for an external one).
            pub fn is_running(&self) -> bool {
                self.0.is_running()
            }

            /// How long the last start took until the server answered (`None` if external).
            pub fn started_in(&self) -> Option<Duration> {
                self.0.started_in()
            }
        }
    };
}

server_type!(EtcdServer, Kind::Etcd, "etcd", "etcd");
server_type!(ZooKeeperServer, Kind::ZooKeeper, "ZooKeeper", "zk");

#[cfg(test)]
mod tests {
    use super::*;

    fn pid_alive(pid: u32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
            && !fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    }

    fn check(kind: Kind) {
        let mut h = Handle::start_local(kind).unwrap_or_else(|why| missing(kind.name(), &why));
        let addr = h.endpoints();
        assert!(probe(kind, &addr), "{} answers after start", kind.name());
        let pid = match &h.server {
            Server::Local(l) => l.child.as_ref().unwrap().id(),
            Server::External(_) => unreachable!(),
        };
        let dir = match &h.server {
            Server::Local(l) => l.dir.path().to_path_buf(),
            Server::External(_) => unreachable!(),
        };
        h.kill();
        assert!(!probe(kind, &addr), "{} is down after kill", kind.name());
        assert!(!pid_alive(pid));
        h.restart();
        assert_eq!(h.endpoints(), addr, "restart keeps the port");
        assert!(probe(kind, &addr), "{} answers after restart", kind.name());
        let url = h.url_with("timeout=1s");
        assert!(
            url.starts_with(&format!("{}://{addr}/test-", kind.scheme())),
            "{url}"
        );
        assert!(url.ends_with("?timeout=1s"));
        assert_ne!(
            h.url_with(""),
            h.url_with(""),
            "every url has its own prefix"
        );
        drop(h);
        assert!(!probe(kind, &addr), "{} is down after drop", kind.name());
        assert!(!dir.exists(), "the data dir is removed");
    }

    #[test]
    fn etcd_starts_restarts_and_stops() {
        check(Kind::Etcd);
    }

    #[test]
    fn zookeeper_starts_restarts_and_stops() {
        check(Kind::ZooKeeper);
    }
}
