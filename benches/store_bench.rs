//! Store benchmark: throughput and latency of get, compare-and-swap and watch delivery for the
//! embedded store, etcd and ZooKeeper, in one table from one run.
//!
//! Run with `cargo bench --bench store_bench` (add `-- N` for N operations per
//! measurement, default 2000). etcd and ZooKeeper are started on loopback by the testkit (or
//! taken from `OVERLAY_TEST_ETCD` / `OVERLAY_TEST_ZK`); a backend that cannot be had is
//! reported and left out.
//!
//! "watch" is the time from starting a put on client A to the event arriving on client B's
//! watch, one put at a time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use overlay::store::{self, KvStore, WatchEvent};
use overlay_testkit::{EtcdServer, ZooKeeperServer};

struct Row {
    backend: &'static str,
    op: &'static str,
    n: usize,
    total: Duration,
    lat: Vec<Duration>,
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

async fn bench(
    backend: &'static str,
    url: &str,
    n: usize,
    rows: &mut Vec<Row>,
) -> overlay::Result<()> {
    let a: Arc<dyn KvStore> = store::connect_str(url).await?;
    let b: Arc<dyn KvStore> = store::connect_str(url).await?;
    let key = "bench/key";
    let mut version = a.put(key, b"0").await?;

    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        a.get(key).await?;
        lat.push(t.elapsed());
    }
    rows.push(Row {
        backend,
        op: "get",
        n,
        total: start.elapsed(),
        lat,
    });

    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        version = a
            .compare_and_swap(key, i.to_string().as_bytes(), version)
            .await?;
        lat.push(t.elapsed());
    }
    rows.push(Row {
        backend,
        op: "compare-and-swap",
        n,
        total: start.elapsed(),
        lat,
    });

    let mut watch = b.watch("bench/w", None).await?;
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        a.put("bench/w/k", i.to_string().as_bytes()).await?;
        loop {
            match tokio::time::timeout(Duration::from_secs(10), watch.next()).await {
                Ok(Some(Ok(WatchEvent::Put(kv)))) if kv.value == i.to_string().as_bytes() => break,
                Ok(Some(Ok(_))) => continue,
                other => panic!("{backend}: no watch event for put {i}: {other:?}"),
            }
        }
        lat.push(t.elapsed());
    }
    rows.push(Row {
        backend,
        op: "watch (put A → event B)",
        n,
        total: start.elapsed(),
        lat,
    });
    a.close().await?;
    b.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| a != "--bench")
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let mut rows = Vec::new();
    let mut notes = Vec::new();

    let dir = tempfile::tempdir().expect("temp dir");
    let file = format!("file://{}/bench.db", dir.path().display());
    if let Err(e) = bench("embedded", &file, n, &mut rows).await {
        notes.push(format!("embedded: failed: {e}"));
    }

    let etcd = EtcdServer::start_or_say();
    match &etcd {
        Some(s) => {
            if let Some(t) = s.started_in() {
                notes.push(format!("etcd server started in {:.2} s", t.as_secs_f64()));
            }
            if let Err(e) = bench("etcd", &s.url(), n, &mut rows).await {
                notes.push(format!("etcd: failed: {e}"));
            }
        }
        None => notes.push("etcd: no server (see above)".into()),
    }
    let zk = ZooKeeperServer::start_or_say();
    match &zk {
        Some(s) => {
            if let Some(t) = s.started_in() {
                notes.push(format!(
                    "ZooKeeper server started in {:.2} s",
                    t.as_secs_f64()
                ));
            }
            if let Err(e) = bench("zookeeper", &s.url(), n, &mut rows).await {
                notes.push(format!("zookeeper: failed: {e}"));
            }
        }
        None => notes.push("zookeeper: no server (see above)".into()),
    }

    println!("| backend | operation | n | ops/s | p50 | p99 |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for mut r in rows {
        r.lat.sort();
        println!(
            "| {} | {} | {} | {:.0} | {:.3} ms | {:.3} ms |",
            r.backend,
            r.op,
            r.n,
            r.n as f64 / r.total.as_secs_f64(),
            pct(&r.lat, 0.50).as_secs_f64() * 1e3,
            pct(&r.lat, 0.99).as_secs_f64() * 1e3,
        );
    }
    println!();
    for note in notes {
        println!("{note}");
    }
}
