//! Real Docker engines (Debian's `docker.io`, 20.10) for simulated hosts, and an etcd they
//! can share as their cluster store, as this sandbox lets them run:
//!
//! - only the host's *network* namespace is entered (`nsenter --net`): `ip netns exec` would
//!   mount a fresh `/sys` and hide the cgroup hierarchies runc needs;
//! - mount and UTS namespaces of the engine's own (`unshare --mount --uts`), with its own
//!   hostname (the engines' gossip refuses two nodes named alike) and a private `/run` (a
//!   directory of the test bound over it: containerd hard-codes `/run/containerd`), so the
//!   engine's plugin directory is `<dir>/run/docker/plugins` seen from outside;
//! - its own data root, exec root, pidfile, API socket, `daemon.json`, cgroup parent and
//!   client configuration (`DOCKER_CONFIG`);
//! - the 20.10 client as `/usr/bin/docker` (a newer one may come first on `PATH`).
//!
//! Dropping an engine removes its containers and networks, stops it (SIGTERM, then SIGKILL),
//! kills what it left in the host's namespace (containerd, shims, proxies), and removes its
//! cgroups; its mounts die with its mount namespace.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::process::missing;

/// The 20.10 client.
pub const DOCKER: &str = "/usr/bin/docker";
/// The engine.
pub const DOCKERD: &str = "/usr/sbin/dockerd";

/// Fails the calling test unless the engine, its client and runtime, and the tools the
/// engines are started with are installed.
pub fn require_docker() {
    for tool in [DOCKER, DOCKERD, "/usr/bin/containerd", "/usr/bin/runc"] {
        if !Path::new(tool).exists() {
            missing(tool, "the docker.io package is not installed");
        }
    }
    for tool in ["nsenter", "unshare"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            missing(tool, "util-linux is not installed");
        }
    }
}

/// One engine of a simulated host.
#[derive(Debug)]
pub struct DockerEngine {
    name: String,
    dir: PathBuf,
    host_netns: PathBuf,
    launcher: Child,
}

/// How to start a [`DockerEngine`].
#[derive(Debug, Clone)]
pub struct EngineSpec<'a> {
    /// Its hostname, also its cgroup parent's name (unique on the machine).
    pub name: &'a str,
    /// The host's network namespace file.
    pub host_netns: &'a Path,
    /// A directory of its own (data, `/run`, configuration), removed by the caller.
    pub dir: &'a Path,
    /// `--cluster-store` and `--cluster-advertise`, for global-scope networks.
    pub cluster: Option<(String, String)>,
    /// The name server containers ask for names the engine does not know.
    pub dns: IpAddr,
}

