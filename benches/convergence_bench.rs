//! Convergence benchmark: the time from `connect` returning on host A to the peer entry being
//! present in host B's kernel, p50/p99 over 200 endpoints, per store backend; and `networks()`
//! and `inspect()` with 100 networks of 20 endpoints each.
//!
//! Run as root (it builds namespaces):
//!
//! ```sh
//! cargo bench --bench convergence_bench
//! ```
//!
//! etcd and ZooKeeper are started on loopback by `overlay-testkit` (Debian's `etcd-server` and
//! `zookeeper` packages); a backend whose server cannot be started is reported as such.

use std::time::{Duration, Instant};

use overlay::dataplane::lab::Lab;
use overlay::dataplane::{Dataplane, NetlinkDataplane};
use overlay::model::{Endpoint, EndpointId, HostId, MacAddr, NetworkId, Record, SCHEMA, keys};
use overlay::{ContainerSpec, Controller, ControllerOptions, NetnsRef, NetworkOptions};
use overlay::{Error, Result};
use overlay_testkit::{EtcdServer, ZooKeeperServer};

const ENDPOINTS: usize = 200;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// A controller for host `name` of `lab`, keeping its state in `state` (the bench closes hosts
/// with containers still connected: their state goes with the directory).
async fn open(
    url: &str,
    state: &std::path::Path,
    lab: &Lab,
    ns: &overlay::dataplane::Netns,
    name: &str,
    vtep: &str,
) -> Result<Controller> {
    Controller::open(
        ControllerOptions::new(url)
            .advertise(vtep)
            .host_id(lab.host_id(name))
            .host_netns(ns.path())
            .state_dir(state.join(name)),
    )
    .await
}

