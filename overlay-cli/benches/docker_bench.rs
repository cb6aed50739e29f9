//! `docker run -d --net my-net` with the `ovl` driver (the host's agent) against Docker's
//! own `overlay` driver, on the same two Docker 20.10 engines sharing the same etcd as their
//! cluster store, in one run: the run's latency as the docker CLI sees it, and the store
//! requests each container costs (ours counted at our client, Docker's read off etcd's
//! `/metrics`), each less what the same interval costs with nothing happening.
//!
//! Run as root (it builds namespaces and engines, all removed at the end, even on failure):
//!
//! ```sh
//! cargo bench -p overlay-cli --bench docker_bench
//! ```
//!
//! Needs Debian's `docker.io`, `etcd-server` and `busybox-static` (`scripts/install-deps`).
//! `DOCKER_BENCH_RUNS` sets the containers per driver (default 20, alternating hosts).

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::docker::{DockerLab, SUBNET, ovl_create};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Requests our two agents' store clients have sent so far (watch events excluded).
fn our_requests(lab: &DockerLab) -> u64 {
    (0..lab.hosts.len())
        .map(|h| {
            let health = lab.agent_call(h, &json!({"op": "health"}));
            let c = &health["ok"]["store_requests"];
            let sum: u64 = c
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| *k != "watch_events")
                .filter_map(|(_, v)| v.as_u64())
                .sum();
            sum
        })
        .sum()
}

/// Requests etcd has received over HTTP: the v2 API, which only Docker 20.10's cluster store
/// speaks (our agents use v3, over gRPC).
fn etcd_requests(lab: &DockerLab) -> u64 {
    let text = lab.etcd.metrics(lab.store_ns.path());
    text.lines()
        .filter(|l| l.starts_with("etcd_http_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `docker run -d --net NETWORK --name NAME busybox sleep 600` on engine `h`: how long the CLI
/// took.
fn run(lab: &DockerLab, h: usize, network: &str, name: &str) -> Duration {
    let t = Instant::now();
    lab.engines[h].ok(&[
        "run", "-d", "--net", network, "--name", name, "busybox", "sleep", "600",
    ]);
    t.elapsed()
}

fn remove(lab: &DockerLab, names: &[(usize, String)]) {
    for (h, name) in names {
        lab.engines[*h].ok(&["rm", "-f", name]);
    }
}

/// The store requests `runs` containers on `network` (alternating hosts) cost, by each of
/// `counters`, less an idle interval of the same length; per container.
async fn requests(
    lab: &DockerLab,
    network: &str,
    runs: usize,
    counters: &[fn(&DockerLab) -> u64],
) -> Vec<f64> {
    let before: Vec<u64> = counters.iter().map(|c| c(lab)).collect();
    let started = Instant::now();
    let made: Vec<(usize, String)> = (0..runs)
        .map(|i| {
            let name = format!("{network}-r{i}");
            run(lab, i % 2, network, &name);
            (i % 2, name)
        })
        .collect();
    let busy = started.elapsed();
    let after: Vec<u64> = counters.iter().map(|c| c(lab)).collect();
    tokio::time::sleep(busy).await;
    let idle: Vec<u64> = counters.iter().map(|c| c(lab)).collect();
    remove(lab, &made);
    (0..counters.len())
        .map(|k| {
            let work = (after[k] - before[k]).saturating_sub(idle[k] - after[k]);
            work as f64 / runs as f64
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("DOCKER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = DockerLab::new("docker_bench", 3, true).await;
    let e1 = &lab.engines[0];
    // Its own VNI: Docker's overlay numbers its networks from 256, as this agent does.
    e1.ok(&ovl_create(&[
        "--subnet", SUBNET, "-o", "vni=4242", "ovl-net",
    ]));
    e1.ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.0.10.0/24",
        "docker-net",
    ]);
    // Latency: the two drivers' runs interleaved, so that both see the same machine.
    let (mut ovl, mut docker) = (Vec::new(), Vec::new());
    let mut made = Vec::new();
    for i in 0..runs + 2 {
        let h = i % 2;
        let a = run(&lab, h, "ovl-net", &format!("ovl-{i}"));
        let b = run(&lab, h, "docker-net", &format!("docker-{i}"));
        made.extend([(h, format!("ovl-{i}")), (h, format!("docker-{i}"))]);
        // The first container of each host makes its sandbox: a warm-up.
        if i >= 2 {
            ovl.push(a);
            docker.push(b);
        }
    }
    remove(&lab, &made);
    ovl.sort();
    docker.sort();
    // Store requests: one driver at a time, so that etcd's counters are one driver's.
    let ours = requests(&lab, "ovl-net", runs, &[our_requests, etcd_requests]).await;
    let theirs = requests(&lab, "docker-net", runs, &[etcd_requests]).await;
    e1.ok(&["network", "rm", "ovl-net"]);
    e1.ok(&["network", "rm", "docker-net"]);

    let p50 = |v: &[Duration]| ms(percentile(v, 0.5));
    let p90 = |v: &[Duration]| ms(percentile(v, 0.9));
    let version = e1.ok(&["version", "--format", "{{.Server.Version}}"]);
    println!(
        "\n`docker run -d --net NET busybox sleep 600` on two Docker {version} engines sharing \
         one etcd, {runs} containers per driver (runs interleaved)\n"
    );
    println!(
        "| driver | run p50 (ms) | run p90 (ms) | our store requests / container | engine's etcd v2 requests / container |"
    );
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| ovl (this agent) | {:.0} | {:.0} | {:.1} | {:.1} |",
        p50(&ovl),
        p90(&ovl),
        ours[0],
        ours[1]
    );
    println!(
        "| overlay (Docker's own) | {:.0} | {:.0} | | {:.1} |",
        p50(&docker),
        p90(&docker),
        theirs[0]
    );
    println!(
        "\nratios, ovl / overlay: run p50 {:.2}x; store requests per container {:.2}x (ours at \
         our client, Docker's overlay at etcd)",
        p50(&ovl) / p50(&docker),
        ours[0] / theirs[0].max(f64::MIN_POSITIVE)
    );
    let summary: Value = json!({
        "runs": runs,
        "ovl": {"p50_ms": p50(&ovl), "our_requests": ours[0], "engine_etcd_requests": ours[1]},
        "overlay": {"p50_ms": p50(&docker), "engine_etcd_requests": theirs[0]},
    });
    println!("\n{summary}");
}