impl DockerEngine {
    /// Starts the engine and waits (at most 60 s) until its API answers.
    pub fn start(spec: &EngineSpec<'_>) -> Result<DockerEngine, String> {
        let dir = spec.dir.to_path_buf();
        for d in ["run", "data", "client"] {
            std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("create {d}: {e}"))?;
        }
        let config = serde_json::json!({
            "storage-driver": "overlay2",
            "exec-opts": ["native.cgroupdriver=cgroupfs"],
            "cgroup-parent": format!("/{}", spec.name),
            "dns": [spec.dns.to_string()],
        });
        let config_file = dir.join("daemon.json");
        std::fs::write(&config_file, config.to_string()).map_err(|e| e.to_string())?;
        let mut dockerd = format!(
            "exec {DOCKERD} --config-file {cfg} --data-root {data} --exec-root /run/docker \
             --pidfile /run/docker.pid -H unix:///run/docker.sock",
            cfg = config_file.display(),
            data = dir.join("data").display(),
        );
        if let Some((store, advertise)) = &spec.cluster {
            dockerd.push_str(&format!(
                " --cluster-store {store} --cluster-advertise {advertise}"
            ));
        }
        let script = format!(
            "hostname {name} && mount --bind {run} /run && {dockerd}",
            name = spec.name,
            run = dir.join("run").display(),
        );
        let log = std::fs::File::create(dir.join("dockerd.log")).map_err(|e| e.to_string())?;
        let launcher = Command::new("nsenter")
            .arg(format!("--net={}", spec.host_netns.display()))
            .args(["unshare", "--mount", "--uts", "--propagation", "private"])
            .args(["sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start dockerd: {e}"))?;
        let mut engine = DockerEngine {
            name: spec.name.to_string(),
            dir,
            host_netns: spec.host_netns.to_path_buf(),
            launcher,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if engine
                .docker(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(engine);
            }
            if let Ok(Some(status)) = engine.launcher.try_wait() {
                return Err(format!(
                    "dockerd {} exited ({status}): {}",
                    engine.name,
                    engine.log_tail()
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "dockerd {} did not answer within 60 s: {}",
                    engine.name,
                    engine.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last lines of the engine's log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The engine's API socket, seen from outside its mount namespace.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("run/docker.sock")
    }

    /// Where the engine looks for plugin sockets, seen from outside.
    pub fn plugin_dir(&self) -> PathBuf {
        self.dir.join("run/docker/plugins")
    }

    /// The engine's hostname.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A `docker` command against this engine.
    pub fn docker(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.arg("-H")
            .arg(format!("unix://{}", self.socket().display()))
            .args(args)
            .env("DOCKER_CONFIG", self.dir.join("client"))
            .stdin(Stdio::null());
        c
    }

    /// Runs `docker args`: its output, whatever the outcome.
    pub fn run(&self, args: &[&str]) -> Output {
        self.docker(args)
            .output()
            .unwrap_or_else(|e| panic!("run docker {args:?}: {e}"))
    }

    /// Runs `docker args`, which must succeed; its trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?} on {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Imports the tar of a root filesystem as image `name`.
    pub fn import(&self, tar: &Path, name: &str) {
        self.ok(&[
            "import",
            "--change",
            "CMD [\"sh\"]",
            "--change",
            "ENV PATH=/bin",
            &tar.display().to_string(),
            name,
        ]);
    }
}

impl Drop for DockerEngine {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = self
                .docker(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        let ids = self
            .docker(&["ps", "-aq"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            quiet(&args);
        }
        let pid = std::fs::read_to_string(self.dir.join("run/docker.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
            .unwrap_or(self.launcher.id() as i32);
        // SAFETY: kill has no memory preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline && matches!(self.launcher.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.launcher.kill();
        let _ = self.launcher.wait();
        kill_in_netns(&self.host_netns);
        remove_cgroups(&self.name);
    }
}

/// SIGKILLs every process whose network namespace is the one at `netns` (what an engine
/// leaves behind: containerd, shims, proxies, containers on the host network).
pub fn kill_in_netns(netns: &Path) {
    let Ok(target) = std::fs::metadata(netns) else {
        return;
    };
    use std::os::unix::fs::MetadataExt;
    for _ in 0..3 {
        let mut found = false;
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            if pid == std::process::id() as i32 {
                continue;
            }
            let Ok(m) = std::fs::metadata(entry.path().join("ns/net")) else {
                continue;
            };
            if m.ino() == target.ino() && m.dev() == target.dev() {
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                found = true;
            }
        }
        if !found {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Removes the cgroup directories an engine named `name` made under each hierarchy.
fn remove_cgroups(name: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for h in hierarchies.flatten() {
        let root = h.path().join(name);
        remove_tree(&root);
    }
}

fn remove_tree(dir: &Path) {
    if let Ok(children) = std::fs::read_dir(dir) {
        for c in children.flatten() {
            if c.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&c.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// An etcd with the v2 API on (Docker 20.10's cluster store speaks v2), serving clients on
/// `ip:2379` inside the namespace at `netns`; killed when dropped.
#[derive(Debug)]
pub struct NetnsEtcd {
    child: Child,
    ip: IpAddr,
}

impl NetnsEtcd {
    /// Starts it with its data under `dir` and waits (at most 60 s) until it answers.
    pub fn start(netns: &Path, ip: IpAddr, dir: &Path) -> Result<NetnsEtcd, String> {
        let bin = crate::servers::Kind::Etcd.program()?;
        let client = format!("http://{ip}:2379");
        let log = std::fs::File::create(dir.join("etcd.log")).map_err(|e| e.to_string())?;
        let child = Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .arg(bin)
            .args(["--name", "lab", "--enable-v2"])
            .arg("--data-dir")
            .arg(dir.join("etcd-data"))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .args([
                "--listen-peer-urls=http://127.0.0.1:2380",
                "--initial-advertise-peer-urls=http://127.0.0.1:2380",
                "--initial-cluster=lab=http://127.0.0.1:2380",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("start etcd: {e}"))?;
        let etcd = NetnsEtcd { child, ip };
        let addr = std::net::SocketAddr::new(ip, 2379);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let path = netns.to_path_buf();
            let up = crate::tcp::in_netns(&path, move || {
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            })
            .unwrap_or(false);
            if up {
                return Ok(etcd);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("etcd did not answer within 60 s".into())
    }

    /// `etcd://IP:2379`, for Docker's `--cluster-store` (add a prefix for the agents').
    pub fn url(&self) -> String {
        format!("etcd://{}:2379", self.ip)
    }

    /// The `/metrics` text (from inside the namespace `netns`).
    pub fn metrics(&self, netns: &Path) -> String {
        let addr = std::net::SocketAddr::new(self.ip, 2379);
        crate::tcp::in_netns(netns, move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).ok()?;
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            Some(text)
        })
        .ok()
        .flatten()
        .unwrap_or_default()
    }
}

impl NetnsEtcd {
    /// The keys under `prefix` (v3, through etcd's JSON gateway, from inside `netns`).
    pub fn keys(&self, netns: &Path, prefix: &str) -> Vec<String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({
            "key": b64.encode(prefix),
            "range_end": b64.encode(&end),
            "keys_only": true,
        })
        .to_string();
        let addr = std::net::SocketAddr::new(self.ip, 2379);
        let text = crate::tcp::in_netns(netns, move || {
            use std::io::{Read, Write};
            let mut s = std::net::TcpStream::connect(addr).ok()?;
            let req = format!(
                "POST /v3/kv/range HTTP/1.0\r\nContent-Type: application/json\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).ok()?;
            let mut text = String::new();
            s.read_to_string(&mut text).ok()?;
            Some(text)
        })
        .ok()
        .flatten()
        .unwrap_or_default();
        let json = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let doc: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
        doc["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| b64.decode(kv["key"].as_str()?).ok())
            .map(|k| String::from_utf8_lossy(&k).into_owned())
            .collect()
    }
}

impl Drop for NetnsEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tar of a root filesystem holding Debian's static busybox and the applets tests use,
/// made under `dir`: the image that `docker import` and `podman import` make (there is no
/// registry here).
pub fn busybox_rootfs(dir: &Path) -> PathBuf {
    let busybox = Path::new("/bin/busybox");
    // ldd says so of a static binary (and fails on a missing one).
    let is_static = Command::new("ldd")
        .arg(busybox)
        .output()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout) + String::from_utf8_lossy(&o.stderr);
            text.contains("not a dynamic executable") || text.contains("statically linked")
        })
        .unwrap_or(false);
    if !is_static {
        missing(
            "a static /bin/busybox",
            "the busybox-static package is not installed",
        );
    }
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    for d in ["etc", "tmp", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "nc", "cat", "nslookup", "echo", "ip", "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    let tar = dir.join("rootfs.tar");
    let ok = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .arg("-cf")
        .arg(&tar)
        .arg(".")
        .status()
        .expect("tar")
        .success();
    assert!(ok, "tar the rootfs");
    tar
}
