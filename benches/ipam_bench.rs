//! IPAM benchmark: allocations per second and store round trips per allocation, with 1 and 4
//! concurrent allocators, on the embedded store, etcd and ZooKeeper, printed as one table.
//!
//! Run: `cargo bench --bench ipam_bench`
//!
//! etcd and ZooKeeper are started by `overlay-testkit` on loopback (or taken from
//! `OVERLAY_TEST_ETCD` / `OVERLAY_TEST_ZK`); a backend that cannot be had is reported and
//! skipped. Each allocator is a tokio task in this process with its own store connection and
//! its own host id (as separate hosts would be), allocating one address after another from
//! one shared pool. Every store call goes through a counting adapter, so "round trips" is the
//! number of store operations, including the first read of the network's pools and the
//! listing of its blocks.
//!
//! For scale, the last column is the store's own ceiling on this machine: compare-and-swap
//! operations per second by the same number of clients, each on its own key, with a 2 KiB value
//! (about the size of a half-full block).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use overlay::Result;
use overlay::ipam::{AddressRequest, Family, Ipam, IpamConfig, PoolRequest, StoreIpam};
use overlay::model::{HostId, NetworkId, PoolConfig};
use overlay::store::{
    self, Backend, Capabilities, KeyValue, KvStore, Listing, TxnOp, TxnResult, Version, Watch,
};
use overlay_testkit::{EtcdServer, ZooKeeperServer};

/// Runs of each configuration; the table shows the median rate.
const REPEATS: usize = 3;
/// Allocations made by each allocator in one run.
const PER_ALLOCATOR: usize = 1000;
/// The pool: 4094 usable addresses, room for 4 × 1000 without exhaustion.
const SUBNET: &str = "10.90.0.0/20";

/// A `KvStore` that counts the operations passing through it: one per round trip.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn KvStore>,
    calls: Arc<AtomicU64>,
}

impl Counting {
    fn hit(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

#[async_trait]
impl KvStore for Counting {
    fn backend(&self) -> Backend {
        self.inner.backend()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn sync(&self) -> Result<()> {
        self.inner.sync().await
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        self.hit();
        self.inner.get(key).await
    }
    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit();
        self.inner.put(key, value).await
    }
    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit();
        self.inner.create(key, value).await
    }
    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        self.hit();
        self.inner.compare_and_swap(key, value, version).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.hit();
        self.inner.delete(key).await
    }
    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        self.hit();
        self.inner.compare_and_delete(key, version).await
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        self.hit();
        self.inner.list(prefix).await
    }
    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        self.hit();
        self.inner.txn(ops).await
    }
    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch> {
        self.hit();
        self.inner.watch(prefix, from).await
    }
    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit();
        self.inner.put_ephemeral(key, value).await
    }
    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        self.hit();
        self.inner.create_ephemeral(key, value).await
    }
    async fn close(&self) -> Result<()> {
        self.inner.close().await
    }
}

struct Row {
    backend: &'static str,
    allocators: usize,
    allocations: usize,
    elapsed: Duration,
    round_trips: u64,
    raw_cas_per_sec: f64,
}

/// The store's ceiling: `clients` connections doing compare-and-swap on a key each.
async fn raw_cas(url: &str, clients: usize) -> Result<f64> {
    let mut stores = Vec::new();
    for _ in 0..clients {
        stores.push(store::connect_str(url).await?);
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, s) in stores.iter().cloned().enumerate() {
        tasks.push(tokio::spawn(async move {
            let key = format!("bench-raw/{i}");
            let value = vec![b'x'; 2048];
            let mut version = s.put(&key, &value).await?;
            for _ in 0..PER_ALLOCATOR {
                version = s.compare_and_swap(&key, &value, version).await?;
            }
            s.delete(&key).await?;
            Ok::<_, overlay::Error>(())
        }));
    }
    for t in tasks {
        t.await
            .map_err(|e| overlay::Error::internal("bench", e.to_string()))??;
    }
    let rate = (clients * (PER_ALLOCATOR + 2)) as f64 / started.elapsed().as_secs_f64();
    for s in stores {
        let _ = s.close().await;
    }
    Ok(rate)
}

