//! The seed's walkthrough typed into real Docker engines: Debian's `docker.io` (20.10) on
//! two simulated hosts, each engine with `overlayctl agent --docker-plugin` as its `ovl`
//! network and IPAM driver, the cluster store an etcd on the hosts' LAN (with its v2 API on,
//! which Docker's own `--cluster-store` speaks). Once in global scope (the engines share the
//! etcd, so one `docker network create` is seen by both) and once in local scope (no cluster
//! store: each engine creates `my-net`, and the name makes them one network).
//!
//! Needs root, `docker.io`, `etcd-server` and `busybox-static` (`scripts/install-deps`).

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use overlay_core::dataplane::Netns;
use overlay_core::dataplane::lab::Lab;
use overlay_testkit::{DockerEngine, EngineSpec, NetnsEtcd};
use serde_json::{Value, json};
use support::{NamespaceSweep, Proc, wait_until};

/// Two hosts and a store on one LAN, an engine and an agent on each host. Fields drop in
/// order: the engines first (removing their containers still calls the drivers), then the
/// agents, the store, the namespaces and the files.
struct DockerLab {
    engines: Vec<DockerEngine>,
    _agents: Vec<Proc>,
    _etcd: NetnsEtcd,
    hosts: Vec<Netns>,
    _store_ns: Netns,
    sockets: Vec<PathBuf>,
    prefix: String,
    _lab: Lab,
    _sweep: NamespaceSweep,
    _dir: tempfile::TempDir,
}

const SUBNET: &str = "10.0.9.0/24";
/// The network's gateway, where the agent's resolver answers in the network's sandbox.
const RESOLVER: &str = "10.0.9.1";

impl DockerLab {
    async fn new(test: &str, tag: u32, global: bool) -> DockerLab {
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
            _etcd: etcd,
            hosts,
            _store_ns: store_ns,
            sockets,
            prefix,
            _lab: lab,
            _sweep: sweep,
            _dir: dir,
        }
    }

    /// One request to host `h`'s agent on its socket.
    fn agent_call(&self, h: usize, request: &Value) -> Value {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.sockets[h]).unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }
}

/// The names of the links in namespace `ns` (assertions only).
fn links(ns: &Path) -> Vec<String> {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["ip", "-j", "link", "show"])
        .output()
        .expect("ip link");
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    doc.as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect()
}

/// `docker run -d --net my-net --name NAME` of a server greeting every connection to 2181
/// with `imok NAME`.
fn zookeeper(e: &DockerEngine, name: &str, extra: &[&str]) {
    let serve = format!("while true; do echo imok {name} | nc -l -p 2181; done");
    let mut args = vec!["run", "-d", "--net", "my-net", "--name", name];
    args.extend(extra);
    args.extend(["busybox", "sh", "-c", &serve]);
    e.ok(&args);
}