/// Connects `ENDPOINTS` containers on host A one after the other and times each until host
/// B's kernel holds its peer.
async fn convergence(url: &str, tag: &str) -> Result<Vec<Duration>> {
    let lab = Lab::new(tag)?;
    let (a, b) = lab.two_hosts("a", "b").await?;
    let state = tempfile::tempdir().map_err(|e| overlay::Error::io("bench", "temp dir", e))?;
    let ca = open(url, state.path(), &lab, &a, "a", "198.51.100.1").await?;
    let cb = open(url, state.path(), &lab, &b, "b", "198.51.100.2").await?;
    let opts = NetworkOptions::default()
        .subnet(overlay::SubnetOptions::new("10.99.0.0/22".parse().unwrap()));
    let net = ca.create_network("bench", &opts).await?;
    let id: NetworkId = net.id.parse()?;
    // Host B needs a local endpoint to watch the network at all.
    let anchor = lab.namespace("anchor").await?;
    let spec = |i: usize, ns: &overlay::dataplane::Netns| {
        ContainerSpec::new(
            format!("c{i}"),
            format!("c{i}"),
            NetnsRef::Path(ns.path().to_path_buf()),
        )
    };
    cb.connect("bench", &spec(100_000, &anchor)).await?;
    let watcher = NetlinkDataplane::in_namespace(&lab.host_id("b"), &b).await?;
    let mut times = Vec::with_capacity(ENDPOINTS);
    for i in 0..ENDPOINTS {
        let ns = lab.namespace(&format!("c{i}")).await?;
        let ep = ca.connect("bench", &spec(i, &ns)).await?;
        let ip: std::net::IpAddr = ep
            .ipv4()
            .ok_or_else(|| Error::internal("bench", "the connect gave no IPv4 address"))?
            .addr()
            .into();
        let start = Instant::now();
        loop {
            if watcher.list_peers(&id).await?.iter().any(|p| p.ip == ip) {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                return Err(Error::internal("bench", format!("peer {ip} never arrived")));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        times.push(start.elapsed());
    }
    ca.close().await?;
    cb.close().await?;
    drop(lab);
    times.sort();
    Ok(times)
}

/// `networks()` and `inspect()` over 100 networks with 20 endpoint records each (records
/// written through the store; listing does not touch the kernel).
async fn listing(url: &str, tag: &str) -> Result<(Duration, Duration)> {
    let lab = Lab::new(tag)?;
    let a = lab.namespace("a").await?;
    let state = tempfile::tempdir().map_err(|e| overlay::Error::io("bench", "temp dir", e))?;
    let ctl = open(url, state.path(), &lab, &a, "a", "198.51.100.1").await?;
    let store = ctl.store().clone();
    for n in 0..100 {
        let net = ctl
            .create_network(&format!("net{n}"), &NetworkOptions::default())
            .await?;
        let id: NetworkId = net.id.parse()?;
        for e in 0..20u8 {
            let ip = std::net::Ipv4Addr::new(10, 250, n as u8, e + 2);
            let ep = Endpoint {
                schema: SCHEMA,
                id: EndpointId::random(),
                network: id,
                container_id: format!("n{n}e{e}"),
                name: format!("n{n}e{e}"),
                aliases: vec![],
                ipv4: Some(ipnet::Ipv4Net::new(ip, 24).unwrap()),
                ipv6: None,
                mac: MacAddr::from_ipv4(ip),
                host: HostId::new("elsewhere")?,
                vtep: "198.51.100.9".parse().unwrap(),
                sticky: false,
                ifname: "eth0".into(),
            };
            store
                .put(&keys::endpoint(&id, &ep.id), &ep.encode())
                .await?;
        }
    }
    let t = Instant::now();
    let rows = ctl.networks().await?;
    let ls = t.elapsed();
    assert_eq!(rows.len(), 100);
    let t = Instant::now();
    for n in 0..100 {
        let doc = ctl.inspect(&format!("net{n}")).await?;
        assert_eq!(doc.containers.len(), 20);
    }
    let inspect = t.elapsed() / 100;
    for n in 0..100 {
        let id: NetworkId = ctl.inspect(&format!("net{n}")).await?.id.parse()?;
        for kv in store.list(&keys::endpoints(&id)).await?.kvs {
            store.delete(&kv.key).await?;
        }
        ctl.remove_network(&format!("net{n}")).await?;
    }
    ctl.close().await?;
    Ok((ls, inspect))
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "convergence_bench: needs root (it creates network namespaces); run it with sudo"
        );
        return std::process::ExitCode::from(2);
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let etcd = EtcdServer::start_or_say();
    let zk = ZooKeeperServer::start_or_say();
    // Each phase gets a fresh store (etcd and ZooKeeper URLs name a fresh prefix per call).
    let file = |phase: &str| format!("file://{}/{phase}.db", dir.path().display());
    let backends: Vec<(&str, Option<[String; 2]>)> = vec![
        ("embedded", Some([file("conv"), file("list")])),
        ("etcd", etcd.as_ref().map(|s| [s.url(), s.url()])),
        ("zookeeper", zk.as_ref().map(|s| [s.url(), s.url()])),
    ];
    println!(
        "convergence: connect on host A returns -> peer in host B's kernel ({ENDPOINTS} endpoints)"
    );
    println!("listing: 100 networks x 20 endpoints; inspect is per network");
    println!();
    println!(
        "| backend   | conv p50 ms | conv p99 ms | conv max ms | networks() ms | inspect() ms |"
    );
    println!(
        "|-----------|-------------|-------------|-------------|---------------|--------------|"
    );
    let mut failed = false;
    for (i, (name, url)) in backends.iter().enumerate() {
        let Some([conv_url, list_url]) = url else {
            println!("| {name:<9} | server could not be started |");
            continue;
        };
        let conv = Box::pin(convergence(
            conv_url,
            &format!("cb{i}{}", std::process::id()),
        ))
        .await;
        let list = listing(list_url, &format!("lb{i}{}", std::process::id())).await;
        match (conv, list) {
            (Ok(t), Ok((ls, ins))) => println!(
                "| {name:<9} | {:>11} | {:>11} | {:>11} | {:>13} | {:>12} |",
                ms(pct(&t, 0.5)),
                ms(pct(&t, 0.99)),
                ms(*t.last().unwrap()),
                ms(ls),
                ms(ins)
            ),
            (c, l) => {
                failed = true;
                println!(
                    "| {name:<9} | failed: {:?} {:?} |",
                    c.err().map(|e| e.to_string()),
                    l.err().map(|e| e.to_string())
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
