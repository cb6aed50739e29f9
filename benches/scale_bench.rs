//! Scale benchmark: many hosts on one network, and one host filling up.
//!
//! Run as root (it builds namespaces), in release:
//!
//! ```sh
//! cargo bench --bench scale_bench              # 30 hosts x 20, fill to 1000
//! SCALE_HOSTS=10 SCALE_PER_HOST=5 SCALE_FILL=200 cargo bench --bench scale_bench -- etcd
//! ```
//!
//! Arguments name the backends to run (`embedded`, `etcd`, `zookeeper`; all by default).
//!
//! **Hosts.** `SCALE_HOSTS` simulated hosts (namespaces on one LAN bridge), each with its own
//! controller (store client, agent, kernel state) in this one process, and one more host in a
//! child process, the victim, for the SIGKILL row. Every host first connects one container
//! (so every host has the network); then the other `SCALE_PER_HOST - 1` containers of each
//! host are connected round-robin, one after another, each once the previous one converged.
//! For each connect it measures:
//! - the connect call's time;
//! - convergence: from the call returning to the peer's neighbour entry being in every other
//!   host's kernel, seen by a netlink listener in each host's sandbox (no polling), 0 if it was
//!   there before the call returned;
//! - store requests: the connecting client's unary requests during the call, all clients'
//!   requests over the phase per connect (with the sweeps and heals that ran meanwhile), and
//!   the watch events delivered per connect and per host.
//!
//! Then `networks()` and `inspect()` on one host, and the victim: it connects
//! `SCALE_PER_HOST` containers, is SIGKILLed, and the row gives the time until every host's
//! kernel dropped all its peers (its host TTL is 2 s; that TTL is most of the figure).
//!
//! All hosts share the machine's two cores, so each convergence is the time 29 agents take to
//! handle one event one after another, not in parallel as on 29 machines.
//!
//! **Fill.** In a child process of its own (so its resident memory is its own), one host
//! alone connects `SCALE_FILL` containers, each with a hosts file and a
//! `resolv.conf` (as `overlayctl container run` gives one), and reports the connect p50 around
//! 10, 100 and `SCALE_FILL` local endpoints (the 20 connects ending there) as ratios to the
//! first, the hosts-file latency around the same points (p50 and p99 of the time from a
//! connect returning to the new name in the first container's hosts file, seen by an inotify
//! watch of that file), and the process's resident memory growth per endpoint over the fill. The kernel's
//! share is measured after it the same way: the two veth pairs a connect makes, onto two
//! bridges filling up alike.

use std::collections::HashMap;
use std::io::BufRead as _;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use overlay::dataplane::Netns;
use overlay::dataplane::lab::{Lab, run_in};
use overlay::store::RequestCounts;
use overlay::{ContainerSpec, Controller, ControllerOptions, NetnsRef, NetworkOptions};
use overlay::{Error, Result};
use overlay_testkit::{EtcdServer, ZooKeeperServer};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload};
use rtnetlink::packet_route::RouteNetlinkMessage;
use rtnetlink::packet_route::neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage};

/// The overlay subnet: room for every endpoint of both phases.
const SUBNET: &str = "10.96.0.0/16";
/// How long one endpoint may take to reach every host before it counts as missed.
const CONVERGE_LIMIT: Duration = Duration::from_secs(10);
/// The victim's host TTL: other hosts drop it this long after it stops renewing.
const VICTIM_TTL: Duration = Duration::from_secs(2);

