//! CNI ADD and DEL latency of `overlay-cni` (through the host's agent) against the reference
//! `bridge` + `host-local` plugins, each run as a runtime runs it: a new plugin process per
//! call, its start included, through the test suite's CNI runner, in one simulated host.
//!
//! Run as root (it creates namespaces, all removed at the end, even on failure):
//!
//! ```sh
//! cargo bench -p overlay-cli --bench cni_bench
//! ```
//!
//! Needs Debian's `containernetworking-plugins` (in /usr/lib/cni) and `iptables` (which the
//! bridge plugin's ipMasq runs).
//!
//! The agent keeps its host state where it does by default, under /run, which is a tmpfs on
//! a Debian host; where /run is not one (this sandbox), the bench mounts a tmpfs for it, so
//! that the figure is a host's, not this disk's. The embedded store stays on disk.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use overlay_core::dataplane::Netns;
use overlay_core::dataplane::lab::Lab;
use overlay_testkit::{CniEnv, CniRunner};
use serde_json::{Value, json};

/// Containers per plugin, after one warm-up call each.
const CONTAINERS: usize = 100;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One timed call; the bench stops on the first failure, saying which.
fn timed(runner: &CniRunner, command: &str, conf: &Value, env: &CniEnv) -> Duration {
    let t = Instant::now();
    let out = runner.exec(command, conf, env);
    let took = t.elapsed();
    assert!(
        out.success,
        "{} {command} of {} failed: {} {}",
        conf["type"], env.container_id, out.output, out.stderr
    );
    took
}

/// A tmpfs on a directory, unmounted when dropped (also when the bench fails).
struct Tmpfs(std::ffi::CString);

impl Tmpfs {
    fn mount(dir: &Path) -> Tmpfs {
        let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: every pointer is a NUL-terminated string that outlives the call.
        let rc = unsafe {
            libc::mount(
                c"tmpfs".as_ptr(),
                target.as_ptr(),
                c"tmpfs".as_ptr(),
                0,
                c"mode=0700,size=16m".as_ptr().cast(),
            )
        };
        assert_eq!(rc, 0, "mount a tmpfs on {}", dir.display());
        Tmpfs(target)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // SAFETY: the path is a NUL-terminated string we own.
        unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
    }
}

struct Plugin {
    label: &'static str,
    conf: Value,
    add: Vec<Duration>,
    del: Vec<Duration>,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("cni_bench needs root: it builds namespaces, veth and bridges");
        std::process::exit(1);
    }
    let cni_path = PathBuf::from("/usr/lib/cni");
    assert!(
        cni_path.join("bridge").is_file(),
        "the reference plugins are missing: apt-get install containernetworking-plugins"
    );
    let lab = Lab::new(&format!("cb{:x}", std::process::id())).expect("lab");
    let (host, _peer) = lab.two_hosts("host", "peer").await.expect("two hosts");
    let dir = tempfile::tempdir().expect("temp dir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let _tmpfs = Tmpfs::mount(&state);
    let socket = dir.path().join("agent.sock");
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let mut agent = tokio::process::Command::new(env!("CARGO_BIN_EXE_overlayctl"))
        .arg("--config")
        .arg(&config)
        .arg("--cluster-store")
        .arg(format!("file://{}/store.db", dir.path().display()))
        .arg("--socket")
        .arg(&socket)
        .args(["--cluster-advertise", "198.51.100.1", "--host-id"])
        .arg(lab.host_id("host"))
        .arg("--host-netns")
        .arg(host.path())
        .arg("agent")
        .arg("--state-dir")
        .arg(state.join("agent"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn overlayctl agent");
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    let ours_dir = Path::new(env!("CARGO_BIN_EXE_overlay-cni"))
        .parent()
        .unwrap()
        .to_path_buf();
    let runner = CniRunner::new([ours_dir, cni_path]).in_netns(host.path());
    let ipam = |n: &str| {
        json!({"type": "host-local", "subnet": format!("10.{n}.0.0/16"),
               "dataDir": dir.path().join(format!("ipam-{n}"))})
    };
    let mut plugins = [
        Plugin {
            label: "overlay-cni (via the agent)",
            conf: json!({"cniVersion": "1.0.0", "name": "my-net", "type": "overlay-cni",
                         "socket": socket, "create": {"subnet": "10.0.9.0/24"}}),
            add: Vec::new(),
            del: Vec::new(),
        },
        Plugin {
            label: "bridge + host-local",
            conf: json!({"cniVersion": "1.0.0", "name": "br-net", "type": "bridge",
                         "bridge": "cnibr0", "isGateway": true, "ipMasq": false,
                         "ipam": ipam("201")}),
            add: Vec::new(),
            del: Vec::new(),
        },
        Plugin {
            label: "bridge + host-local, ipMasq",
            conf: json!({"cniVersion": "1.0.0", "name": "masq-net", "type": "bridge",
                         "bridge": "cnibr1", "isGateway": true, "ipMasq": true,
                         "ipam": ipam("202")}),
            add: Vec::new(),
            del: Vec::new(),
        },
    ];
    // Namespaces, not timed: one set per plugin, plus one warm-up container each (the first
    // ADD creates the network, or the bridge).
    let mut containers: Vec<Vec<Netns>> = Vec::new();
    for (p, _) in plugins.iter().enumerate() {
        let mut set = Vec::new();
        for i in 0..=CONTAINERS {
            set.push(
                lab.namespace(&format!("p{p}c{i}"))
                    .await
                    .expect("container"),
            );
        }
        containers.push(set);
    }
    let env = |p: usize, i: usize, set: &[Netns]| {
        CniEnv::new(&format!("p{p}c{i}"), set[i].path(), "eth0")
    };
    // Interleaved, so that the machine's state is the same for every plugin.
    for i in 0..=CONTAINERS {
        for (p, plugin) in plugins.iter_mut().enumerate() {
            let d = timed(&runner, "ADD", &plugin.conf, &env(p, i, &containers[p]));
            if i > 0 {
                plugin.add.push(d);
            }
        }
    }
    for i in (0..=CONTAINERS).rev() {
        for (p, plugin) in plugins.iter_mut().enumerate() {
            let d = timed(&runner, "DEL", &plugin.conf, &env(p, i, &containers[p]));
            if i > 0 {
                plugin.del.push(d);
            }
        }
    }
    for p in &mut plugins {
        p.add.sort();
        p.del.sort();
    }
    let base = percentile(&plugins[1].add, 0.5);
    println!();
    println!("{CONTAINERS} containers per plugin, one plugin process per call");
    println!();
    println!("| plugin | ADD p50 | ADD p99 | DEL p50 | ADD p50 / bridge + host-local |");
    println!("|---|---|---|---|---|");
    for p in &plugins {
        let p50 = percentile(&p.add, 0.5);
        println!(
            "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.3} |",
            p.label,
            ms(p50),
            ms(percentile(&p.add, 0.99)),
            ms(percentile(&p.del, 0.5)),
            ms(p50) / ms(base)
        );
    }
    let ratio = ms(percentile(&plugins[0].add, 0.5)) / ms(base);
    println!();
    println!(
        "goal: overlay-cni's ADD p50 at most 0.25 × bridge + host-local's: {:.3} ({})",
        ratio,
        if ratio <= 0.25 { "met" } else { "NOT met" }
    );
    let _ = agent.start_kill();
    let _ = agent.wait().await;
}
