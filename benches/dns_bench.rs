//! Resolver benchmark: queries per second and p50/p99 latency for container names and for
//! forwarded names, asked from inside a container, against Debian's `aardvark-dns` (1.4, the
//! resolver Podman's netavark runs) serving the same names on the same host in the same run.
//!
//! The host is a namespace on an underlay LAN whose other end holds the upstream resolver.
//! Ours answers at the network's gateway address in the sandbox; aardvark-dns listens where
//! netavark would put it, on the host's bridge address (the gateway bridge, which the
//! container reaches through its `eth1`), with the container's addresses in its config. Both
//! forward to the same upstream. Rounds alternate between the two, so a slow moment of the
//! machine hits both; the table shows each figure's median over the rounds.
//!
//! Run as root (every namespace and process is removed at the end, even on failure):
//!
//! ```sh
//! cargo bench --bench dns_bench
//! ```
//!
//! Needs Debian's `aardvark-dns` (`/usr/lib/podman/aardvark-dns`; `AARDVARK_DNS` overrides).

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use overlay::dataplane::lab::Lab;
use overlay::{ContainerSpec, Controller, ControllerOptions, NetnsRef, NetworkOptions};
use overlay_testkit::{DnsUpstream, dns_query};

/// Containers whose names are asked.
const NAMES: usize = 100;
/// Clients asking at once (one socket each, one query in flight each): as many as the
/// machine's two cores, so the tail measures the resolver rather than the scheduler.
const WORKERS: usize = 2;
/// Queries per worker per round.
const QUERIES: usize = 5000;
/// Rounds per resolver and kind of name.
const ROUNDS: usize = 7;
const FORWARDED: &str = "example.test";

/// One round's figures.
#[derive(Debug, Clone, Copy)]
struct Round {
    qps: f64,
    p50: Duration,
    p99: Duration,
    failed: usize,
}

