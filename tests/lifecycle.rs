//! The agent's lifecycle across processes: containers that die without a disconnect are
//! collected.
//!
//! Needs root. Test servers (etcd, ZooKeeper) are started by `overlay-testkit`.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use overlay::dataplane::Netns;
use overlay::dataplane::lab::Lab;
use overlay::{ContainerSpec, Controller, ControllerOptions, NetnsRef};
use overlay_testkit::{ip_of, lacks, lookup, wait_until};
use serde_json::json;
use support::{Backend, Cluster, Running};

/// Bounds that only keep a broken build from hanging.
const LIMIT: Duration = Duration::from_secs(15);

/// A lab of two hosts `a` and `b` on one underlay (198.51.100.1 and .2), for controllers in
/// this process.
async fn two_hosts(prefix: char, a: &str, b: &str) -> (Lab, Netns, Netns) {
    let lab = Lab::new(&format!("{prefix}{:x}", std::process::id() & 0xffff)).expect("lab");
    let (na, nb) = lab.two_hosts(a, b).await.expect("two hosts");
    (lab, na, nb)
}

/// The options of host `name` (namespace `ns`, advertising `vtep`) on the embedded store in
/// `dir`, with its state beside it.
fn host_options(
    lab: &Lab,
    dir: &std::path::Path,
    name: &str,
    ns: &Netns,
    vtep: &str,
) -> ControllerOptions {
    ControllerOptions::new(format!("file://{}/store.db", dir.display()))
        .advertise(vtep)
        .host_id(lab.host_id(name))
        .host_netns(ns.path())
        .state_dir(dir.join(format!("{name}-state")))
}

/// The controllers of the two hosts of [`two_hosts`], on one embedded store in `dir`.
async fn open_both(
    lab: &Lab,
    dir: &std::path::Path,
    a: &Netns,
    b: &Netns,
) -> (Controller, Controller) {
    let ca = Controller::open(host_options(lab, dir, "a", a, "198.51.100.1"))
        .await
        .expect("open host a's controller");
    let cb = Controller::open(host_options(lab, dir, "b", b, "198.51.100.2"))
        .await
        .expect("open host b's controller");
    (ca, cb)
}

/// A container `name` in namespace `ns`, with every option left to its default.
fn container(name: &str, ns: &Netns) -> ContainerSpec {
    ContainerSpec::new(name, name, NetnsRef::Path(ns.path().to_path_buf()))
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
    let Running {
        hosts_file: hosts_b,
        ..
    } = c.run(1, "b", json!({})).await;
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
    support::ip_netns_del(ns_a.path());

    wait_until("a's endpoint is collected", LIMIT, async || {
        let doc = c.hosts[1]
            .ok(json!({"op": "inspect", "network": "my-net"}))
            .await;
        doc["Containers"]
            .as_object()
            .is_some_and(|m| m.values().all(|e| e["Name"] != "a"))
    })
    .await;
    wait_until("b stops resolving a", LIMIT, async || lacks(&hosts_b, "a")).await;
    wait_until("a's files are removed", LIMIT, async || {
        !hosts_a.exists() && !hosts_a.parent().unwrap().exists()
    })
    .await;
    // The collection removes the files first and the state entry last: wait for it too.
    wait_until("a's host state is gone", LIMIT, async || {
        std::fs::read_dir(&state).unwrap().count() == 0
    })
    .await;
    // The address is free: a new container gets it by asking for it.
    let Running { endpoint: ep_c, .. } = c.run(0, "c", json!({"ipv4": ip_a.to_string()})).await;
    assert_eq!(ip_of(&ep_c), ip_a);
    c.stop().await;
}

on_backends!(dead_container_collected:
    dead_container_collected_embedded => Backend::Embedded,
    dead_container_collected_etcd => Backend::Etcd,
    dead_container_collected_zookeeper => Backend::ZooKeeper,
);

