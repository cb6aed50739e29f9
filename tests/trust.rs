//! The trust boundary, across processes on every store backend: a record from the store is data
//! and never steers root, and a host id is held by one live agent at a time.
//!
//! Needs root. Test servers (etcd, ZooKeeper) are started by `overlay-testkit`.

mod support;

use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use overlay::dataplane::Netns;
use overlay::model::{EndpointId, keys};
use overlay_testkit::{lacks, lookup, wait_until};
use serde_json::json;
use support::{Backend, Cluster, Running};

/// Bounds that only keep a broken build from hanging; convergence takes milliseconds.
const CONVERGE: Duration = Duration::from_secs(10);

/// The MAC of the forged endpoint (02:42 + 10.0.0.77), to look for in the machine's links.
const FORGED_MAC: &str = "02:42:0a:00:00:4d";

/// Now, in ms since the Unix epoch (the clock of the agents' health reports).
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Names of the machine's own network links carrying `mac` (the test process never left the
/// machine's namespace).
fn own_links_with_mac(mac: &str) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("run ip link");
    assert!(
        out.status.success(),
        "ip -o link show: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(mac))
        .map(str::to_string)
        .collect()
}

/// A forged endpoint record, put by another process with this host's id, a hosts file of a
/// victim file and the machine's own namespace (`/proc/1/ns/net`): the victim file is not
/// touched, no interface appears in the machine's namespace, neither while the agent runs (and
/// heals) nor when it restarts, which removes the record as one this host never made. Its name
/// may reach other containers' hosts files: names are what a record may give.
async fn forged_record_steers_nothing(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    let net = c.hosts[0]
        .ok(json!({"op": "create_network", "name": "my-net"}))
        .await;
    let net_id: overlay::model::NetworkId = net["Id"].as_str().unwrap().parse().unwrap();
    let Running {
        hosts_file: hosts_a,
        ..
    } = c.run(0, "a", json!({})).await;
    let victim = c.dir.path().join("victim");
    std::fs::write(&victim, "precious\n").unwrap();
    let before = std::fs::metadata(&victim).unwrap();
    assert!(own_links_with_mac(FORGED_MAC).is_empty());

    let forged = EndpointId::random();
    let record = json!({
        "schema": 1,
        "id": forged.to_string(),
        "network": net_id.to_string(),
        "container_id": "evil",
        "name": "evil",
        "aliases": [],
        "ipv4": "10.0.0.77/24",
        "mac": FORGED_MAC,
        "host": c.hosts[0].id,
        "vtep": c.hosts[0].vtep.to_string(),
        "sticky": false,
        "ifname": "eth7",
        "netns": "/proc/1/ns/net",
        "hosts_file": victim,
    });
    let key = keys::endpoint(&net_id, &forged);
    let store = overlay::store::connect_str(&c.store.url())
        .await
        .expect("open the store");
    store
        .put(&key, record.to_string().as_bytes())
        .await
        .expect("forge the record");

    // The agent took the record in (its name reached container a's hosts file) ...
    wait_until(
        "the forged name reaches a's hosts file",
        CONVERGE,
        async || lookup(&hosts_a, "evil").is_some(),
    )
    .await;
    // ... and a sweep and a heal ran over it: a heal follows each sweep, so two sweeps
    // completing after the name arrived bracket a whole heal that started after it (and the
    // second sweep started after it too).
    let arrived = now_ms();
    let mut sweeps = Vec::new();
    wait_until("two sweeps after the forged record", CONVERGE, async || {
        let health = c.hosts[0].ok(json!({"op": "health"})).await;
        if let Some(t) = health["last_sweep_ms"].as_u64()
            && t > arrived
            && sweeps.last() != Some(&t)
        {
            sweeps.push(t);
        }
        sweeps.len() >= 2
    })
    .await;
    let after = std::fs::metadata(&victim).unwrap();
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(
        (after.ino(), after.mtime_nsec()),
        (before.ino(), before.mtime_nsec()),
        "the victim file was replaced or written"
    );
    assert_eq!(own_links_with_mac(FORGED_MAC), Vec::<String>::new());

    // A restart finds a record of this host that this host never made, and removes it.
    c.hosts[0].kill().await;
    let ns = Netns::open_path(c.hosts[0].ns.path()).unwrap();
    c.hosts[0] = c.spawn_host(0, ns).await;
    wait_until("the forged record is removed", CONVERGE, async || {
        store.get(&key).await.unwrap().is_none()
    })
    .await;
    wait_until("its name leaves a's hosts file", CONVERGE, async || {
        lacks(&hosts_a, "evil")
    })
    .await;
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert_eq!(own_links_with_mac(FORGED_MAC), Vec::<String>::new());
    store.close().await.unwrap();
    c.stop().await;
}

