//! A real container runtime on overlay networks: Debian's Podman (CNI backend, runc) runs the
//! seed's `zookeeper1` on host 1 and `zookeeper2` on host 2 through `overlay-cni`, from an
//! image imported from a busybox-static rootfs (there is no registry here). Each reaches the
//! other over TCP by `name` and `name.my-net`, through the names the project's resolver
//! answers; `podman rm -f` leaves no endpoint, address or link behind.
//!
//! Needs root, `podman`, `runc` and `busybox-static` (`scripts/install-deps`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use overlay_testkit::TcpGreeter;
use overlay_testkit::links;
use serde_json::json;
use support::rig::Rig;

/// Podman for one simulated host: its own storage, run directory and CNI configuration, run
/// inside the host's network namespace (entered with `nsenter --net`: `ip netns exec` would
/// mount a fresh /sys and hide the cgroups runc needs).
struct Podman {
    host_ns: PathBuf,
    dir: PathBuf,
}

impl Podman {
    fn new(rig: &Rig, h: usize) -> Podman {
        let dir = rig.dir.path().join(format!("podman{}", h + 1));
        let cni = dir.join("cni");
        std::fs::create_dir_all(&cni).unwrap();
        let plugin_dir = Path::new(env!("CARGO_BIN_EXE_overlay-cni"))
            .parent()
            .unwrap()
            .to_path_buf();
        // What this sandbox needs: the CNI backend (netavark is installed too, for the
        // resolver benchmark's baseline), runc (crun refuses this cgroup v1 hybrid setup).
        let conf = format!(
            "[engine]\nruntime = \"runc\"\nevents_logger = \"file\"\n\
             [network]\nnetwork_backend = \"cni\"\n\
             cni_plugin_dirs = [{plugins:?}, \"/usr/lib/cni\"]\n\
             network_config_dir = {cni:?}\n",
            plugins = plugin_dir.display().to_string(),
            cni = cni.display().to_string(),
        );
        std::fs::write(dir.join("containers.conf"), conf).unwrap();
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "my-net",
            "plugins": [{
                "type": "overlay-cni",
                "socket": rig.hosts[h].socket,
                "create": {"subnet": "10.0.9.0/24"},
                "capabilities": {"aliases": true, "portMappings": true}
            }]
        });
        std::fs::write(cni.join("my-net.conflist"), list.to_string()).unwrap();
        Podman {
            host_ns: rig.hosts[h].ns.path().to_path_buf(),
            dir,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.host_ns.display()))
            .arg("podman")
            .arg("--root")
            .arg(self.dir.join("root"))
            .arg("--runroot")
            .arg(self.dir.join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"))
            .args(["--storage-driver", "vfs", "--cgroup-manager", "cgroupfs"])
            .args(args)
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"));
        c
    }

    /// Runs podman with `args`; its stdout, or the test fails with its stderr.
    fn ok(&self, args: &[&str]) -> String {
        let out = self
            .cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("run podman: {e}"));
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// `podman run -d --network my-net --name NAME` of `sleep`, with the ulimits this
    /// sandbox allows (no CAP_SYS_RESOURCE: runc may not raise a limit, so ask for the
    /// current ones).
    fn run(&self, name: &str) -> String {
        let nofile = limit(libc::RLIMIT_NOFILE, u64::MAX);
        let nproc = limit(libc::RLIMIT_NPROC, 32768);
        self.ok(&[
            "run",
            "-d",
            "--network",
            "my-net",
            "--name",
            name,
            "--ulimit",
            &format!("nofile={nofile}:{nofile}"),
            "--ulimit",
            &format!("nproc={nproc}:{nproc}"),
            "localhost/busybox",
            "sleep",
            "600",
        ])
    }

    /// The container's network namespace, as podman made it.
    fn netns(&self, name: &str) -> PathBuf {
        PathBuf::from(self.ok(&[
            "inspect",
            "--format",
            "{{.NetworkSettings.SandboxKey}}",
            name,
        ]))
    }

    /// What `nc NAME 2181` prints inside container `from`.
    fn fetch(&self, from: &str, name: &str) -> String {
        let out = self
            .cmd(&["exec", from, "nc", "-w", "3", name, "2181"])
            .output()
            .expect("podman exec");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        // Every container goes (their DEL runs while the agents still listen).
        let _ = self.cmd(&["rm", "-a", "-f", "-t", "0"]).output();
    }
}