/// A connect the caller stops waiting for (its future dropped after 0 to 30 ms, at every stage
/// of the work), followed at once by the controller's close (as an agent shutting down does):
/// afterwards the container is either fully connected (the record in the store, the interface
/// in its namespace, the entry in the host's state) or not at all, never half.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_connect_completes_or_rolls_back() {
    overlay_testkit::require_root("abandoned_connect_completes_or_rolls_back");
    let (lab, host, _peer) = two_hosts('x', "host", "peer").await;
    let dir = tempfile::tempdir().unwrap();
    let opts = host_options(&lab, dir.path(), "host", &host, "198.51.100.1");
    let ctl = Controller::open(opts.clone()).await.expect("open");
    ctl.create_network("my-net", &Default::default())
        .await
        .unwrap();
    ctl.close().await.unwrap();
    let store = overlay::store::connect_str(&opts.store).await.unwrap();
    let (mut connected, mut rolled_back) = (0, 0);
    for i in (0..30u64).chain([5000]) {
        let ns = lab.namespace(&format!("c{i}")).await.unwrap();
        let spec = container(&format!("c{i}"), &ns);
        let ctl = Controller::open(opts.clone()).await.expect("open");
        let r = tokio::time::timeout(Duration::from_millis(i), ctl.connect("my-net", &spec)).await;
        if let Ok(r) = &r {
            r.as_ref().expect("a connect that was waited for succeeds");
        }
        ctl.close().await.unwrap();
        let net = store.list("containers/").await.unwrap();
        let recorded = net.kvs.iter().any(|kv| kv.key.ends_with(&format!("/c{i}")));
        let link = std::process::Command::new("ip")
            .args([
                "-n",
                &ns.path().file_name().unwrap().to_string_lossy(),
                "link",
                "show",
                "eth0",
            ])
            .output()
            .unwrap()
            .status
            .success();
        let entries = std::fs::read_dir(dir.path().join("host-state/endpoints"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(
            (recorded, link, entries > 0),
            (recorded, recorded, recorded),
            "after an abandoned connect at {i} ms: record {recorded}, interface {link}, \
             host state entries {entries}"
        );
        if recorded {
            connected += 1;
            let ctl = Controller::open(opts.clone()).await.expect("open");
            ctl.disconnect("my-net", &spec.id).await.unwrap();
            ctl.close().await.unwrap();
        } else {
            rolled_back += 1;
        }
    }
    eprintln!(
        "abandoned connects: {connected} completed, {rolled_back} never started or rolled back"
    );
    store.close().await.unwrap();
}

/// Connect races the disconnect of the host's last other endpoint on the network, 100 times:
/// the disconnect's removal of the sandbox must never take the new interface with it. After
/// every connect that returned Ok, the new container reaches a server on the other host.
///
/// A round costs about 0.3 s, most of it the kernel's unregistering of the sandbox's devices
/// (each RTM_DELLINK waits for an RCU grace period). 100 rounds keep the test near 30 s of a
/// CI run; `scripts/soak-tests` runs it 20 times (2,000 rounds) and `RACE_ROUNDS` sets more.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connect_never_loses_a_race_with_the_last_disconnect() {
    use overlay::dataplane::{Dataplane, NetlinkDataplane};

    overlay_testkit::require_root("connect_never_loses_a_race_with_the_last_disconnect");
    let (lab, a, b) = two_hosts('r', "a", "b").await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cb) = open_both(&lab, dir.path(), &a, &b).await;
    let net: overlay::model::NetworkId = ca
        .create_network("my-net", &Default::default())
        .await
        .unwrap()
        .id
        .parse()
        .unwrap();
    let z = lab.namespace("z").await.unwrap();
    let ep_z = cb.connect("my-net", &container("z", &z)).await.unwrap();
    let ip_z = IpAddr::V4(ep_z.ipv4().expect("an IPv4 address").addr());
    let _server = support::serve(&z, 2181, "imok");
    let x = lab.namespace("x").await.unwrap();
    let y = lab.namespace("y").await.unwrap();
    let mut ok = 0;
    // RACE_ROUNDS runs more rounds (or fewer, for a quick look), never none: a race test of
    // no rounds would assert nothing.
    let rounds: usize = match std::env::var("RACE_ROUNDS") {
        Err(_) => 100,
        Ok(v) => match v.parse() {
            Ok(n) if n > 0 => n,
            _ => panic!("RACE_ROUNDS={v:?}: give a number of rounds of at least 1"),
        },
    };
    let mut phases = [Duration::ZERO; 4];
    let mut waits = vec![];
    for i in 0..rounds {
        let t0 = std::time::Instant::now();
        ca.connect("my-net", &container("x", &x)).await.unwrap();
        phases[0] += t0.elapsed();
        let t0 = std::time::Instant::now();
        let spec_y = container("y", &y);
        let (gone, joined) =
            tokio::join!(ca.disconnect("my-net", "x"), ca.connect("my-net", &spec_y));
        gone.unwrap();
        phases[1] += t0.elapsed();
        let t0 = std::time::Instant::now();
        if joined.is_ok() {
            ok += 1;
            // The connect returned with the remote peer already in the kernel: the first
            // packets need no watch to catch up (a missed neighbour is retried a second later).
            let dp = NetlinkDataplane::in_namespace(&lab.host_id("a"), &a)
                .await
                .unwrap();
            let peers = dp.list_peers(&net).await.unwrap();
            assert!(
                peers.iter().any(|p| p.ip == ip_z),
                "after race {i}, connect returned before z's peer was programmed: {peers:?}"
            );
            let w = wait_until(&format!("y reaches z after race {i}"), LIMIT, async || {
                support::fetch_within(&y, ip_z, 2181, Duration::from_millis(100)).as_deref()
                    == Some("imok")
            })
            .await;
            waits.push(w);
        }
        phases[2] += t0.elapsed();
        let t0 = std::time::Instant::now();
        ca.disconnect("my-net", "y").await.unwrap();
        phases[3] += t0.elapsed();
    }
    waits.sort();
    eprintln!(
        "time from connect to traffic: median {:?}, slowest {:?}",
        waits.get(waits.len() / 2),
        waits.last()
    );
    eprintln!("race phases (connect x, race, traffic, disconnect y): {phases:?}");
    assert_eq!(ok, rounds, "every connect of the race succeeded");
    ca.close().await.unwrap();
    cb.close().await.unwrap();
}