/// A second agent with the id of a live one is refused, naming the id and the holder's
/// address; the first goes on working. The host restarted from a new process right after a
/// SIGKILL takes its record over (its predecessor is gone), and so does one started after the
/// record expired.
async fn one_live_agent_per_host_id(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    c.hosts[0]
        .ok(json!({"op": "create_network", "name": "my-net"}))
        .await;
    let id = c.hosts[0].id.clone();
    let other: IpAddr = "198.51.100.9".parse().unwrap();
    let ns = Netns::open_path(c.hosts[1].ns.path()).unwrap();
    let state = c.dir.path().join("duplicate-state");
    let e = match c.start_host(&id, other, ns, &state).await {
        Ok(_) => panic!("a second agent with host id {id} started"),
        Err(e) => e,
    };
    assert_eq!(e.kind, "already exists", "{}", e.message);
    for part in [id.as_str(), "198.51.100.1", "host_id"] {
        assert!(e.message.contains(part), "{part:?} in {}", e.message);
    }
    let Running {
        hosts_file: hosts_a,
        ..
    } = c.run(0, "a", json!({})).await;
    let Running {
        hosts_file: hosts_b,
        ..
    } = c.run(1, "b", json!({})).await;
    wait_until("host1 still converges", CONVERGE, async || {
        lookup(&hosts_b, "a").is_some() && lookup(&hosts_a, "b").is_some()
    })
    .await;

    let store = overlay::store::connect_str(&c.store.url())
        .await
        .expect("open the store");
    let host_key = keys::host(&overlay::model::HostId::new(id.clone()).unwrap());
    // Restarted at once after a crash: the predecessor's record has not expired yet.
    c.hosts[0].kill().await;
    assert!(store.get(&host_key).await.unwrap().is_some());
    let ns = Netns::open_path(c.hosts[0].ns.path()).unwrap();
    c.hosts[0] = c.spawn_host(0, ns).await;
    // Restarted after the record expired.
    c.hosts[0].kill().await;
    wait_until("the crashed host's record expires", CONVERGE, async || {
        store.get(&host_key).await.unwrap().is_none()
    })
    .await;
    // Host 2 saw it die (a's name left b's file), so a name found later was served again.
    wait_until("a's name leaves b's hosts file", CONVERGE, async || {
        lacks(&hosts_b, "a")
    })
    .await;
    let ns = Netns::open_path(c.hosts[0].ns.path()).unwrap();
    c.hosts[0] = c.spawn_host(0, ns).await;
    wait_until("a is served again", CONVERGE, async || {
        lookup(&hosts_b, "a").is_some()
    })
    .await;
    assert!(!state.exists(), "the refused agent kept no state");
    store.close().await.unwrap();
    c.stop().await;
}

on_backends!(forged_record_steers_nothing:
    forged_record_steers_nothing_embedded => Backend::Embedded,
    forged_record_steers_nothing_etcd => Backend::Etcd,
    forged_record_steers_nothing_zookeeper => Backend::ZooKeeper,
);
on_backends!(one_live_agent_per_host_id:
    one_live_agent_per_host_id_embedded => Backend::Embedded,
    one_live_agent_per_host_id_etcd => Backend::Etcd,
    one_live_agent_per_host_id_zookeeper => Backend::ZooKeeper,
);