/// A directory for the hosts' state and the containers' files: under `SCALE_DIR` if set,
/// else the system's temporary directory.
fn scratch() -> Result<tempfile::TempDir> {
    let made = match std::env::var_os("SCALE_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    };
    made.map_err(|e| Error::io("bench", "temp dir", e))
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_err(what: impl Into<String>) -> Error {
    Error::internal("scale bench", what.into())
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn address_of(ep: &overlay::Attachment) -> Result<IpAddr> {
    ep.ipv4()
        .map(|a| a.addr().into())
        .ok_or_else(|| bench_err(format!("{} got no IPv4 address", ep.name)))
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

/// When each peer address appeared in, and left, one sandbox's neighbour table: a netlink
/// socket in the sandbox subscribed to neighbour changes, read by a thread of its own.
struct Monitor {
    seen: Arc<Mutex<HashMap<IpAddr, Instant>>>,
    gone: Arc<Mutex<HashMap<IpAddr, Instant>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    fn start(sandbox: &Netns) -> Result<Monitor> {
        let fd = run_in(sandbox, || {
            // SAFETY: plain socket calls on a descriptor this closure owns.
            unsafe {
                let fd = libc::socket(
                    libc::AF_NETLINK,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    libc::NETLINK_ROUTE,
                );
                if fd < 0 {
                    return Err(Error::io(
                        "monitor",
                        "netlink socket",
                        std::io::Error::last_os_error(),
                    ));
                }
                let fd = OwnedFd::from_raw_fd(fd);
                let mut addr: libc::sockaddr_nl = std::mem::zeroed();
                addr.nl_family = libc::AF_NETLINK as u16;
                addr.nl_groups = libc::RTMGRP_NEIGH as u32;
                if libc::bind(
                    fd.as_raw_fd(),
                    std::ptr::addr_of!(addr).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as u32,
                ) < 0
                {
                    return Err(Error::io(
                        "monitor",
                        "bind netlink socket",
                        std::io::Error::last_os_error(),
                    ));
                }
                let size: libc::c_int = 8 << 20;
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVBUFFORCE,
                    std::ptr::addr_of!(size).cast(),
                    std::mem::size_of::<libc::c_int>() as u32,
                );
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::addr_of!(tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                Ok(fd)
            }
        })?;
        let seen: Arc<Mutex<HashMap<IpAddr, Instant>>> = Arc::default();
        let gone: Arc<Mutex<HashMap<IpAddr, Instant>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, g, st) = (seen.clone(), gone.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !st.load(Ordering::Relaxed) {
                // SAFETY: `buf` is valid for its length.
                let n =
                    unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
                let Ok(n) = usize::try_from(n) else { continue };
                let now = Instant::now();
                let mut at = 0;
                while at < n {
                    let Ok(msg) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[at..n])
                    else {
                        break;
                    };
                    let len = msg.header.length as usize;
                    match msg.payload {
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewNeighbour(m)) => {
                            if let Some(ip) = destination(&m) {
                                s.lock().unwrap().entry(ip).or_insert(now);
                            }
                        }
                        NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelNeighbour(m)) => {
                            if let Some(ip) = destination(&m) {
                                g.lock().unwrap().insert(ip, now);
                            }
                        }
                        _ => {}
                    }
                    if len == 0 {
                        break;
                    }
                    at += len.next_multiple_of(4);
                }
            }
        });
        Ok(Monitor {
            seen,
            gone,
            stop,
            thread: Some(thread),
        })
    }

    fn seen(&self, ip: &IpAddr) -> Option<Instant> {
        self.seen.lock().unwrap().get(ip).copied()
    }

    fn gone(&self, ip: &IpAddr) -> Option<Instant> {
        self.gone.lock().unwrap().get(ip).copied()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The IP address of a neighbour entry (FDB entries, family bridge, carry a VTEP instead).
fn destination(m: &NeighbourMessage) -> Option<IpAddr> {
    use rtnetlink::packet_route::AddressFamily;
    if !matches!(m.header.family, AddressFamily::Inet | AddressFamily::Inet6) {
        return None;
    }
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })
}

/// Waits until every monitor but `except` has `ip`; the latest sighting, or `None` on time out.
async fn everywhere(monitors: &[Monitor], except: usize, ip: IpAddr) -> Option<Instant> {
    let start = Instant::now();
    loop {
        let seen: Vec<Option<Instant>> = monitors
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except)
            .map(|(_, m)| m.seen(&ip))
            .collect();
        if seen.iter().all(Option::is_some) {
            return seen.into_iter().flatten().max();
        }
        if start.elapsed() > CONVERGE_LIMIT {
            return None;
        }
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
}

