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
use support::docker::{DockerLab, SUBNET};

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

struct Outcome {
    p50: Duration,
    p90: Duration,
    requests_per_container: f64,
}

/// `runs` containers on `network` (alternating hosts), timed; the store requests they cost
/// by `count`, less an idle interval of the same length.
async fn measure(
    lab: &DockerLab,
    network: &str,
    runs: usize,
    count: fn(&DockerLab) -> u64,
) -> Outcome {
    let run = |i: usize| {
        let name = format!("{network}-c{i}");
        let t = Instant::now();
        lab.engines[i % 2].ok(&[
            "run", "-d", "--net", network, "--name", &name, "busybox", "sleep", "600",
        ]);
        t.elapsed()
    };
    run(runs); // warm-up: the first container on a host makes its sandbox
    run(runs + 1);
    let before = count(lab);
    let started = Instant::now();
    let mut took: Vec<Duration> = (0..runs).map(run).collect();
    let busy = started.elapsed();
    let after = count(lab);
    tokio::time::sleep(busy).await;
    let idle = count(lab) - after;
    for i in 0..runs + 2 {
        lab.engines[i % 2].ok(&["rm", "-f", &format!("{network}-c{i}")]);
    }
    took.sort();
    Outcome {
        p50: percentile(&took, 0.5),
        p90: percentile(&took, 0.9),
        requests_per_container: (after - before).saturating_sub(idle) as f64 / runs as f64,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::var("DOCKER_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let lab = DockerLab::new("docker_bench", 3, true).await;
    let e1 = &lab.engines[0];

    e1.ok(&[
        "network",
        "create",
        "-d",
        "ovl",
        "--ipam-driver",
        "ovl",
        "--subnet",
        SUBNET,
        "ovl-net",
    ]);
    let ours = measure(&lab, "ovl-net", runs, our_requests).await;
    e1.ok(&["network", "rm", "ovl-net"]);

    e1.ok(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.0.10.0/24",
        "docker-net",
    ]);
    let docker = measure(&lab, "docker-net", runs, etcd_requests).await;
    e1.ok(&["network", "rm", "docker-net"]);

    let row = |name: &str, o: &Outcome| {
        println!(
            "| {name:<28} | {:>8.0} | {:>8.0} | {:>12.1} |",
            ms(o.p50),
            ms(o.p90),
            o.requests_per_container
        )
    };
    println!(
        "\n`docker run -d --net NET busybox sleep 600`, {runs} containers per driver on two Docker 20.10 engines\n"
    );
    println!("| driver                       | p50 (ms) | p90 (ms) | store req/ctr |");
    println!("|------------------------------|---------:|---------:|--------------:|");
    row("ovl (this agent)", &ours);
    row("overlay (Docker's own)", &docker);
    println!(
        "\nratios, ovl / overlay: run p50 {:.2}x, store requests per container {:.2}x",
        ms(ours.p50) / ms(docker.p50),
        ours.requests_per_container / docker.requests_per_container.max(f64::MIN_POSITIVE)
    );
    let summary: Value = json!({
        "runs": runs,
        "ovl": {"p50_ms": ms(ours.p50), "p90_ms": ms(ours.p90), "requests_per_container": ours.requests_per_container},
        "overlay": {"p50_ms": ms(docker.p50), "p90_ms": ms(docker.p90), "requests_per_container": docker.requests_per_container},
    });
    println!("\n{summary}");
}
