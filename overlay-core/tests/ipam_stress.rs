//! IPAM stress test: 4 processes × 500 allocations with random releases and some specific
//! requests, from one pool, on each backend (embedded file, etcd, ZooKeeper). Asserts that no
//! address is ever held twice and that the store's view equals the union of what each process
//! holds at the end.
//!
//! Run: `cargo test -p overlay-core --test ipam_stress` (etcd and ZooKeeper are started by
//! `overlay-testkit`, or taken from `OVERLAY_TEST_ETCD` / `OVERLAY_TEST_ZK`).
//!
//! Then the same stress runs on a 3-member etcd cluster and a 3-node ZooKeeper ensemble (root:
//! each member has a namespace of its own) whose leader is SIGKILLed once the workers are under
//! way. There a worker may see `Unavailable` or `Timeout`, and nothing else: it notes each such
//! operation as undecided (it may or may not have happened), checks that no IPAM call took
//! longer than its store calls may ([`FAULT_CALL_LIMIT`] each, and a retry's wait after each),
//! and reports how long it went without a success. The coordinator then
//! checks that no address is held twice and that the store holds exactly what the workers hold,
//! give or take the undecided operations, and prints the recovery bound: from the kill to the
//! last worker's first success after it.
//!
//! This is a `harness = false` test: the same binary is the coordinator and, re-executed with
//! `OVERLAY_IPAM_STRESS_WORKER=<host id>` in its environment, each worker process. A worker
//! gets its store URL, network id and seed from the environment, prints one `HELD <ip> <owner>`
//! line per address it still holds at the end, and exits non-zero on any error.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay_core::ErrorKind;
use overlay_core::ipam::{AddressRequest, Family, Ipam, IpamConfig, PoolRequest, StoreIpam};
use overlay_core::model::{HostId, NetworkId, PoolConfig};
use overlay_core::store::{self, KvStore};
use overlay_testkit::{EtcdCluster, EtcdServer, ZooKeeperCluster, ZooKeeperServer};

const WORKERS: usize = 4;
const ALLOCATIONS: usize = 500;
/// A worker keeps at most this many addresses; 4 × 200 = 800 of the pool's 1022, so workers
/// fill their own blocks, borrow from each other's and race on the same blocks.
const MAX_HELD: usize = 200;
const SUBNET: &str = "10.77.0.0/22";
/// Workers still running after this are killed and the run fails.
const TIME_LIMIT: Duration = Duration::from_secs(90);

const ENV_WORKER: &str = "OVERLAY_IPAM_STRESS_WORKER";
const ENV_URL: &str = "OVERLAY_IPAM_STRESS_URL";
const ENV_NET: &str = "OVERLAY_IPAM_STRESS_NET";
const ENV_SEED: &str = "OVERLAY_IPAM_STRESS_SEED";
const ENV_FAULTS: &str = "OVERLAY_IPAM_STRESS_FAULTS";

/// The store timeout of the runs with a fault.
const FAULT_TIMEOUT: &str = "timeout=2s";
/// No store call may take longer than this while the leader dies: the URL's 2 s, which bounds
/// each one, and room for the timer to fire on a loaded machine. An IPAM call is several store
/// calls (the network, the blocks, a transaction, again after each lost race), and one started
/// during the election can wait most of the 2 s in a call that then succeeds, before its next
/// calls meet the other workers resuming at the same moment: so the bound of an IPAM call is
/// its store calls' (measured: 4.3 s once in 20 runs, which a bound of twice the timeout
/// took for a hang).
const FAULT_CALL_LIMIT: Duration = Duration::from_millis(2500);
/// The longest wait before a lost race's next attempt.
const RETRY_WAIT: Duration = Duration::from_millis(200);
/// The kill comes once the store holds this many addresses: the workers are under way.
const KILL_AFTER: usize = 150;

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Ok(host) = std::env::var(ENV_WORKER) {
        let result = rt.block_on(worker(&host));
        if let Err(e) = result {
            eprintln!("worker {host}: {e}");
            std::process::exit(1);
        }
        return;
    }
    let mut ran = 0;
    let mut failed = Vec::new();
    for (name, mut backend) in backends() {
        let started = Instant::now();
        match rt.block_on(coordinate(&backend.url, backend.fault.as_mut())) {
            Ok(summary) => {
                ran += 1;
                println!(
                    "ipam stress on {name}: ok in {:.1?}: {summary}",
                    started.elapsed()
                );
            }
            Err(e) => {
                println!("ipam stress on {name}: FAILED: {e}");
                failed.push(name);
            }
        }
    }
    if !failed.is_empty() {
        panic!("ipam stress failed on {failed:?}");
    }
    println!("ipam stress: {ran} backend(s) passed");
}