/// One simulated host's options.
fn host_options(
    url: &str,
    lab: &Lab,
    ns: &Netns,
    name: &str,
    vtep: IpAddr,
    state: &Path,
) -> ControllerOptions {
    ControllerOptions::new(url)
        .advertise(vtep.to_string())
        .host_id(lab.host_id(name))
        .host_netns(ns.path())
        .state_dir(state.join(name))
}

fn network_options() -> NetworkOptions {
    NetworkOptions::default().subnet(overlay::SubnetOptions::new(SUBNET.parse().unwrap()))
}

/// A container spec whose namespace is `ns`, with its hosts file and `resolv.conf` in `files`.
fn container(name: &str, ns: &Path, files: &Path) -> ContainerSpec {
    ContainerSpec::new(name, name, NetnsRef::Path(ns.to_path_buf()))
        .hosts_file(files.join(name).join("hosts"))
        .resolv_conf(files.join(name).join("resolv.conf"))
}

fn counts(ctl: &Controller) -> RequestCounts {
    ctl.store().request_counts().unwrap_or_default()
}

fn total(ctls: &[Controller]) -> RequestCounts {
    ctls.iter()
        .map(counts)
        .fold(RequestCounts::default(), |a, b| a + b)
}

/// What the many-hosts phase measured.
struct Spread {
    connects: Vec<Duration>,
    convergence: Vec<Duration>,
    missed: usize,
    own_requests: f64,
    all_requests: f64,
    events_per_host: f64,
    ls: Duration,
    inspect: Duration,
    drop_after_kill: Option<Duration>,
}

/// What the fill phase measured.
struct Fill {
    /// Connect p50 of the 20 connects around 10 and 100 local endpoints and the 20 ending at
    /// the fill size.
    p50: [Duration; 3],
    /// The same of the kernel's work alone ([`kernel_baseline`]).
    kernel: [Duration; 3],
    /// Hosts-file latency p50 and p99 around the same points: a connect returning, to the new
    /// container's name in the first container's hosts file.
    hosts: [[Duration; 2]; 3],
    rss_per_endpoint: f64,
}

/// Watches the hosts file at `path` (inotify: woken by each write, not polling) and records
/// when each container `f<k>`'s name first shows in it, until `stop`.
fn watch_names(
    path: PathBuf,
    count: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Option<Instant>>> {
    std::thread::spawn(move || {
        let mut seen = vec![None; count];
        // SAFETY: inotify_init1 has no preconditions.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC | libc::IN_NONBLOCK) };
        if fd < 0 {
            return seen;
        }
        // SAFETY: `fd` was just made and is owned here.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap_or_default();
        let mut watching = false;
        while !stop.load(Ordering::Relaxed) {
            if !watching {
                // SAFETY: `fd` is an inotify descriptor and `cpath` a valid C string.
                watching = unsafe {
                    libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), libc::IN_MODIFY)
                } >= 0;
                if !watching {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
            }
            let mut pfd = libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            unsafe { libc::poll(&mut pfd, 1, 100) };
            let mut buf = [0u8; 4096];
            // SAFETY: `buf` is writable for its length; the events are only drained.
            while unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
            let now = Instant::now();
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            for line in text.lines().filter(|l| !l.starts_with('#')) {
                let Some(k) = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|n| n.strip_prefix('f'))
                    .and_then(|k| k.parse::<usize>().ok())
                else {
                    continue;
                };
                if let Some(s @ None) = seen.get_mut(k) {
                    *s = Some(now);
                }
            }
        }
        seen
    })
}