/// The ip tool in namespace `ns`: here it plays the runtime's part of a handoff (Docker moves
/// and configures the interface itself), and reads kernel state for the assertions.
fn ip_in(ns: &Netns, args: &[&str]) -> String {
    let out = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("ip")
        .args(args)
        .output()
        .expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An endpoint for a runtime that moves the interface itself (Docker's remote drivers): its
/// addresses are held first, for its MAC; its interface waits in the host, down and without
/// addresses, until the runtime moves it into the container; it then carries traffic to
/// another host, takes the name the runtime learns later, and goes with its disconnect,
/// leaving its addresses held until the runtime releases them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handed_off_endpoint_waits_in_the_host_and_carries_traffic() {
    use overlay::ipam::Family;
    use overlay::{AddressWant, HandoffSpec};

    overlay_testkit::require_root("handed_off_endpoint_waits_in_the_host_and_carries_traffic");
    let (lab, a, b) = two_hosts('h', "a", "b").await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, cb) = open_both(&lab, dir.path(), &a, &b).await;
    ca.create_network("my-net", &Default::default())
        .await
        .unwrap();
    let z = lab.namespace("z").await.unwrap();
    let ep_z = cb.connect("my-net", &container("z", &z)).await.unwrap();
    let ip_z = IpAddr::V4(ep_z.ipv4().expect("an IPv4 address").addr());
    let _server = support::serve(&z, 2181, "imok z");

    let mac: overlay::model::MacAddr = "02:42:aa:bb:cc:01".parse().unwrap();
    let want = AddressWant::Any(Family::V4);
    let held = ca.request_address("my-net", want, Some(mac)).await.unwrap();
    let again = ca.request_address("my-net", want, Some(mac)).await.unwrap();
    assert_eq!(
        held, again,
        "one owner per MAC: asked again, the same address"
    );
    let IpAddr::V4(v4) = held.address.addr() else {
        panic!("{held:?}")
    };
    let spec = HandoffSpec::new("ep1", "ep-1")
        .ipv4(v4)
        .mac(mac)
        .owner("test");
    let made = ca.connect_handoff("my-net", &spec).await.unwrap();
    assert_eq!(made.mac, mac);
    let waiting = ip_in(&a, &["-o", "addr", "show", "dev", &made.ifname]);
    assert!(!waiting.contains("inet "), "no address yet: {waiting}");
    let link = ip_in(&a, &["-o", "link", "show", "dev", &made.ifname]);
    assert!(
        link.contains(&mac.to_string()) && link.contains("state DOWN"),
        "{link}"
    );
    let e = ca
        .release_address("my-net", held.address.addr())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), overlay::ErrorKind::Conflict, "{e}");

    // The runtime's part: into the container, named eth0, addressed, up.
    let c = lab.namespace("c").await.unwrap();
    ip_in(
        &a,
        &[
            "link",
            "set",
            &made.ifname,
            "netns",
            &c.path().display().to_string(),
        ],
    );
    ip_in(&c, &["link", "set", &made.ifname, "name", "eth0"]);
    ip_in(
        &c,
        &["addr", "add", &held.address.to_string(), "dev", "eth0"],
    );
    ip_in(&c, &["link", "set", "eth0", "up"]);
    wait_until("the container reaches host b", LIMIT, async || {
        support::fetch(&c, ip_z, 2181).as_deref() == Some("imok z")
    })
    .await;

    // The name the runtime learns after the join reaches the other host's resolver.
    ca.rename("my-net", "ep1", "zookeeper1", &["zk".to_string()])
        .await
        .unwrap();
    wait_until("host b resolves the new name", LIMIT, async || {
        cb.resolve("zk.my-net").await.ok() == Some(vec![IpAddr::V4(v4)])
    })
    .await;

    // Disconnect takes the interface wherever the runtime put it; the address stays held
    // until the runtime releases it.
    ca.disconnect("my-net", "ep1").await.unwrap();
    let left = ip_in(&c, &["-o", "link", "show"]);
    assert!(!left.contains("eth0"), "{left}");
    ca.release_address("my-net", held.address.addr())
        .await
        .unwrap();
    let other = ca
        .request_address("my-net", AddressWant::Specific(v4.into()), None)
        .await
        .unwrap();
    assert_eq!(
        other.address, held.address,
        "released: free for another owner"
    );
    cb.disconnect("my-net", "z").await.unwrap();
    ca.close().await.unwrap();
    cb.close().await.unwrap();
}
