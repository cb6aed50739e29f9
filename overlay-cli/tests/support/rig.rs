//! Two simulated hosts, each with its `overlayctl agent`, for the tests of the CNI plugin.

use std::path::PathBuf;

use overlay_core::dataplane::Netns;
use overlay_core::dataplane::lab::Lab;
use overlay_testkit::CniRunner;
use serde_json::{Value, json};

use super::{Host, NamespaceSweep, Proc, agent};

/// Two hosts with their agents, and the runner that calls the plugin for them.
pub struct Rig {
    /// First to drop: an agent still running while the lab sweeps would heal its sandboxes
    /// back, and they would outlive the test.
    pub agents: Vec<Proc>,
    /// The prefix of every namespace the test makes (swept when the rig goes).
    pub prefix: String,
    pub lab: Lab,
    pub hosts: Vec<Host>,
    pub runner: CniRunner,
    pub dir: tempfile::TempDir,
    _sweep: NamespaceSweep,
}

impl Rig {
    /// Two hosts on `store` (default: an embedded store of the rig's own), with namespace
    /// names unique to `tag` within this test process.
    pub async fn new(test: &str, tag: u32, store: Option<String>) -> Rig {
        overlay_testkit::require_root(test);
        let prefix = format!("n{:x}", std::process::id() ^ (tag << 24));
        let sweep = NamespaceSweep(prefix.clone());
        let lab = Lab::new(&prefix).expect("lab");
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("config.toml");
        std::fs::write(&config, "").unwrap();
        let url = store.unwrap_or_else(|| format!("file://{}/store.db", dir.path().display()));
        let (a, b) = lab.two_hosts("host1", "host2").await.expect("two hosts");
        let hosts: Vec<Host> = [a, b]
            .into_iter()
            .enumerate()
            .map(|(i, ns)| Host {
                ns,
                socket: dir.path().join(format!("host{}.sock", i + 1)),
                store: url.clone(),
                config: config.clone(),
            })
            .collect();
        let mut agents = Vec::new();
        for (i, h) in hosts.iter().enumerate() {
            let id = lab.host_id(&format!("host{}", i + 1));
            agents.push(agent(h, &id, &format!("198.51.100.{}", i + 1)).await);
        }
        let plugin = PathBuf::from(env!("CARGO_BIN_EXE_overlay-cni"));
        let runner = CniRunner::new([plugin.parent().unwrap().to_path_buf()]);
        Rig {
            prefix,
            lab,
            hosts,
            agents,
            runner,
            dir,
            _sweep: sweep,
        }
    }

    /// The network configuration of host `h` in version `version`.
    pub fn conf(&self, h: usize, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "my-net",
            "type": "overlay-cni",
            "socket": self.hosts[h].socket,
            "create": {"subnet": "10.0.9.0/24", "vni": 4242},
        })
    }

    pub async fn container(&self, name: &str) -> Netns {
        self.lab.namespace(name).await.expect("container namespace")
    }

    /// One request to host `h`'s agent, straight on its socket.
    pub fn agent_call(&self, h: usize, request: &Value) -> Value {
        use std::io::{BufRead, BufReader, Write};
        let mut s = std::os::unix::net::UnixStream::connect(&self.hosts[h].socket).unwrap();
        s.write_all(format!("{request}\n").as_bytes()).unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// This host's attachments of my-net, as the agent lists them. Panics on an error answer:
    /// "none attached" is only read from a listing.
    pub fn attachments(&self, h: usize) -> Vec<Value> {
        let r = self.agent_call(h, &json!({"op": "attachments", "network": "my-net"}));
        match r.get("ok") {
            Some(Value::Array(list)) => list.clone(),
            _ => panic!("the attachments of my-net on host {h}: {r}"),
        }
    }
}