/// The victim's side, run by this program's child process: `SCALE_VICTIM` holds its
/// controller's options, its containers' namespaces and the directory of their files.
async fn victim_main(plan: &str) -> Result<()> {
    let bad = |e: serde_json::Error| bench_err(format!("bad victim plan: {e}"));
    let plan: serde_json::Value = serde_json::from_str(plan).map_err(bad)?;
    let opts: ControllerOptions = serde_json::from_value(plan["options"].clone()).map_err(bad)?;
    let containers: Vec<(String, PathBuf)> =
        serde_json::from_value(plan["containers"].clone()).map_err(bad)?;
    let files: PathBuf = serde_json::from_value(plan["files"].clone()).map_err(bad)?;
    let ctl = Controller::open(opts).await?;
    let mut ips = Vec::new();
    for (name, ns) in &containers {
        ips.push(address_of(
            &ctl.connect("bench", &container(name, ns, &files)).await?,
        )?);
    }
    let line: Vec<String> = ips.iter().map(ToString::to_string).collect();
    println!("ready {}", line.join(" "));
    // Until killed.
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

async fn spread(url: &str, tag: &str, hosts: usize, per_host: usize) -> Result<Spread> {
    let lab = Lab::new(tag)?;
    let state = scratch()?;
    let files = state.path().join("files");
    let mut spaces = Vec::new();
    for i in 0..=hosts {
        let name = if i == hosts {
            "victim".to_string()
        } else {
            format!("h{i}")
        };
        spaces.push((lab.namespace(&name).await?, name));
    }
    let vtep = |i: usize| -> IpAddr {
        format!("10.200.{}.{}", i / 250, i % 250 + 1)
            .parse()
            .unwrap()
    };
    let lan_hosts: Vec<_> = spaces
        .iter()
        .enumerate()
        .map(|(i, (ns, _))| (ns, format!("{}/16", vtep(i)).parse().unwrap()))
        .collect();
    let _lan = lab.lan(&lan_hosts).await?;
    let mut ctls = Vec::new();
    for (i, (ns, name)) in spaces.iter().take(hosts).enumerate() {
        ctls.push(
            Controller::open(host_options(url, &lab, ns, name, vtep(i), state.path())).await?,
        );
    }
    ctls[0].create_network("bench", &network_options()).await?;
    let net_id: overlay::model::NetworkId = ctls[0].inspect("bench").await?.id.parse()?;
    // Every host gets the network with its first container.
    for (i, ctl) in ctls.iter().enumerate() {
        let ns = lab.namespace(&format!("c{i}x0")).await?;
        ctl.connect("bench", &container(&format!("c{i}x0"), ns.path(), &files))
            .await?;
    }
    let mut monitors = Vec::new();
    for (_, name) in spaces.iter().take(hosts) {
        let prefix = format!("ovl-{}-{}", lab.host_id(name), net_id.short());
        let sandbox = Netns::list_named(&prefix)?
            .into_iter()
            .next()
            .ok_or_else(|| bench_err(format!("host {name} has no sandbox")))?;
        monitors.push(Monitor::start(&Netns::open_named(&sandbox)?)?);
    }
    let mut connects = Vec::new();
    let mut convergence = Vec::new();
    let mut missed = 0;
    let mut own = 0u64;
    let before = total(&ctls);
    for round in 1..per_host {
        for (i, ctl) in ctls.iter().enumerate() {
            let name = format!("c{i}x{round}");
            let ns = lab.namespace(&name).await?;
            let spec = container(&name, ns.path(), &files);
            drop(ns);
            let mine = counts(ctl);
            let start = Instant::now();
            let ep = ctl.connect("bench", &spec).await?;
            let returned = Instant::now();
            connects.push(returned - start);
            own += counts(ctl).since(&mine).unary();
            match everywhere(&monitors, i, address_of(&ep)?).await {
                Some(at) => convergence.push(at.saturating_duration_since(returned)),
                None => missed += 1,
            }
        }
    }
    let n = connects.len().max(1) as f64;
    let phase = total(&ctls).since(&before);
    let t = Instant::now();
    let rows = ctls[1 % hosts].networks().await?;
    let ls = t.elapsed();
    if rows.len() != 1 {
        return Err(bench_err(format!(
            "networks() listed {} networks",
            rows.len()
        )));
    }
    let t = Instant::now();
    let doc = ctls[1 % hosts].inspect("bench").await?;
    let inspect = t.elapsed();
    if doc.containers.len() != hosts * per_host {
        return Err(bench_err(format!(
            "inspect listed {} containers",
            doc.containers.len()
        )));
    }
    let drop_after_kill = kill_one(
        url,
        &lab,
        &spaces[hosts],
        vtep(hosts),
        state.path(),
        per_host,
        &monitors,
    )
    .await?;
    for ctl in &ctls {
        ctl.close().await?;
    }
    drop(monitors);
    drop(lab);
    connects.sort();
    convergence.sort();
    Ok(Spread {
        connects,
        convergence,
        missed,
        own_requests: own as f64 / n,
        all_requests: phase.unary() as f64 / n,
        events_per_host: phase.watch_events as f64 / n / hosts as f64,
        ls,
        inspect,
        drop_after_kill,
    })
}

/// The victim's process, SIGKILLed and reaped when dropped (also when the bench fails).
struct Victim(std::process::Child);

impl Victim {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Starts the victim host in a child process, waits until every host has its peers, kills it
/// and times until every host dropped them all.
async fn kill_one(
    url: &str,
    lab: &Lab,
    (ns, name): &(Netns, String),
    vtep: IpAddr,
    state: &Path,
    containers: usize,
    monitors: &[Monitor],
) -> Result<Option<Duration>> {
    let mut opts = host_options(url, lab, ns, name, vtep, state);
    opts.host_ttl = VICTIM_TTL;
    let mut list = Vec::new();
    for k in 0..containers {
        let c = format!("v{k}");
        list.push((c.clone(), lab.namespace(&c).await?.path().to_path_buf()));
    }
    let plan = serde_json::json!({
        "options": opts,
        "containers": list,
        "files": state.join("files"),
    });
    let exe = std::env::current_exe().map_err(|e| Error::io("bench", "own path", e))?;
    let mut child = Victim(
        std::process::Command::new(exe)
            .env("SCALE_VICTIM", plan.to_string())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| Error::io("bench", "start the victim", e))?,
    );
    let stdout = child
        .0
        .stdout
        .take()
        .ok_or_else(|| bench_err("no victim stdout"))?;
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .map(|_| line)
    })
    .await
    .map_err(|e| bench_err(e.to_string()))?
    .map_err(|e| Error::io("bench", "read the victim", e))?;
    let ips: Vec<IpAddr> = line
        .strip_prefix("ready ")
        .ok_or_else(|| bench_err(format!("the victim said {line:?}")))?
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut result = None;
    let arrived = {
        let mut all = true;
        for ip in &ips {
            all &= everywhere(monitors, usize::MAX, *ip).await.is_some();
        }
        all
    };
    child.kill();
    let killed = Instant::now();
    if arrived {
        let limit = VICTIM_TTL * 10;
        loop {
            let gone: Option<Vec<Instant>> = monitors
                .iter()
                .flat_map(|m| ips.iter().map(move |ip| m.gone(ip)))
                .collect();
            if let Some(gone) = gone {
                result = gone
                    .into_iter()
                    .max()
                    .map(|t| t.saturating_duration_since(killed));
                break;
            }
            if killed.elapsed() > limit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(result)
}

async fn fill(url: &str, tag: &str, count: usize) -> Result<Fill> {
    let lab = Lab::new(tag)?;
    let state = scratch()?;
    let files = state.path().join("files");
    let host = lab.namespace("h").await?;
    let _lan = lab
        .lan(&[(&host, "10.200.0.1/16".parse().unwrap())])
        .await?;
    let ctl = Controller::open(host_options(
        url,
        &lab,
        &host,
        "h",
        "10.200.0.1".parse().unwrap(),
        state.path(),
    ))
    .await?;
    ctl.create_network("bench", &network_options()).await?;
    let mut times = Vec::with_capacity(count);
    let mut base = 0;
    // The containers' namespaces first, as a runtime makes them before it connects them: the
    // kernel's deferred work of making one must not land in the next connect's time.
    let mut specs = Vec::with_capacity(count);
    for k in 0..count {
        let name = format!("f{k}");
        let ns = lab.namespace(&name).await?;
        specs.push(container(&name, ns.path(), &files));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let watch_path = specs[0].hosts_file.clone().unwrap_or_default();
    let watcher = watch_names(watch_path, count, stop.clone());
    let mut returned = Vec::with_capacity(count);
    for (k, spec) in specs.iter().enumerate() {
        let start = Instant::now();
        ctl.connect("bench", spec).await?;
        let end = Instant::now();
        times.push(end - start);
        returned.push(end);
        if k == 0 {
            // After the first connect: the sandbox, resolver and gateway exist.
            base = rss();
        }
    }
    // Let the file writer finish before the reading.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let seen = watcher
        .join()
        .map_err(|_| bench_err("the hosts file watcher panicked"))?;
    let mut latency = Vec::with_capacity(count);
    for (k, (seen, returned)) in seen.iter().zip(&returned).enumerate().skip(1) {
        let seen =
            seen.ok_or_else(|| bench_err(format!("f{k}'s name never reached f0's hosts file")))?;
        latency.push(seen.saturating_duration_since(*returned));
    }
    // Aligned with `times`: the first container has no latency of its own.
    latency.insert(0, Duration::ZERO);
    let grown = rss().saturating_sub(base);
    ctl.close().await?;
    let paths: Vec<PathBuf> = specs.iter().map(|s| s.netns.path()).collect();
    let kernel = kernel_baseline(&lab, &paths).await?;
    drop(lab);
    let window = |times: &[Duration], end: usize| {
        let end = end.min(count);
        let mut w = times[end.saturating_sub(20)..end].to_vec();
        w.sort();
        pct(&w, 0.5)
    };
    let at = |t: &[Duration]| [window(t, 20), window(t, 110), window(t, count)];
    let tail = |end: usize| {
        let end = end.min(count);
        let mut w = latency[end.saturating_sub(20).max(1)..end].to_vec();
        w.sort();
        [pct(&w, 0.5), pct(&w, 0.99)]
    };
    Ok(Fill {
        p50: at(&times),
        kernel: at(&kernel),
        hosts: [tail(20), tail(110), tail(count)],
        rss_per_endpoint: grown as f64 / (count.saturating_sub(1).max(1)) as f64,
    })
}

/// The kernel's share, measured the same way: for each of the containers, the two veth pairs
/// a connect makes at once (one onto the overlay's bridge, one onto the gateway's), each born
/// with its peer in the container, onto two bridges that fill up as the connects' did. It
/// leaves the peers down: bringing them up (the kernel then puts the ports in forwarding
/// state, a walk over every port of the bridge) is the connect's, not counted here.
async fn kernel_baseline(lab: &Lab, containers: &[PathBuf]) -> Result<Vec<Duration>> {
    let ns = lab.namespace("kernel").await?;
    let containers = containers.to_vec();
    // A thread of its own in the baseline's namespace, with a runtime of its own: the netlink
    // socket is made there.
    tokio::task::spawn_blocking(move || {
        run_in(&ns, move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| Error::io("bench", "runtime", e))?
                .block_on(veth_pairs(&containers))
        })
    })
    .await
    .map_err(|e| bench_err(e.to_string()))?
}

