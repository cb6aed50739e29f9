//! Two simulated hosts and a store on one LAN, a real Docker engine and an
//! `overlayctl agent --docker-plugin` on each host: the Docker driver's test and benchmark.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use overlay_core::dataplane::Netns;
use overlay_core::dataplane::lab::Lab;
use overlay_testkit::{DockerEngine, EngineSpec, NetnsEtcd};
use serde_json::Value;

use super::{NamespaceSweep, Proc, wait_until};

/// Two hosts and a store on one LAN, an engine and an agent on each host. Fields drop in
/// order: the engines first (removing their containers still calls the drivers), then the
/// agents, the store, the namespaces and the files.
pub struct DockerLab {
    pub engines: Vec<DockerEngine>,
    _agents: Vec<Proc>,
    pub etcd: NetnsEtcd,
    pub hosts: Vec<Netns>,
    pub store_ns: Netns,
    pub sockets: Vec<PathBuf>,
    pub prefix: String,
    _lab: Lab,
    _sweep: NamespaceSweep,
    _dir: tempfile::TempDir,
}

pub const SUBNET: &str = "10.0.9.0/24";
/// The network's gateway, where the agent's resolver answers in the network's sandbox.
pub const RESOLVER: &str = "10.0.9.1";

impl DockerLab {
    /// The lab, its engines sharing the etcd as their cluster store if `global`.
    pub async fn new(test: &str, tag: u32, global: bool) -> DockerLab {
        overlay_testkit::require_root(test);
        overlay_testkit::require_docker();
        let prefix = format!("d{:x}", std::process::id() ^ (tag << 24));
        let sweep = NamespaceSweep(prefix.clone());
        let lab = Lab::new(&prefix).expect("lab");
        let dir = tempfile::tempdir().expect("temp dir");
        let h1 = lab.namespace("host1").await.expect("host1");
        let h2 = lab.namespace("host2").await.expect("host2");
        let store_ns = lab.namespace("store").await.expect("store");
        let ip = |n: u8| format!("198.51.100.{n}/24").parse().unwrap();
        lab.lan(&[(&h1, ip(1)), (&h2, ip(2)), (&store_ns, ip(3))])
            .await
            .expect("LAN");
        let etcd_ip: IpAddr = "198.51.100.3".parse().unwrap();
        let etcd = NetnsEtcd::start(store_ns.path(), etcd_ip, dir.path()).expect("etcd");
        let hosts = vec![h1, h2];
        let mut engines = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let name = format!("{prefix}-host{}", i + 1);
            let edir = dir.path().join(format!("engine{}", i + 1));
            let cluster = global.then(|| (etcd.url(), "underlay0:2376".to_string()));
            let spec = EngineSpec {
                name: &name,
                host_netns: h.path(),
                dir: &edir,
                cluster,
                dns: etcd_ip,
            };
            engines.push(DockerEngine::start(&spec).unwrap_or_else(|e| panic!("{e}")));
        }
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let store = format!("{}/{prefix}", etcd.url());
        let mut agents = Vec::new();
        let mut sockets = Vec::new();
        for (i, (h, e)) in hosts.iter().zip(&engines).enumerate() {
            let socket = dir.path().join(format!("agent{}.sock", i + 1));
            let mut cmd = tokio::process::Command::new("nsenter");
            cmd.arg(format!("--net={}", h.path().display()))
                .arg(env!("CARGO_BIN_EXE_overlayctl"))
                .arg("--config")
                .arg(&config)
                .args(["--cluster-store", &store])
                .args(["--cluster-advertise", &format!("198.51.100.{}", i + 1)])
                .arg("--socket")
                .arg(&socket)
                .args(["--host-id", &lab.host_id(&format!("host{}", i + 1))])
                .arg("agent")
                .arg("--state-dir")
                .arg(dir.path().join(format!("state{}", i + 1)))
                .arg("--docker-plugin")
                .arg(e.plugin_dir().join("ovl.sock"))
                .arg("--docker-host")
                .arg(format!("unix://{}", e.socket().display()))
                .kill_on_drop(true);
            for (key, _) in std::env::vars() {
                if key.starts_with("OVERLAY_") {
                    cmd.env_remove(key);
                }
            }
            let mut p = Proc::spawn(cmd, &format!("agent {}", i + 1));
            let plugin = e.plugin_dir().join("ovl.sock");
            wait_until(
                "the agent serves the driver",
                Duration::from_secs(30),
                async || {
                    assert!(p.running(), "agent {} exited early (see its stderr)", i + 1);
                    plugin.exists() && socket.exists()
                },
            )
            .await;
            agents.push(p);
            sockets.push(socket);
        }
        let tar = overlay_testkit::busybox_rootfs(dir.path());
        for e in &engines {
            e.import(&tar, "busybox");
        }
        DockerLab {
            engines,
            _agents: agents,
            etcd,
            hosts,
            store_ns,
            sockets,
            prefix,
            _lab: lab,
            _sweep: sweep,
            _dir: dir,
        }
    }

    /// Every key the agents' store holds (under the lab's prefix).
    pub fn store_keys(&self) -> Vec<String> {
        self.etcd
            .keys(self.store_ns.path(), &format!("{}/", self.prefix))
    }

    /// One request to host `h`'s agent on its socket.
    pub fn agent_call(&self, h: usize, request: &Value) -> Value {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.sockets[h]).unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

/// `docker network create --driver ovl --ipam-driver ovl` and then `args` (options, the name).
pub fn ovl_create<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "network",
        "create",
        "--driver",
        "ovl",
        "--ipam-driver",
        "ovl",
    ];
    v.extend_from_slice(args);
    v
}