/// A DNS question for `name` (type A), id 0 (each send sets its own).
fn question(name: &str) -> Vec<u8> {
    let mut q = vec![0, 0, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(u8::try_from(label.len()).expect("a short label"));
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&1u16.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    q
}

/// `WORKERS` clients in the namespace at `netns` asking `server` the `names` in turn.
fn load(netns: &Path, server: SocketAddr, names: &[String]) -> Round {
    let questions: Vec<Vec<u8>> = names.iter().map(|n| question(n)).collect();
    let start = Instant::now();
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (netns, questions) = (netns.to_path_buf(), questions.clone());
            std::thread::spawn(move || {
                overlay_testkit::in_netns(&netns, move || ask_all(server, &questions, w))
                    .expect("enter the client's namespace")
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(WORKERS * QUERIES);
    let mut failed = 0;
    for w in workers {
        let (l, f) = w.join().expect("a worker panicked");
        latencies.extend(l);
        failed += f;
    }
    let took = start.elapsed();
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    Round {
        qps: latencies.len() as f64 / took.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
        failed,
    }
}

/// One client: `QUERIES` questions, one at a time; the latency of each answered one (NOERROR
/// with an answer) and how many were not.
fn ask_all(server: SocketAddr, questions: &[Vec<u8>], worker: usize) -> (Vec<Duration>, usize) {
    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
    s.connect(server).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(1)))
        .expect("timeout");
    let mut buf = [0u8; 1500];
    let mut latencies = Vec::with_capacity(QUERIES);
    let mut failed = 0;
    for i in 0..QUERIES {
        let mut q = questions[(i + worker) % questions.len()].clone();
        let id = u16::try_from((i * WORKERS + worker) % 65536).unwrap_or(0);
        q[..2].copy_from_slice(&id.to_be_bytes());
        let sent = Instant::now();
        let ok = s.send(&q).is_ok()
            && loop {
                match s.recv(&mut buf) {
                    Ok(n) if n >= 12 && buf[..2] == id.to_be_bytes() => {
                        let answers = u16::from_be_bytes([buf[6], buf[7]]);
                        break buf[3] & 0x0f == 0 && answers > 0;
                    }
                    Ok(_) => continue,
                    Err(_) => break false,
                }
            };
        if ok {
            latencies.push(sent.elapsed());
        } else {
            failed += 1;
        }
    }
    (latencies, failed)
}

/// Each figure's median over the rounds, taken separately.
fn median(rounds: &[Round]) -> Round {
    let mid = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let secs = |f: fn(&Round) -> Duration| {
        Duration::from_secs_f64(mid(rounds.iter().map(|r| f(r).as_secs_f64()).collect()))
    };
    Round {
        qps: mid(rounds.iter().map(|r| r.qps).collect()),
        p50: secs(|r| r.p50),
        p99: secs(|r| r.p99),
        failed: rounds.iter().map(|r| r.failed).sum(),
    }
}

/// aardvark-dns in the host namespace. `run` forks a daemon that writes its pid into the
/// config directory; both are gone when this is dropped.
struct Aardvark {
    parent: std::process::Child,
    config: PathBuf,
}

impl Drop for Aardvark {
    fn drop(&mut self) {
        let _ = self.parent.kill();
        let _ = self.parent.wait();
        let pid = std::fs::read_to_string(self.config.join("aardvark.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok());
        match pid {
            Some(pid) if pid > 1 => {
                // SAFETY: kill has no memory preconditions; the pid is the daemon's own record.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                let gone = || !Path::new(&format!("/proc/{pid}")).exists();
                for _ in 0..100 {
                    if gone() {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                // SAFETY: as above.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            _ => eprintln!(
                "aardvark-dns left no pid in {}: check for a stray daemon",
                self.config.display()
            ),
        }
    }
}

/// The IPv4 address a connect gave, without its prefix.
fn address_of(
    made: &overlay::Attachment,
) -> Result<std::net::Ipv4Addr, Box<dyn std::error::Error>> {
    Ok(made
        .ipv4()
        .ok_or("the connect gave no IPv4 address")?
        .addr())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err("run as root: the benchmark creates namespaces".into());
    }
    let aardvark_bin = std::env::var_os("AARDVARK_DNS")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/usr/lib/podman/aardvark-dns".into());
    if !aardvark_bin.exists() {
        return Err(format!(
            "{} is missing: apt-get install aardvark-dns (or set AARDVARK_DNS)",
            aardvark_bin.display()
        )
        .into());
    }
    // The baseline's label is what the binary says it is.
    let version = std::process::Command::new(&aardvark_bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version: {e}", aardvark_bin.display()))?;
    let theirs_label = String::from_utf8_lossy(&version.stdout).trim().to_string();
    if !version.status.success() || theirs_label.is_empty() {
        return Err(format!("{} --version said nothing", aardvark_bin.display()).into());
    }
    let lab = Lab::new(&format!("dnsb{:x}", std::process::id() & 0xfff))?;
    let (host, lan) = lab.two_hosts("host", "lan").await?;
    let upstream = DnsUpstream::start(
        lan.path(),
        "198.51.100.2:53".parse()?,
        &[(FORWARDED, "192.0.2.7".parse()?)],
    )?;
    let dir = tempfile::tempdir()?;
    let ctl = Controller::open(
        ControllerOptions::new(format!("file://{}/store.db", dir.path().display()))
            .advertise("198.51.100.1")
            .host_id(lab.host_id("host"))
            .host_netns(host.path())
            .state_dir(dir.path().join("state"))
            .dns_upstreams([upstream.addr()]),
    )
    .await?;
    ctl.create_network("my-net", &NetworkOptions::default())
        .await?;
    let spec = |name: &str, ns: &overlay::dataplane::Netns| {
        ContainerSpec::new(
            format!("{name}-0123456789ab"),
            name,
            NetnsRef::Path(ns.path().to_path_buf()),
        )
    };
    // aardvark-dns's config: listen address and upstream, then one line per container.
    let mut config = String::from("172.18.0.1 198.51.100.2\n");
    let mut names = Vec::new();
    let mut keep = Vec::new();
    for i in 0..NAMES {
        let name = format!("c{i}");
        let ns = lab.namespace(&name).await?;
        let shown = ctl.connect("my-net", &spec(&name, &ns)).await?;
        let ip = address_of(&shown)?;
        config.push_str(&format!("{} {ip}  {name}\n", spec(&name, &ns).id));
        names.push(name);
        keep.push(ns);
    }
    let client = lab.namespace("client").await?;
    let shown = ctl.connect("my-net", &spec("client", &client)).await?;
    let own = address_of(&shown)?;
    let gw = shown
        .uplink
        .as_ref()
        .map(|u| u.address.addr().to_string())
        .unwrap_or_default();
    config.push_str(&format!("client-0123456789ab {own},{gw}  client\n"));
    let adir = dir.path().join("aardvark");
    std::fs::create_dir_all(&adir)?;
    std::fs::write(adir.join("my-net"), &config)?;
    let _aardvark = Aardvark {
        config: adir.clone(),
        parent: Command::new("nsenter")
            .arg(format!("--net={}", host.path().display()))
            .arg(&aardvark_bin)
            .arg("--config")
            .arg(&adir)
            .args(["-p", "53", "run"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    };
    let ours: SocketAddr = "10.0.0.1:53".parse()?;
    let theirs: SocketAddr = "172.18.0.1:53".parse()?;
    for (who, server) in [("overlay", ours), ("aardvark-dns", theirs)] {
        let start = Instant::now();
        while dns_query(
            client.path(),
            server,
            "c0",
            "A",
            false,
            Duration::from_millis(200),
        )
        .is_none_or(|a| a.addresses.is_empty())
        {
            if start.elapsed() > Duration::from_secs(10) {
                return Err(format!("{who} does not answer c0 at {server}").into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let forwarded = vec![FORWARDED.to_string()];
    let mut figures: Vec<Vec<Round>> = vec![Vec::new(); 4];
    for _ in 0..ROUNDS {
        for (i, (server, asked)) in [
            (ours, &names),
            (theirs, &names),
            (ours, &forwarded),
            (theirs, &forwarded),
        ]
        .into_iter()
        .enumerate()
        {
            figures[i].push(load(client.path(), server, asked));
        }
    }
    let m: Vec<Round> = figures.iter().map(|r| median(r)).collect();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "resolver benchmark: {NAMES} container names, {WORKERS} clients x {QUERIES} queries, \
         medians of {ROUNDS} alternating rounds (unanswered: the sum)"
    );
    println!();
    println!(
        "| names | measurement | overlay | {theirs_label} | overlay / aardvark | goal | met |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (kind, o, a) in [("container", m[0], m[1]), ("forwarded", m[2], m[3])] {
        println!(
            "| {kind} | queries/s | {:.0} | {:.0} | {:.2} | ≥ 1.0 | {} |",
            o.qps,
            a.qps,
            o.qps / a.qps,
            if o.qps >= a.qps { "yes" } else { "no" }
        );
        println!(
            "| {kind} | p50 | {:.0} µs | {:.0} µs | {:.2} | | |",
            us(o.p50),
            us(a.p50),
            us(o.p50) / us(a.p50)
        );
        println!(
            "| {kind} | p99 | {:.0} µs | {:.0} µs | {:.2} | ≤ 1.0 | {} |",
            us(o.p99),
            us(a.p99),
            us(o.p99) / us(a.p99),
            if o.p99 <= a.p99 { "yes" } else { "no" }
        );
        println!(
            "| {kind} | unanswered | {} | {} | | 0 | |",
            o.failed, a.failed
        );
    }
    let answered: IpAddr = "192.0.2.7".parse()?;
    let check = dns_query(
        client.path(),
        ours,
        FORWARDED,
        "A",
        false,
        Duration::from_secs(1),
    );
    assert_eq!(check.map(|a| a.addresses), Some(vec![answered]));
    drop(keep);
    ctl.close().await?;
    Ok(())
}