async fn veth_pairs(containers: &[PathBuf]) -> Result<Vec<Duration>> {
    use rtnetlink::packet_route::link::{InfoData, InfoVeth};
    use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth};
    let (conn, handle, _) =
        rtnetlink::new_connection().map_err(|e| Error::io("bench", "netlink socket", e))?;
    tokio::spawn(conn);
    let nl = |e: rtnetlink::Error| bench_err(format!("kernel baseline: {e}"));
    let mut bridges = Vec::new();
    for name in ["kb1", "kb2"] {
        handle
            .link()
            .add(LinkBridge::new(name).up().build())
            .execute()
            .await
            .map_err(nl)?;
        let mut links = handle.link().get().match_name(name.to_string()).execute();
        let link = futures::TryStreamExt::try_next(&mut links)
            .await
            .map_err(nl)?
            .ok_or_else(|| bench_err("baseline bridge vanished"))?;
        bridges.push(link.header.index);
    }
    let mut times = Vec::with_capacity(containers.len());
    for (k, path) in containers.iter().enumerate() {
        let container = Netns::open_path(path)?;
        let pair = |i: usize| {
            let peer = LinkUnspec::new_with_name(&format!("kb{}", i + 1))
                .setns_by_fd(container.raw_fd())
                .build();
            LinkVeth::new(&format!("kb{}x{k}", i + 1), &format!("kb{}", i + 1))
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .controller(bridges[i])
                .up()
                .build()
        };
        let start = Instant::now();
        let (a, b) = tokio::join!(
            handle.link().add(pair(0)).execute(),
            handle.link().add(pair(1)).execute()
        );
        times.push(start.elapsed());
        a.map_err(nl)?;
        b.map_err(nl)?;
    }
    Ok(times)
}

