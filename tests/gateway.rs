//! The gateway bridge through the controller, with real traffic: host A's containers reach the
//! outside world (host B's namespace, on the underlay LAN) masqueraded as A, the seed's
//! `-p 2181:2181` reaches a container from B, a second publish of the port is refused, an
//! internal network has no way out, and nothing is left behind after the last disconnect or
//! across a restart of the controller.
//!
//! Needs root.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use overlay::ErrorKind;
use overlay::dataplane::Netns;
use overlay::dataplane::lab::Lab;
use overlay::{
    ContainerInspect, ContainerSpec, Controller, ControllerOptions, NetnsRef, NetworkOptions,
    Networks, SubnetOptions,
};
use overlay_testkit::{TcpGreeter, fetch, look, wait_until};
use serde_json::json;
use support::{Backend, Cluster, Running};

const WAIT: Duration = Duration::from_secs(2);
/// Bounds that only keep a broken build from hanging.
const LIMIT: Duration = Duration::from_secs(15);

fn container(name: &str, ns: &Netns, publish: &[&str]) -> ContainerSpec {
    publish.iter().fold(
        ContainerSpec::new(name, name, NetnsRef::Path(ns.path().to_path_buf())),
        |spec, p| spec.publish(p.parse().unwrap()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_reach_out_and_published_ports_reach_in() {
    overlay_testkit::require_root("containers_reach_out_and_published_ports_reach_in");
    let lab = Lab::new(&format!("g{:x}", std::process::id() & 0xffff)).expect("lab");
    let (host, lan) = lab.two_hosts("host1", "lan").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = ControllerOptions::new(format!("file://{}/store.db", dir.path().display()))
        .advertise("198.51.100.1")
        .host_id(lab.host_id("host1"))
        .host_netns(host.path())
        .state_dir(dir.path().join("state"))
        // A sweep (which heals the gateway) every half second.
        .reclaim_grace(Duration::from_secs(1));
    let ctl = Controller::open(opts.clone()).await.unwrap();
    ctl.create_network("my-net", &NetworkOptions::default())
        .await
        .unwrap();
    let internal = NetworkOptions::default().internal(true);
    ctl.create_network("secret", &internal).await.unwrap();

    let outside = TcpGreeter::answering(lan.path(), "198.51.100.2:0".parse().unwrap(), |p| {
        p.ip().to_string()
    })
    .unwrap();
    let world = ([198, 51, 100, 2], outside.port()).into();
    let zk1 = lab.namespace("zookeeper1").await.unwrap();
    let shown = ctl
        .connect("my-net", &container("zookeeper1", &zk1, &["2181:2181"]))
        .await
        .unwrap();
    let uplink = shown.uplink.as_ref().expect("a gateway interface");
    assert_eq!(uplink.address.to_string(), "172.18.0.2/16");
    assert_eq!(uplink.ifname, "eth1");
    assert_eq!(shown.ports, ["2181:2181".parse().unwrap()]);
    let inspect = ctl.inspect("my-net").await.unwrap();
    assert_eq!(
        inspect.containers["zookeeper1"],
        ContainerInspect::of_attachment(&shown, ctl.host_id()),
        "network inspect shows the same"
    );
    let links = look(zk1.path(), "ip", &["-o", "-4", "addr", "show"]);
    assert!(
        links.contains("eth0") && links.contains("eth1") && links.contains("172.18.0.2/16"),
        "eth0 on the overlay, eth1 on the gateway: {links}"
    );
    assert_eq!(
        fetch(zk1.path(), world, WAIT).as_deref(),
        Some("198.51.100.1"),
        "the world sees host1's address"
    );
    let _zk = TcpGreeter::start(zk1.path(), "0.0.0.0:2181".parse().unwrap(), "imok").unwrap();
    let published = ([198, 51, 100, 1], 2181).into();
    assert_eq!(fetch(lan.path(), published, WAIT).as_deref(), Some("imok"));

    // Another host has ports of its own: zookeeper2 publishes 2181 on host2.
    let host2 = lab.namespace("host2").await.unwrap();
    let lan2 = lab.namespace("lan2").await.unwrap();
    lab.underlay(
        &host2,
        "198.51.101.1/24".parse().unwrap(),
        &lan2,
        "198.51.101.2/24".parse().unwrap(),
    )
    .await
    .unwrap();
    let ctl2 = Controller::open(
        opts.clone()
            .advertise("198.51.101.1")
            .host_id(lab.host_id("host2"))
            .host_netns(host2.path())
            .state_dir(dir.path().join("state2")),
    )
    .await
    .unwrap();
    let zk2b = lab.namespace("zookeeper2b").await.unwrap();
    ctl2.connect("my-net", &container("zookeeper2b", &zk2b, &["2181:2181"]))
        .await
        .unwrap();
    let _zk2b = TcpGreeter::start(zk2b.path(), "0.0.0.0:2181".parse().unwrap(), "zk2").unwrap();
    let published2 = ([198, 51, 101, 1], 2181).into();
    assert_eq!(fetch(lan2.path(), published2, WAIT).as_deref(), Some("zk2"));
    ctl2.disconnect("my-net", "zookeeper2b").await.unwrap();
    ctl2.close().await.unwrap();

    // The port is taken on this host; an internal network publishes nothing and has no way out.
    let zk2 = lab.namespace("zookeeper2").await.unwrap();
    let e = ctl
        .connect("my-net", &container("zookeeper2", &zk2, &["2181:2181"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    assert!(
        e.to_string().contains("zookeeper1"),
        "names the holder: {e}"
    );
    assert!(
        !look(zk2.path(), "ip", &["-o", "link", "show"]).contains("eth"),
        "a refused connect leaves nothing in the container"
    );
    let e = ctl
        .connect("secret", &container("zookeeper2", &zk2, &["2888:2888"]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    ctl.connect("secret", &container("zookeeper2", &zk2, &[]))
        .await
        .unwrap();
    assert!(!look(zk2.path(), "ip", &["-o", "link", "show"]).contains("eth1"));
    assert_eq!(fetch(zk2.path(), world, WAIT), None, "internal: no way out");

    // The gateway pool is this host's: no network of its own takes a subnet in it, and one
    // made elsewhere over it (an administrator with no gateway) is refused at connect.
    let over =
        NetworkOptions::default().subnet(SubnetOptions::new("172.18.5.0/24".parse().unwrap()));
    let e = ctl.create_network("over", &over).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    let admin = Networks::open(&opts.store, None).await.unwrap();
    admin.create_network("over", &over).await.unwrap();
    let zk3 = lab.namespace("zookeeper3").await.unwrap();
    let e = ctl
        .connect("over", &container("zookeeper3", &zk3, &[]))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("172.18.0.0/16"), "{e}");
    assert!(!look(zk3.path(), "ip", &["-o", "link", "show"]).contains("eth"));
    admin.remove_network("over").await.unwrap();
    admin.close().await.unwrap();

    // A restart of the controller keeps it all working (its state says what to restore).
    ctl.close().await.unwrap();
    let ctl = Controller::open(opts).await.unwrap();
    assert_eq!(fetch(lan.path(), published, WAIT).as_deref(), Some("imok"));

    // Removed behind the agent's back: the container's gateway interface and the whole table.
    let table = look(host.path(), "nft", &["list", "tables"]);
    let table = table
        .split_whitespace()
        .find(|w| w.starts_with("overlay-"))
        .expect("the gateway table")
        .to_string();
    for (ns, tool, args) in [
        (&zk1, "ip", vec!["link", "del", "eth1"]),
        (&host, "nft", vec!["delete", "table", "ip", table.as_str()]),
    ] {
        let out = look(ns.path(), tool, &args);
        assert!(out.trim().is_empty(), "{tool} {args:?}: {out}");
    }
    let healed = std::time::Instant::now();
    while fetch(lan.path(), published, Duration::from_millis(300)).as_deref() != Some("imok") {
        assert!(
            healed.elapsed() < Duration::from_secs(15),
            "the sweep did not heal the gateway"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        fetch(zk1.path(), world, WAIT).as_deref(),
        Some("198.51.100.1")
    );

    ctl.disconnect("secret", "zookeeper2").await.unwrap();
    ctl.disconnect("my-net", "zookeeper1").await.unwrap();
    assert_eq!(fetch(lan.path(), published, WAIT), None, "unpublished");
    let links = look(host.path(), "ip", &["-o", "link", "show"]);
    assert!(
        !links.contains("ovl_gwbridge") && !links.contains("ve-"),
        "{links}"
    );
    let tables = look(host.path(), "nft", &["list", "tables"]);
    assert!(!tables.contains("overlay-"), "{tables}");
    ctl.close().await.unwrap();
}

/// What a host namespace holds that an agent may leave behind: its whole nftables ruleset, its
/// links (name and bridge) and its IPv4 addresses, as `nft` and `ip` print them.
/// The gateway bridge's fixed MAC: Docker's scheme for its address, 172.18.0.1.
const GATEWAY_MAC: &str = "02:42:ac:12:00:01";

/// The MAC of the gateway bridge in host namespace `ns`.
fn bridge_mac(ns: &Netns) -> String {
    let link = overlay_testkit::link(ns.path(), "ovl_gwbridge").expect("the gateway bridge");
    link["address"].as_str().expect("a MAC").to_string()
}

fn kernel_state(ns: &Netns) -> (String, Vec<String>, Vec<String>) {
    let links = look(ns.path(), "ip", &["-o", "link", "show"])
        .lines()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let name = words.get(1).map_or("", |w| w.trim_end_matches(':'));
            let name = name.split('@').next().unwrap_or(name);
            let master = words
                .iter()
                .position(|w| *w == "master")
                .and_then(|i| words.get(i + 1))
                .unwrap_or(&"-");
            format!("{name} {master}")
        })
        .collect();
    let addrs = look(ns.path(), "ip", &["-o", "-4", "addr", "show"])
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.get(1..4).map(|w| w.join(" ")).unwrap_or_default()
        })
        .collect();
    (look(ns.path(), "nft", &["list", "ruleset"]), links, addrs)
}

/// A SIGKILLed agent leaves its gateway in the kernel. The agent started after it takes the
/// gateway over as it is (the same ruleset, links and addresses: nothing made twice) and
/// converges what changed while it was dead (a container that died meanwhile loses its port
/// and its bridge port). After the last disconnect the host holds exactly what it held before
/// the first connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_agent_leaves_nothing_behind() {
    let test = "a_killed_agent_leaves_nothing_behind";
    let mut c = Cluster::with_reclaim_grace(test, Backend::Embedded, 1000).await;
    let host = Netns::open_path(c.hosts[0].ns.path()).unwrap();
    let lan = Netns::open_path(c.hosts[1].ns.path()).unwrap();
    let host1: IpAddr = "198.51.100.1".parse().unwrap();
    let pristine = kernel_state(&host);
    assert!(!pristine.0.contains("overlay-"), "{}", pristine.0);

    c.hosts[0]
        .ok(json!({"op": "create_network", "name": "my-net"}))
        .await;
    let Running {
        id: zk, ns: zk_ns, ..
    } = c
        .run(0, "zookeeper1", json!({"publish": ["2181:2181"]}))
        .await;
    let Running { ns: kafka_ns, .. } = c.run(0, "kafka", json!({"publish": ["9092:9092"]})).await;
    let _zk = support::serve(&zk_ns, 2181, "imok");
    let kafka = support::serve(&kafka_ns, 9092, "kafka");
    assert_eq!(support::fetch(&lan, host1, 2181).as_deref(), Some("imok"));
    assert_eq!(support::fetch(&lan, host1, 9092).as_deref(), Some("kafka"));
    let running = kernel_state(&host);
    assert!(
        running.0.contains("dport 2181") && running.0.contains("dport 9092"),
        "{}",
        running.0
    );
    let ports = |links: &[String]| {
        links
            .iter()
            .filter(|l| l.ends_with(" ovl_gwbridge"))
            .count()
    };
    assert_eq!(
        ports(&running.1),
        2,
        "a bridge port per container: {:?}",
        running.1
    );
    assert_eq!(
        bridge_mac(&host),
        GATEWAY_MAC,
        "the gateway bridge's MAC is its own"
    );

    // Killed and started again: the kernel state is taken over as it is.
    c.hosts[0].kill().await;
    c.hosts[0] = c
        .spawn_host(0, Netns::open_path(host.path()).unwrap())
        .await;
    assert_eq!(support::fetch(&lan, host1, 2181).as_deref(), Some("imok"));
    assert_eq!(
        kernel_state(&host),
        running,
        "the restarted agent made something twice"
    );

    // Killed again; kafka dies while no agent runs (its namespace goes, and with it the
    // container's end of its gateway interface).
    c.hosts[0].kill().await;
    drop(kafka);
    let kafka_path = kafka_ns.path().to_path_buf();
    drop(kafka_ns);
    support::ip_netns_del(&kafka_path);
    c.hosts[0] = c
        .spawn_host(0, Netns::open_path(host.path()).unwrap())
        .await;
    wait_until("kafka's port is unpublished", LIMIT, async || {
        !kernel_state(&host).0.contains("9092")
    })
    .await;
    assert_eq!(support::fetch(&lan, host1, 2181).as_deref(), Some("imok"));
    assert_eq!(support::fetch(&lan, host1, 9092), None);
    // The kernel removes a deleted namespace's devices (kafka's end of its veth, and with it
    // the bridge port) in a work queue of its own, some time after the namespace went.
    let mut now = kernel_state(&host);
    wait_until(
        "kafka's bridge port goes with its namespace",
        LIMIT,
        async || {
            now = kernel_state(&host);
            ports(&now.1) == 1
        },
    )
    .await;
    // The bridge kept its MAC through the port's leaving: zookeeper1's neighbour entry of its
    // gateway still points at it (a bridge left to the kernel takes its lowest port's MAC,
    // and changes it when that port goes; zookeeper1's replies then went nowhere).
    assert_eq!(bridge_mac(&host), GATEWAY_MAC);
    assert_eq!(support::fetch(&lan, host1, 2181).as_deref(), Some("imok"));
    assert_eq!(
        now.1.len() + 1,
        running.1.len(),
        "nothing else went: {:?}",
        now.1
    );
    assert_eq!(now.2, running.2, "the addresses stay");

    c.hosts[0]
        .ok(json!({"op": "disconnect", "network": "my-net", "container_id": zk}))
        .await;
    wait_until("the host is as it was", LIMIT, async || {
        kernel_state(&host) == pristine
    })
    .await;
    c.stop().await;
}