/// A backend to run on: its URL and whatever keeps its server alive.
struct Backend {
    url: String,
    _keep: Box<dyn std::any::Any>,
    /// The cluster whose leader dies during the run.
    fault: Option<Box<dyn Faulty>>,
}

/// A store cluster whose leader a run kills.
trait Faulty {
    /// Kills the leader; which member it was.
    fn kill_leader(&mut self) -> usize;
    /// Waits for a new leader; how long after the call one led.
    fn elected_within(&self) -> Option<Duration>;
    /// Starts member `i` again.
    fn restart(&mut self, i: usize);
}

macro_rules! faulty {
    ($t:ty) => {
        impl Faulty for $t {
            fn kill_leader(&mut self) -> usize {
                let leader = self
                    .wait_leader(Duration::from_secs(10))
                    .expect("the cluster has a leader");
                self.kill(leader);
                leader
            }
            fn elected_within(&self) -> Option<Duration> {
                let t0 = Instant::now();
                self.wait_leader(Duration::from_secs(30))
                    .map(|_| t0.elapsed())
            }
            fn restart(&mut self, i: usize) {
                <$t>::restart(self, i)
            }
        }
    };
}
faulty!(EtcdCluster);
faulty!(ZooKeeperCluster);

fn backends() -> Vec<(&'static str, Backend)> {
    let mut out = Vec::new();
    let dir = tempfile::tempdir().expect("a temporary directory for the embedded store");
    out.push((
        "embedded",
        Backend {
            url: format!("file://{}/store.db", dir.path().display()),
            _keep: Box::new(dir),
            fault: None,
        },
    ));
    out.push(("etcd", {
        let s = EtcdServer::start();
        Backend {
            url: s.url(),
            _keep: Box::new(s),
            fault: None,
        }
    }));
    out.push(("zookeeper", {
        let s = ZooKeeperServer::start();
        Backend {
            url: s.url(),
            _keep: Box::new(s),
            fault: None,
        }
    }));
    out.push(("a 3-member etcd cluster, leader killed", {
        let c = EtcdCluster::start(3);
        Backend {
            url: c.url_with(FAULT_TIMEOUT),
            _keep: Box::new(()),
            fault: Some(Box::new(c)),
        }
    }));
    out.push(("a 3-node ZooKeeper ensemble, leader killed", {
        let c = ZooKeeperCluster::start(3);
        Backend {
            url: c.url_with(FAULT_TIMEOUT),
            _keep: Box::new(()),
            fault: Some(Box::new(c)),
        }
    }));
    out
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Worker processes, killed if the coordinator gives up on them.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

async fn open(url: &str) -> Result<Arc<dyn KvStore>, String> {
    store::connect_str(url)
        .await
        .map_err(|e| format!("cannot open {url}: {e}"))
}

async fn coordinate(url: &str, mut fault: Option<&mut Box<dyn Faulty>>) -> Result<String, String> {
    let store = open(url).await?;
    let setup = StoreIpam::new(
        store.clone(),
        HostId::new("setup").unwrap(),
        IpamConfig::default(),
    );
    let net = NetworkId::random();
    let pool = PoolConfig::new(SUBNET.parse().unwrap());
    setup
        .add_pools(&net, "stress", &[PoolRequest::Subnet(pool)])
        .await
        .map_err(|e| e.to_string())?;

    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut workers = Workers(Vec::new());
    for i in 0..WORKERS {
        let child = Command::new(&exe)
            .env(ENV_WORKER, format!("host{i}"))
            .env(ENV_URL, url)
            .env(ENV_NET, net.to_string())
            .env(ENV_SEED, (rand::random::<u32>() + i as u32).to_string())
            .env(ENV_FAULTS, if fault.is_some() { "1" } else { "0" })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| format!("cannot start worker: {e}"))?;
        workers.0.push(child);
    }
    // Each worker's output is read on a thread of its own while this one watches the clock:
    // a worker that hangs is killed (by the guard) when the time limit passes.
    let mut readers = Vec::new();
    for child in &mut workers.0 {
        let out = child.stdout.take().ok_or("worker without stdout")?;
        readers.push(std::thread::spawn(move || {
            BufReader::new(out)
                .lines()
                .map_while(std::result::Result::ok)
                .collect::<Vec<String>>()
        }));
    }
    let deadline = Instant::now() + TIME_LIMIT;
    // (member killed, when, how long until a new leader)
    let mut killed: Option<(usize, u128, Option<Duration>)> = None;
    if let Some(cluster) = fault.as_mut() {
        loop {
            let held = setup
                .allocations(&net)
                .await
                .map_err(|e| e.to_string())?
                .len();
            if held >= KILL_AFTER {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!("only {held} addresses held after {TIME_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let at = unix_ms();
        let member = cluster.kill_leader();
        killed = Some((member, at, cluster.elected_within()));
    }
    loop {
        let mut running = 0;
        for (i, child) in workers.0.iter_mut().enumerate() {
            match child.try_wait().map_err(|e| e.to_string())? {
                Some(status) if !status.success() => {
                    return Err(format!("worker {i} failed: {status}"));
                }
                Some(_) => {}
                None => running += 1,
            }
        }
        if running == 0 {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{running} worker(s) still running after {TIME_LIMIT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut union: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut stats = Vec::new();
    // Operations that failed with Unavailable or Timeout: they may or may not have happened.
    let mut undecided_owners = std::collections::BTreeSet::new();
    let mut undecided_releases = std::collections::BTreeSet::new();
    let mut recovered: Vec<u128> = Vec::new();
    let mut failures = 0usize;
    let (mut slowest, mut slowest_calls) = (Duration::ZERO, 0);
    let mut overlong = Vec::new();
    for reader in readers {
        let lines = reader
            .join()
            .map_err(|_| "a reader thread panicked".to_string())?;
        for line in lines {
            let mut parts = line.split_whitespace();
            match parts.next() {
                Some("HELD") => {
                    let ip: IpAddr = parts
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or(line.clone())?;
                    let owner = parts.next().ok_or(line.clone())?.to_string();
                    if let Some(other) = union.insert(ip, owner.clone()) {
                        return Err(format!("DUPLICATE: {ip} is held by {other} and by {owner}"));
                    }
                }
                Some("STATS") => stats.push(parts.collect::<Vec<_>>().join(" ")),
                Some("UNDECIDED-REQUEST") => {
                    undecided_owners.insert(parts.next().ok_or(line.clone())?.to_string());
                }
                Some("UNDECIDED-RELEASE") => {
                    let ip: IpAddr = parts
                        .next()
                        .and_then(|s| s.parse().ok())
                        .ok_or(line.clone())?;
                    let owner = parts.next().ok_or(line.clone())?.to_string();
                    undecided_releases.insert((ip, owner));
                }
                Some("FAULTS") => {
                    // FAULTS <failures> <slowest op ms> <its store calls> <unix ms of the first
                    // success after the last failure, or 0>
                    let n: Vec<u128> = parts.filter_map(|p| p.parse().ok()).collect();
                    let [f, slow, calls, back] = n[..] else {
                        return Err(format!("bad line {line:?}"));
                    };
                    failures += f as usize;
                    let slow = Duration::from_millis(slow as u64);
                    if slow > slowest {
                        (slowest, slowest_calls) = (slow, calls);
                    }
                    if back > 0 {
                        recovered.push(back);
                    }
                }
                Some("OVERLONG") => overlong.push(parts.collect::<Vec<_>>().join(" ")),
                _ => {}
            }
        }
    }
    let view: BTreeMap<IpAddr, String> = setup
        .allocations(&net)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|h| (h.ip, h.owner))
        .collect();
    // Undecided operations excuse exactly the differences they can cause: an address held in
    // the store for an undecided request's owner, or one an undecided release left held.
    let excused = |ip: &IpAddr, owner: &String| {
        undecided_owners.contains(owner) || undecided_releases.contains(&(*ip, owner.clone()))
    };
    let view_checked: BTreeMap<IpAddr, String> = view
        .iter()
        .filter(|(ip, owner)| union.get(*ip) == Some(*owner) || !excused(ip, owner))
        .map(|(ip, owner)| (*ip, owner.clone()))
        .collect();
    let excused_count = view.len() - view_checked.len();
    let view = view_checked;
    if view != union {
        let only_store: Vec<_> = view
            .iter()
            .filter(|(k, v)| union.get(*k) != Some(*v))
            .take(5)
            .collect();
        let only_workers: Vec<_> = union
            .iter()
            .filter(|(k, v)| view.get(*k) != Some(*v))
            .take(5)
            .collect();
        return Err(format!(
            "store view ({} addresses) differs from the workers' union ({}): store only {only_store:?}, \
             workers only {only_workers:?}",
            view.len(),
            union.len()
        ));
    }
    setup.release_pools(&net).await.map_err(|e| e.to_string())?;
    let _ = store.close().await;
    let mut fault_report = String::new();
    if let (Some((member, at, elected)), Some(cluster)) = (killed, fault) {
        if !overlong.is_empty() {
            return Err(format!(
                "IPAM calls took longer than their store calls may while the leader died \
                 ({FAULT_CALL_LIMIT:?} and a {RETRY_WAIT:?} wait each): {}",
                overlong.join("; ")
            ));
        }
        let back = recovered.iter().max().map_or(Duration::ZERO, |b| {
            Duration::from_millis(b.saturating_sub(at) as u64)
        });
        fault_report = format!(
            "leader (member {member}) killed with {KILL_AFTER}+ addresses held; a new leader \
             within {elected:?}; {failures} calls failed with Unavailable or Timeout ({} \
             undecided requests, {} undecided releases, {excused_count} addresses they \
             explain); slowest call {slowest:?} ({slowest_calls} store calls); every worker succeeding again {back:?} after \
             the kill; ",
            undecided_owners.len(),
            undecided_releases.len()
        );
        cluster.restart(member);
    }
    Ok(format!(
        "{} addresses held at the end, no duplicate; {fault_report}{}",
        union.len(),
        stats.join("; ")
    ))
}

/// Whether `e` is what a call may answer while the store has no leader.
fn outage(e: &overlay_core::Error) -> bool {
    matches!(e.kind(), ErrorKind::Unavailable | ErrorKind::Timeout)
}

/// What a worker saw of a fault: failed calls, the slowest call (and how many store calls it
/// made), and when it succeeded again.
#[derive(Default)]
struct FaultLog {
    failures: usize,
    slowest: Duration,
    slowest_calls: u64,
    failing: bool,
    /// Unix ms of the first success after the last failure; 0 if none failed.
    recovered_at: u128,
}

impl FaultLog {
    /// Notes an IPAM call that started at `started` and made `calls` store calls. One that
    /// took longer than those calls may is printed as `OVERLONG`.
    fn timed<T>(&mut self, what: &str, started: Instant, calls: u64, r: &overlay_core::Result<T>) {
        let took = started.elapsed();
        if took > self.slowest {
            (self.slowest, self.slowest_calls) = (took, calls);
        }
        let may = (FAULT_CALL_LIMIT + RETRY_WAIT) * u32::try_from(calls.max(1)).unwrap_or(u32::MAX);
        if took > may {
            println!("OVERLONG {what} took {took:?} over {calls} store calls");
        }
        match r {
            Err(e) if outage(e) => {
                self.failures += 1;
                self.failing = true;
            }
            Ok(_) if self.failing => {
                self.failing = false;
                self.recovered_at = unix_ms();
            }
            _ => {}
        }
    }
}

/// How often a worker retries an operation that lost every bounded race to other workers.
const CONTENTION_ROUNDS: usize = 10;

/// One worker process: allocate, sometimes release, sometimes ask for a specific address.
async fn worker(host: &str) -> Result<(), String> {
    let var = |k: &str| std::env::var(k).map_err(|_| format!("{k} is not set"));
    let url = var(ENV_URL)?;
    let net: NetworkId = var(ENV_NET)?
        .parse()
        .map_err(|e: overlay_core::Error| e.to_string())?;
    let seed: u64 = var(ENV_SEED)?.parse().map_err(|_| "bad seed".to_string())?;
    let faults = var(ENV_FAULTS)? == "1";
    let mut fault = FaultLog::default();
    let store = store::connect_str(&url).await.map_err(|e| e.to_string())?;
    // The worker makes one IPAM call at a time, and nothing else calls its store.
    let store_calls = || store.request_counts().map_or(0, |c| c.unary());
    let ipam = StoreIpam::new(
        store.clone(),
        HostId::new(host).unwrap(),
        IpamConfig::default(),
    );
    let subnet: ipnet::IpNet = SUBNET.parse().unwrap();
    let size = 1u32 << (32 - subnet.prefix_len());
    let base = match subnet.network() {
        IpAddr::V4(a) => u32::from(a),
        IpAddr::V6(_) => unreachable!("the stress pool is IPv4"),
    };
    // A small xorshift generator: reproducible from the printed seed, no shared state.
    let mut state = seed | 1;
    let mut rnd = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let mut held: BTreeMap<IpAddr, String> = BTreeMap::new();
    let (mut specific_ok, mut specific_refused, mut releases) = (0, 0, 0);
    let started = Instant::now();
    for i in 0..ALLOCATIONS {
        while held.len() >= MAX_HELD || (!held.is_empty() && rnd(4) == 0) {
            let victim = *held.keys().nth(rnd(held.len())).unwrap();
            let owner = held.remove(&victim).unwrap();
            // Conflict means the block kept changing under every bounded retry (the library
            // says "retry later"): a caller's choice, not a correctness failure, so retry.
            let mut rounds = 0;
            let released = loop {
                let (t0, before) = (Instant::now(), store_calls());
                let r = ipam.release(&net, victim, &owner).await;
                fault.timed("a release", t0, store_calls() - before, &r);
                match r {
                    Err(e) if e.kind() == ErrorKind::Conflict && rounds < CONTENTION_ROUNDS => {
                        rounds += 1;
                        tokio::time::sleep(Duration::from_millis(rnd(50) as u64)).await;
                    }
                    Err(e) if faults && outage(&e) => {
                        println!("UNDECIDED-RELEASE {victim} {owner}");
                        break true;
                    }
                    r => break r.map_err(|e| e.to_string())?,
                }
            };
            if !released {
                return Err(format!(
                    "{victim} held by {owner} was not held in the store"
                ));
            }
            releases += 1;
        }
        let owner = format!("{host}-{i}");
        let request = if rnd(10) == 0 {
            let ip = IpAddr::V4((base + rnd(size as usize) as u32).into());
            AddressRequest::specific(ip, &owner)
        } else {
            AddressRequest::any(Family::V4, &owner)
        };
        let mut rounds = 0;
        let result = loop {
            let (t0, before) = (Instant::now(), store_calls());
            let r = ipam.request(&net, &request).await;
            fault.timed("a request", t0, store_calls() - before, &r);
            match r {
                Err(e)
                    if e.kind() == ErrorKind::Conflict
                        && e.to_string().contains("lost the race")
                        && rounds < CONTENTION_ROUNDS =>
                {
                    rounds += 1;
                    tokio::time::sleep(Duration::from_millis(rnd(50) as u64)).await;
                }
                r => break r,
            }
        };
        match result {
            Ok(a) => {
                let ip = a.address.addr();
                if let Some(prev) = held.insert(ip, owner.clone()) {
                    return Err(format!("got {ip} for {owner} while holding it for {prev}"));
                }
                if matches!(request.want, overlay_core::ipam::Want::Specific(_)) {
                    specific_ok += 1;
                }
            }
            // A specific address may be taken or reserved (gateway, broadcast).
            Err(e)
                if matches!(request.want, overlay_core::ipam::Want::Specific(_))
                    && matches!(e.kind(), ErrorKind::Conflict | ErrorKind::InvalidArgument) =>
            {
                specific_refused += 1;
            }
            Err(e) if faults && outage(&e) => println!("UNDECIDED-REQUEST {owner}"),
            Err(e) => return Err(format!("request {i} for {owner}: {e}")),
        }
    }
    if faults {
        println!(
            "FAULTS {} {} {} {}",
            fault.failures,
            fault.slowest.as_millis(),
            fault.slowest_calls,
            fault.recovered_at
        );
    }
    for (ip, owner) in &held {
        println!("HELD {ip} {owner}");
    }
    println!(
        "STATS {host}: {ALLOCATIONS} requests in {:.1?} ({specific_ok} specific granted, \
         {specific_refused} refused), {releases} releases, seed {seed}",
        started.elapsed()
    );
    let _ = store.close().await;
    Ok(())
}