/// One run: `allocators` tasks, each allocating `PER_ALLOCATOR` addresses from a new network.
/// The network's pool is released afterwards, also when the run failed.
async fn run(backend: &'static str, url: &str, allocators: usize) -> Result<Row> {
    let setup_store = store::connect_str(url).await?;
    let setup = StoreIpam::new(
        setup_store.clone(),
        HostId::new("setup")?,
        IpamConfig::default(),
    );
    let net = NetworkId::random();
    let pool = PoolConfig::new(SUBNET.parse().unwrap());
    setup
        .add_pools(&net, "bench", &[PoolRequest::Subnet(pool)])
        .await?;
    let measured = allocate(url, net, allocators).await;
    let held = setup.allocations(&net).await.map(|h| h.len());
    setup.release_pools(&net).await?;
    let _ = setup_store.close().await;
    let (elapsed, round_trips) = measured?;
    assert_eq!(
        held?,
        allocators * PER_ALLOCATOR,
        "every allocation is in the store exactly once"
    );
    let raw_cas_per_sec = raw_cas(url, allocators).await?;
    Ok(Row {
        backend,
        allocators,
        allocations: allocators * PER_ALLOCATOR,
        elapsed,
        round_trips,
        raw_cas_per_sec,
    })
}

/// The measured part of a run: how long it took, and the round trips it made.
async fn allocate(url: &str, net: NetworkId, allocators: usize) -> Result<(Duration, u64)> {
    let calls = Arc::new(AtomicU64::new(0));
    let mut ipams = Vec::new();
    for i in 0..allocators {
        let inner = store::connect_str(url).await?;
        let counted: Arc<dyn KvStore> = Arc::new(Counting {
            inner,
            calls: calls.clone(),
        });
        ipams.push(Arc::new(StoreIpam::new(
            counted,
            HostId::new(format!("bench-host-{i}"))?,
            IpamConfig::default(),
        )));
    }
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (i, ipam) in ipams.iter().cloned().enumerate() {
        tasks.push(tokio::spawn(async move {
            for n in 0..PER_ALLOCATOR {
                let req = AddressRequest::any(Family::V4, format!("a{i}-{n}"));
                ipam.request(&net, &req).await?;
            }
            Ok::<_, overlay::Error>(())
        }));
    }
    let mut result = Ok(());
    for t in tasks {
        let r = t
            .await
            .map_err(|e| overlay::Error::internal("bench", e.to_string()));
        if let Err(e) = r.and_then(|r| r) {
            result = Err(e);
        }
    }
    let elapsed = started.elapsed();
    for ipam in &ipams {
        let _ = ipam.store().close().await;
    }
    result.map(|()| (elapsed, calls.load(Ordering::Relaxed)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = EtcdServer::start_or_say();
    let zk = ZooKeeperServer::start_or_say();
    let mut targets: Vec<(&'static str, String)> = vec![(
        "embedded",
        format!("file://{}/bench.db", dir.path().display()),
    )];
    if let Some(s) = &etcd {
        targets.push(("etcd", s.url()));
    }
    if let Some(s) = &zk {
        targets.push(("zookeeper", s.url()));
    }
    let mut rows = Vec::new();
    for (name, url) in &targets {
        // Warm the server up (ZooKeeper's JVM compiles its hot paths) before measuring.
        if let Err(e) = raw_cas(url, 4).await {
            eprintln!("{name}: skipped: {e}");
            continue;
        }
        // 1 and 4 allocators alternate, so a change in the machine's load hits both alike.
        for _ in 0..REPEATS {
            for allocators in [1, 4] {
                match run(name, url, allocators).await {
                    Ok(row) => rows.push(row),
                    Err(e) => eprintln!("{name} with {allocators} allocator(s): failed: {e}"),
                }
            }
        }
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!();
    println!(
        "| backend   | allocators (tasks) | allocations/s | round trips/alloc | vs 1 allocator | store CAS/s, same clients |"
    );
    println!(
        "|-----------|--------------------|---------------|-------------------|----------------|---------------------------|"
    );
    let rate_of = |backend: &str, allocators: usize| {
        let rates = rows
            .iter()
            .filter(|r| r.backend == backend && r.allocators == allocators)
            .map(|r| r.allocations as f64 / r.elapsed.as_secs_f64())
            .collect();
        median(rates)
    };
    for (name, _) in &targets {
        for allocators in [1, 4] {
            let mine: Vec<&Row> = rows
                .iter()
                .filter(|r| r.backend == *name && r.allocators == allocators)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let allocations: usize = mine.iter().map(|r| r.allocations).sum();
            let round_trips: u64 = mine.iter().map(|r| r.round_trips).sum();
            let rate = rate_of(name, allocators);
            println!(
                "| {:<9} | {:>18} | {:>13.0} | {:>17.3} | {:>13.2}× | {:>25.0} |",
                name,
                allocators,
                rate,
                round_trips as f64 / allocations as f64,
                rate / rate_of(name, 1),
                median(mine.iter().map(|r| r.raw_cas_per_sec).collect()),
            );
        }
    }
    println!(
        "\n{PER_ALLOCATOR} allocations per allocator per run, median of {REPEATS} runs; round trips \
         averaged over all runs."
    );
}