/// The current soft limit of `resource`, at most `cap`.
fn limit(resource: libc::__rlimit_resource_t, cap: u64) -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    let rc = unsafe { libc::getrlimit(resource, &mut l) };
    assert_eq!(rc, 0, "getrlimit");
    l.rlim_cur.min(cap)
}

fn require_podman() {
    for tool in ["podman", "runc", "nsenter", "ldd"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            overlay_testkit::missing(tool, "it is not installed");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn podman_containers_on_two_hosts_reach_each_other_by_name() {
    overlay_testkit::require_root("podman_containers_on_two_hosts_reach_each_other_by_name");
    require_podman();
    let rig = Rig::new(
        "podman_containers_on_two_hosts_reach_each_other_by_name",
        6,
        None,
    )
    .await;
    let tar = overlay_testkit::busybox_rootfs(rig.dir.path());
    let hosts = [Podman::new(&rig, 0), Podman::new(&rig, 1)];
    for p in &hosts {
        p.ok(&["import", tar.to_str().unwrap(), "localhost/busybox"]);
    }
    let host1_links = links(&hosts[0].host_ns);

    let names = ["zookeeper1", "zookeeper2"];
    let mut greeters = Vec::new();
    for (p, name) in hosts.iter().zip(names) {
        p.run(name);
        // The container's own greeting on 2181, served inside its namespace.
        let ns = p.netns(name);
        let greeting: &'static str = Box::leak(format!("imok {name}").into_boxed_str());
        greeters.push(TcpGreeter::start(&ns, ([0, 0, 0, 0], 2181).into(), greeting).unwrap());
    }
    let att1 = rig.attachments(0);
    assert_eq!(att1.len(), 1, "{att1:?}");
    assert_eq!(
        att1[0]["name"], "zookeeper1",
        "the container's name is its name on the network"
    );
    assert_eq!(att1[0]["owner"], "overlay-cni");

    // Each reaches the other across the hosts, by name and by name.my-net.
    for (from, to) in [(1, 0), (0, 1)] {
        for target in [names[to].to_string(), format!("{}.my-net", names[to])] {
            let want = format!("imok {}", names[to]);
            let mut got = String::new();
            support::wait_until(
                &format!("{} reaches {target}", names[from]),
                Duration::from_secs(20),
                async || {
                    got = hosts[from].fetch(names[from], &target);
                    got == want
                },
            )
            .await;
        }
    }
    let ip1 = att1[0]["addresses"][0]["address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();

    // rm -f: the plugin's DEL leaves no endpoint, address or link behind.
    hosts[0].ok(&["rm", "-f", "-t", "0", "zookeeper1"]);
    drop(greeters.remove(0));
    assert!(rig.attachments(0).is_empty(), "no endpoint on host 1");
    let inspect = rig.agent_call(1, &json!({"op": "inspect", "network": "my-net"}));
    let containers = inspect["ok"]["Containers"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    assert!(
        containers.values().all(|c| c["Name"] != "zookeeper1"),
        "host 2 no longer sees zookeeper1: {containers:?}"
    );
    // Host 1 has no container left: the gateway bridge and veth ends went with the last one.
    support::wait_until(
        "host 1's links are as before",
        Duration::from_secs(10),
        async || links(&hosts[0].host_ns) == host1_links,
    )
    .await;
    // The address went back to the pool: a container may take it by number.
    let probe = rig.container("probe").await;
    let r = rig.agent_call(
        1,
        &json!({"op": "connect", "network": "my-net",
               "container": {"id": "probe", "name": "probe", "netns": {"path": probe.path()},
                             "ipv4": ip1}}),
    );
    assert!(r.get("ok").is_some(), "{r}");
    rig.agent_call(
        1,
        &json!({"op": "disconnect", "network": "my-net", "container_id": "probe"}),
    );
}