/// What `nc TARGET 2181` prints in container `from`.
fn fetch(e: &DockerEngine, from: &str, target: &str) -> String {
    let out = e.run(&["exec", from, "nc", "-w", "3", target, "2181"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The seed's walkthrough on the lab: four zookeepers, TCP between every pair by name and
/// `name.my-net`, inspect on both engines, and nothing left after `docker rm -f` and
/// `docker network rm`.
async fn walkthrough(lab: &DockerLab, global: bool) {
    let (e1, e2) = (&lab.engines[0], &lab.engines[1]);
    let create = [
        "network",
        "create",
        "--driver",
        "ovl",
        "--ipam-driver",
        "ovl",
        "--subnet",
        SUBNET,
        "--label",
        "app=zookeeper",
        "my-net",
    ];
    let id1 = e1.ok(&create);
    if global {
        // Seen on host 2 with the same id, without a create there.
        let ls = e2.ok(&[
            "network",
            "ls",
            "--filter",
            "driver=ovl",
            "--format",
            "{{.ID}} {{.Name}} {{.Scope}}",
        ]);
        assert_eq!(ls, format!("{} my-net global", &id1[..12]));
    } else {
        let id2 = e2.ok(&create);
        assert_ne!(id1, id2, "in local scope each engine has its own id");
        // A second create with other options is the cluster's my-net all the same: refused
        // at its first use, with both values named.
    }
    // Containers of local scope ask the network's resolver for names their engine does not
    // know; Docker's resolver answers for the others in global scope.
    let dns: &[&str] = if global { &[] } else { &["--dns", RESOLVER] };
    let placement = [
        (0, "zookeeper1"),
        (1, "zookeeper2"),
        (0, "zookeeper3"),
        (1, "zookeeper4"),
    ];
    for (h, name) in placement {
        zookeeper(&lab.engines[h], name, dns);
    }
    for (hf, from) in placement {
        for (_, to) in placement.iter().filter(|(_, n)| *n != from) {
            for target in [to.to_string(), format!("{to}.my-net")] {
                let want = format!("imok {to}");
                let mut got = String::new();
                wait_until(
                    &format!("{from} reaches {target}"),
                    Duration::from_secs(20),
                    async || {
                        got = fetch(&lab.engines[hf], from, &target);
                        got == want
                    },
                )
                .await;
            }
        }
    }
    // The engines' view.
    for e in [e1, e2] {
        let doc: Value = serde_json::from_str(&e.ok(&["network", "inspect", "my-net"])).unwrap();
        let n = &doc[0];
        assert_eq!(n["Driver"], "ovl", "{n}");
        assert_eq!(n["IPAM"]["Driver"], "ovl", "{n}");
        assert_eq!(n["IPAM"]["Config"][0]["Subnet"], SUBNET, "{n}");
        assert_eq!(n["Scope"], if global { "global" } else { "local" }, "{n}");
        if global {
            assert_eq!(n["Id"], id1.as_str(), "{n}");
        }
    }
    // The cluster's view: the four, named, with four distinct addresses.
    let mut names = Vec::new();
    wait_until(
        "the cluster knows the names",
        Duration::from_secs(10),
        async || {
            let inspect = lab.agent_call(0, &json!({"op": "inspect", "network": "my-net"}));
            let containers = inspect["ok"]["Containers"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            names = containers
                .values()
                .map(|c| {
                    (
                        c["Name"].as_str().unwrap_or("").to_string(),
                        c["IPv4Address"].clone(),
                    )
                })
                .collect::<Vec<_>>();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            names.iter().map(|n| n.0.as_str()).collect::<Vec<_>>()
                == ["zookeeper1", "zookeeper2", "zookeeper3", "zookeeper4"]
        },
    )
    .await;
    let mut addresses: Vec<String> = names.iter().map(|n| n.1.to_string()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 4, "no address twice: {names:?}");
    let net = lab.agent_call(1, &json!({"op": "inspect", "network": "my-net"}));
    assert_eq!(net["ok"]["Labels"]["app"], "zookeeper", "{net}");

    // Nothing left behind.
    for (h, name) in placement {
        lab.engines[h].ok(&["rm", "-f", name]);
    }
    e1.ok(&["network", "rm", "my-net"]);
    if !global {
        e2.ok(&["network", "rm", "my-net"]);
    }
    wait_until(
        "the cluster has no network",
        Duration::from_secs(10),
        async || lab.agent_call(0, &json!({"op": "networks"}))["ok"] == json!([]),
    )
    .await;
    for h in &lab.hosts {
        let ours: Vec<String> = links(h.path())
            .into_iter()
            .filter(|l| l.starts_with("ovl"))
            .collect();
        assert!(ours.is_empty(), "no interface waits in the host: {ours:?}");
    }
    let left: Vec<String> = Netns::list_named(&lab.prefix)
        .unwrap()
        .into_iter()
        .filter(|n| {
            !["host1", "host2", "store", "lan"]
                .iter()
                .any(|s| n.ends_with(&format!("-{s}")))
        })
        .collect();
    assert!(left.is_empty(), "no sandbox is left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_walkthrough_in_global_scope() {
    let test = "docker_walkthrough_in_global_scope";
    let lab = DockerLab::new(test, 1, true).await;
    let e1 = &lab.engines[0];
    // Errors come back with our message and what to do, as the docker CLI prints them.
    let out = e1.run(&[
        "network",
        "create",
        "-d",
        "ovl",
        "--ipam-driver",
        "ovl",
        "--subnet",
        SUBNET,
        "-o",
        "color=red",
        "bad",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no option \"color\""),
        "{err}"
    );
    let out = e1.run(&["network", "create", "-d", "ovl", "local-ipam"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--ipam-driver"),
        "{err}"
    );
    walkthrough(&lab, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_walkthrough_in_local_scope() {
    let test = "docker_walkthrough_in_local_scope";
    let lab = DockerLab::new(test, 2, false).await;
    walkthrough(&lab, false).await;
}