fn main() -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // This program is also its own child processes: the victim host and the fill.
    let child = match (
        std::env::var("SCALE_VICTIM"),
        std::env::var("SCALE_FILL_RUN"),
    ) {
        (Ok(plan), _) => Some(runtime.block_on(victim_main(&plan))),
        (_, Ok(plan)) => Some(runtime.block_on(fill_main(&plan))),
        _ => None,
    };
    match child {
        Some(Ok(())) => return std::process::ExitCode::SUCCESS,
        Some(Err(e)) => {
            println!("failed {e}");
            return std::process::ExitCode::FAILURE;
        }
        None => {}
    }
    runtime.block_on(bench())
}

/// The fill, run by this program's child process (`SCALE_FILL_RUN`: its store URL, lab tag
/// and count), so that its resident memory is its own and not what earlier phases left in the
/// allocator. Prints one line: `fill` and the figures as JSON.
async fn fill_main(plan: &str) -> Result<()> {
    let plan: serde_json::Value =
        serde_json::from_str(plan).map_err(|e| bench_err(format!("bad fill plan: {e}")))?;
    let f = fill(
        plan["url"].as_str().unwrap_or_default(),
        plan["tag"].as_str().unwrap_or_default(),
        plan["count"].as_u64().unwrap_or(1000) as usize,
    )
    .await?;
    let us = |d: &[Duration; 3]| d.map(|d| d.as_micros() as u64);
    let hosts: Vec<[u64; 2]> = f
        .hosts
        .iter()
        .map(|w| w.map(|d| d.as_micros() as u64))
        .collect();
    let out = serde_json::json!({
        "p50": us(&f.p50), "kernel": us(&f.kernel), "hosts": hosts, "rss": f.rss_per_endpoint
    });
    println!("fill {out}");
    Ok(())
}

