//! The agent's lifecycle across processes: containers that die without a disconnect are
//! collected.
//!
//! Needs root. Test servers (etcd, ZooKeeper) are started by `overlay-testkit`.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;
use support::{Backend, Cluster, lookup, wait_until};

/// Bounds that only keep a broken build from hanging.
const LIMIT: Duration = Duration::from_secs(15);

fn ip_of(ep: &serde_json::Value) -> IpAddr {
    let cidr = ep["IPv4Address"].as_str().expect("IPv4Address");
    cidr.split('/').next().unwrap().parse().expect("address")
}

/// A connected container whose namespace is deleted (`ip netns del`, as when a container dies
/// or its runtime crashes before its DEL): within the grace its endpoint leaves the store and
/// `inspect`, the other container's hosts file stops resolving it, its address is free again
/// (a new container gets it as a static address), its hosts file and the directory connect made
/// for it are gone, and so is its entry in the host's state.
async fn dead_container_collected(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    c.hosts[0]
        .ok(json!({"op": "create_network", "name": "my-net"}))
        .await;
    let (_, ns_a, _, ep_a) = {
        let (ns, _) = c.container("a").await;
        // A hosts file in a directory that does not exist yet: connect makes it.
        let hosts = c.dir.path().join("made-for-a").join("hosts");
        let ep = c.hosts[0]
            .ok(json!({"op": "connect", "network": "my-net", "container": {
                "id": "a-1", "name": "a", "netns": {"path": ns.path()}, "hosts_file": hosts}}))
            .await;
        ((), ns, hosts, ep)
    };
    let hosts_a = c.dir.path().join("made-for-a").join("hosts");
    let (_, _, hosts_b, _) = c.run(1, "b", json!({})).await;
    wait_until("b resolves a", LIMIT, async || {
        lookup(&hosts_b, "a").is_some()
    })
    .await;
    wait_until("a's hosts file is written", LIMIT, async || {
        hosts_a.exists()
    })
    .await;
    let ip_a = ip_of(&ep_a);
    let state = c.dir.path().join("host1-state").join("endpoints");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 1);

    // The container dies: its namespace file goes (the test's own handle keeps the namespace
    // itself, as a process of a dying container might for a moment).
    let name = ns_a
        .path()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let out = std::process::Command::new("ip")
        .args(["netns", "del", &name])
        .output()
        .expect("ip netns del");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    wait_until("a's endpoint is collected", LIMIT, async || {
        let doc = c.hosts[1]
            .ok(json!({"op": "inspect", "network": "my-net"}))
            .await;
        doc["Containers"]
            .as_object()
            .is_some_and(|m| m.values().all(|e| e["Name"] != "a"))
    })
    .await;
    wait_until("b stops resolving a", LIMIT, async || {
        lookup(&hosts_b, "a").is_none()
    })
    .await;
    wait_until("a's files are removed", LIMIT, async || {
        !hosts_a.exists() && !hosts_a.parent().unwrap().exists()
    })
    .await;
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "a's host state is gone"
    );
    // The address is free: a new container gets it by asking for it.
    let (_, _, _, ep_c) = c.run(0, "c", json!({"ipv4": ip_a.to_string()})).await;
    assert_eq!(ip_of(&ep_c), ip_a);
    c.stop().await;
}

on_backends!(dead_container_collected:
    dead_container_collected_embedded => Backend::Embedded,
    dead_container_collected_etcd => Backend::Etcd,
    dead_container_collected_zookeeper => Backend::ZooKeeper,
);