/// Runs the fill in a child process ([`fill_main`]).
async fn fill_apart(url: &str, tag: &str, count: usize) -> Result<Fill> {
    let plan = serde_json::json!({"url": url, "tag": tag, "count": count});
    let exe = std::env::current_exe().map_err(|e| Error::io("bench", "own path", e))?;
    let out = tokio::process::Command::new(exe)
        .env("SCALE_FILL_RUN", plan.to_string())
        .env_remove("SCALE_VICTIM")
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .map_err(|e| Error::io("bench", "run the fill", e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("fill "))
        .ok_or_else(|| bench_err(format!("the fill said {:?}", text.trim())))?;
    let v: serde_json::Value =
        serde_json::from_str(line).map_err(|e| bench_err(format!("fill output: {e}")))?;
    let three = |k: &str| -> [Duration; 3] {
        let mut d = [Duration::ZERO; 3];
        for (i, x) in d.iter_mut().enumerate() {
            *x = Duration::from_micros(v[k][i].as_u64().unwrap_or(0));
        }
        d
    };
    let mut hosts = [[Duration::ZERO; 2]; 3];
    for (i, w) in hosts.iter_mut().enumerate() {
        for (j, d) in w.iter_mut().enumerate() {
            *d = Duration::from_micros(v["hosts"][i][j].as_u64().unwrap_or(0));
        }
    }
    Ok(Fill {
        p50: three("p50"),
        kernel: three("kernel"),
        hosts,
        rss_per_endpoint: v["rss"].as_f64().unwrap_or(0.0),
    })
}

async fn bench() -> std::process::ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("scale_bench: needs root (it creates network namespaces)");
        return std::process::ExitCode::from(2);
    }
    let hosts = env_usize("SCALE_HOSTS", 30).max(2);
    let per_host = env_usize("SCALE_PER_HOST", 20).max(2);
    let fill_to = env_usize("SCALE_FILL", 1000).max(20);
    let wanted: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let wants = |b: &str| wanted.is_empty() || wanted.iter().any(|w| w == b);
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = wants("etcd").then(EtcdServer::start_or_say).flatten();
    let zk = wants("zookeeper")
        .then(ZooKeeperServer::start_or_say)
        .flatten();
    let file = |phase: &str| format!("file://{}/{phase}.db", dir.path().display());
    let mut backends: Vec<(&str, Option<[String; 2]>)> = Vec::new();
    if wants("embedded") {
        backends.push(("embedded", Some([file("spread"), file("fill")])));
    }
    if wants("etcd") {
        backends.push(("etcd", etcd.as_ref().map(|s| [s.url(), s.url()])));
    }
    if wants("zookeeper") {
        backends.push(("zookeeper", zk.as_ref().map(|s| [s.url(), s.url()])));
    }
    println!(
        "{hosts} hosts x {per_host} containers on one network (one process), a victim host in a child \
         process; fill: one host to {fill_to} local endpoints"
    );
    println!();
    println!(
        "| backend | connect p50/p99 ms | conv p50/p99 ms | missed | req/connect own | req/connect all | events/connect/host | ls ms | inspect ms | drop after kill s | fill connect p50 ms @10 | @100 | @{fill_to} | kernel's p50 ms @10 | @{fill_to} | hosts file p50/p99 ms @10 | @100 | @{fill_to} | RSS KiB/endpoint |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut failed = false;
    for (i, (name, urls)) in backends.iter().enumerate() {
        let Some([spread_url, fill_url]) = urls else {
            println!("| {name} | server could not be started |");
            failed = true;
            continue;
        };
        let pid = std::process::id() % 100_000;
        let s = Box::pin(spread(spread_url, &format!("sb{i}{pid}"), hosts, per_host)).await;
        let f = fill_apart(fill_url, &format!("fb{i}{pid}"), fill_to).await;
        match (s, f) {
            (Ok(s), Ok(f)) => {
                let ratio =
                    |d: Duration, of: Duration| d.as_secs_f64() / of.as_secs_f64().max(1e-9);
                println!(
                    "| {name} | {} / {} | {} / {} | {} | {:.1} | {:.1} | {:.2} | {} | {} | {} | {} | {} ({:.2}x) | {} ({:.2}x) | {} | {} ({:.2}x) | {} / {} | {} / {} | {} / {} | {:.1} |",
                    ms(pct(&s.connects, 0.5)),
                    ms(pct(&s.connects, 0.99)),
                    ms(pct(&s.convergence, 0.5)),
                    ms(pct(&s.convergence, 0.99)),
                    s.missed,
                    s.own_requests,
                    s.all_requests,
                    s.events_per_host,
                    ms(s.ls),
                    ms(s.inspect),
                    s.drop_after_kill
                        .map_or("never".to_string(), |d| format!("{:.2}", d.as_secs_f64())),
                    ms(f.p50[0]),
                    ms(f.p50[1]),
                    ratio(f.p50[1], f.p50[0]),
                    ms(f.p50[2]),
                    ratio(f.p50[2], f.p50[0]),
                    ms(f.kernel[0]),
                    ms(f.kernel[2]),
                    ratio(f.kernel[2], f.kernel[0]),
                    ms(f.hosts[0][0]),
                    ms(f.hosts[0][1]),
                    ms(f.hosts[1][0]),
                    ms(f.hosts[1][1]),
                    ms(f.hosts[2][0]),
                    ms(f.hosts[2][1]),
                    f.rss_per_endpoint / 1024.0,
                );
                failed |= s.missed > 0 || s.drop_after_kill.is_none();
            }
            (s, f) => {
                failed = true;
                println!(
                    "| {name} | failed: {} {} |",
                    s.err().map(|e| e.to_string()).unwrap_or_default(),
                    f.err().map(|e| e.to_string()).unwrap_or_default()
                );
            }
        }
    }
    if failed {
        std::process::ExitCode::FAILURE
    } else {
        std::process::ExitCode::SUCCESS
    }
}
