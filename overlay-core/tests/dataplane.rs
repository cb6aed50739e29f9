//! The VXLAN data plane against the real kernel: two simulated hosts (namespaces joined by a
//! veth underlay on 192.0.2.0/24), networks on both, containers as namespaces. Needs root; every
//! namespace the test makes is removed by guards even when it fails.

mod support;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use overlay_core::ErrorKind;
use overlay_core::dataplane::{AttachSpec, Dataplane, NetlinkDataplane, Netns, Peer, SandboxSpec};
use overlay_core::model::{MacAddr, NetworkId, Vni};
use overlay_testkit::look;
use support::{World, in_ns, ip_counter, tcp_roundtrip, udp_df};

fn net(n: u8) -> (NetworkId, Vni) {
    let mut id = [0u8; 32];
    id[0] = n;
    id[31] = n;
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    (
        hex.parse().unwrap(),
        Vni::new(u32::from(n) * 1000 + 7).unwrap(),
    )
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// Attaches `c` with `ip`/24 on host `h` and returns the peer other hosts need.
async fn join(w: &World, h: usize, network: &NetworkId, c: &Netns, ip: &str) -> Peer {
    let spec = AttachSpec::new(c.path(), format!("{ip}/24").parse().unwrap());
    let a = w.hosts[h].dp.attach(network, &spec).await.unwrap();
    assert!(a.created);
    Peer {
        ip: IpAddr::V4(v4(ip)),
        mac: a.mac,
        vtep: w.hosts[h].vtep,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_on_two_hosts_talk_over_vxlan_and_networks_stay_isolated() {
    overlay_testkit::require_root(
        "containers_on_two_hosts_talk_over_vxlan_and_networks_stay_isolated",
    );
    let w = World::two_hosts().await;
    let (n1, vni1) = net(1);
    let (n2, vni2) = net(2);
    for h in &w.hosts {
        for (n, vni) in [(n1, vni1), (n2, vni2)] {
            let info =
                h.dp.ensure_sandbox(&SandboxSpec::new(n, vni, h.vtep))
                    .await
                    .unwrap();
            assert_eq!(info.mtu, Some(1450), "underlay 1500 − 50");
        }
    }
    // Network 1: c1 and c5 on host A, c3 and c6 on host B. Network 2 (same subnet, other VNI):
    // c2 on A, c4 on B.
    let (c1, c2, c3, c4) = (
        w.container("c1"),
        w.container("c2"),
        w.container("c3"),
        w.container("c4"),
    );
    let (c5, c6) = (w.container("c5"), w.container("c6"));
    let p1 = join(&w, 0, &n1, &c1, "10.1.0.11").await;
    let p3 = join(&w, 1, &n1, &c3, "10.1.0.13").await;
    let p5 = join(&w, 0, &n1, &c5, "10.1.0.15").await;
    let p6 = join(&w, 1, &n1, &c6, "10.1.0.16").await;
    let p2 = join(&w, 0, &n2, &c2, "10.1.0.12").await;
    let p4 = join(&w, 1, &n2, &c4, "10.1.0.14").await;
    assert_eq!(p1.mac, MacAddr::from_ipv4(v4("10.1.0.11")));
    w.hosts[0].dp.add_peers(&n1, &[p3, p6]).await.unwrap();
    w.hosts[1].dp.add_peers(&n1, &[p1, p5]).await.unwrap();
    w.hosts[0].dp.add_peer(&n2, &p4).await.unwrap();
    w.hosts[1].dp.add_peer(&n2, &p2).await.unwrap();

    // The container side is as asked: name, MAC, MTU, address, up; lo up.
    let shown = look(c1.path(), "ip", &["-d", "addr", "show", "eth0"]);
    assert!(
        shown.contains("mtu 1450") && shown.contains("02:42:0a:01:00:0b"),
        "{shown}"
    );
    assert!(
        shown.contains("10.1.0.11/24") && shown.contains("UP"),
        "{shown}"
    );
    assert!(look(c1.path(), "ip", &["link", "show", "lo"]).contains("UP"));

    // TCP and UDP across hosts.
    let echoed = tcp_roundtrip(&c3, v4("10.1.0.13"), &c1, Duration::from_secs(5)).unwrap();
    assert_eq!(echoed, "hello over vxlan");
    let echoed = tcp_roundtrip(&c2, v4("10.1.0.12"), &c4, Duration::from_secs(5)).unwrap();
    assert_eq!(echoed, "hello over vxlan");
    assert_eq!(udp_df(&c3, v4("10.1.0.13"), &c1, 100).unwrap(), Some(100));
    assert_eq!(udp_df(&c5, v4("10.1.0.15"), &c6, 100).unwrap(), Some(100));
    let echoed = tcp_roundtrip(&c6, v4("10.1.0.16"), &c5, Duration::from_secs(5)).unwrap();
    assert_eq!(echoed, "hello over vxlan");
    // Two containers of one host talk over the sandbox bridge.
    let echoed = tcp_roundtrip(&c5, v4("10.1.0.15"), &c1, Duration::from_secs(5)).unwrap();
    assert_eq!(echoed, "hello over vxlan");

    // MTU − IPv4 − UDP headers crosses with DF set, unfragmented on the underlay; one byte more
    // is refused at the sender.
    let (frag_a, reasm_b) = (
        ip_counter(&w.hosts[0].ns, "FragCreates"),
        ip_counter(&w.hosts[1].ns, "ReasmReqds"),
    );
    assert_eq!(
        udp_df(&c3, v4("10.1.0.13"), &c1, 1450 - 28).unwrap(),
        Some(1422)
    );
    assert_eq!(ip_counter(&w.hosts[0].ns, "FragCreates"), frag_a);
    assert_eq!(ip_counter(&w.hosts[1].ns, "ReasmReqds"), reasm_b);
    let too_big = udp_df(&c3, v4("10.1.0.13"), &c1, 1450 - 28 + 1).unwrap_err();
    assert_eq!(too_big.raw_os_error(), Some(libc::EMSGSIZE), "{too_big}");

    // Isolation: c1 (network 1) gets no ARP answer for c4 (network 2, same subnet) and no TCP.
    let blocked = tcp_roundtrip(&c4, v4("10.1.0.14"), &c1, Duration::from_millis(1500));
    assert!(blocked.is_err(), "network 1 reached network 2: {blocked:?}");
    let neigh = look(c1.path(), "ip", &["neigh", "show", "10.1.0.14"]);
    assert!(
        !neigh.contains("lladdr"),
        "an ARP answer crossed networks: {neigh}"
    );
    // Even a misprogrammed entry sending c4's MAC to host B over VNI 1 does not cross into VNI 2.
    w.hosts[0].dp.add_peer(&n1, &p4).await.unwrap();
    let blocked = tcp_roundtrip(&c4, v4("10.1.0.14"), &c1, Duration::from_millis(1500));
    assert!(
        blocked.is_err(),
        "VNI {} frames reached VNI {}: {blocked:?}",
        vni1,
        vni2
    );
    w.hosts[0].dp.remove_peer(&n1, &p4).await.unwrap();
    assert_eq!(w.hosts[0].dp.list_peers(&n1).await.unwrap(), vec![p3, p6]);

    // Teardown: detach, remove peers and sandboxes; nothing of the test remains on the hosts.
    let all = [
        (0, n1, &c1),
        (1, n1, &c3),
        (0, n1, &c5),
        (1, n1, &c6),
        (0, n2, &c2),
        (1, n2, &c4),
    ];
    for (h, n, c) in all {
        w.hosts[h].dp.detach(&n, c.path(), "eth0").await.unwrap();
        w.hosts[h].dp.detach(&n, c.path(), "eth0").await.unwrap();
        assert!(!look(c.path(), "ip", &["link"]).contains("eth0"));
    }
    w.hosts[0].dp.remove_peer(&n1, &p3).await.unwrap();
    w.hosts[0].dp.remove_peer(&n1, &p6).await.unwrap();
    assert!(w.hosts[0].dp.list_peers(&n1).await.unwrap().is_empty());
    for h in &w.hosts {
        assert_eq!(h.dp.list_sandboxes().await.unwrap().len(), 2);
        for n in [n1, n2] {
            h.dp.remove_sandbox(&n).await.unwrap();
            h.dp.remove_sandbox(&n).await.unwrap();
        }
        assert!(h.dp.list_sandboxes().await.unwrap().is_empty());
        let links = look(h.ns.path(), "ip", &["-o", "link"]);
        assert_eq!(
            links.lines().count(),
            2,
            "only lo and the underlay remain: {links}"
        );
        let fdb = look(h.ns.path(), "bridge", &["fdb", "show"]);
        assert!(!fdb.contains("02:42:0a:01"), "{fdb}");
        let neigh = look(h.ns.path(), "ip", &["neigh", "show"]);
        assert!(!neigh.contains("10.1.0."), "{neigh}");
    }
    let left: Vec<String> = w
        .guard
        .remaining()
        .into_iter()
        .filter(|n| n.starts_with("ovl-"))
        .collect();
    assert!(left.is_empty(), "sandbox namespaces left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_is_idempotent_and_peers_converge() {
    overlay_testkit::require_root("everything_is_idempotent_and_peers_converge");
    let w = World::two_hosts().await;
    let h = &w.hosts[0];
    let (n, vni) = net(3);
    let mut spec = SandboxSpec::new(n, vni, h.vtep);
    let first = h.dp.ensure_sandbox(&spec).await.unwrap();
    assert_eq!(h.dp.ensure_sandbox(&spec).await.unwrap(), first);
    let shown = look(&first.netns_path, "ip", &["-d", "link", "show", "vxlan0"]);
    for want in [
        format!("vxlan id {}", vni.get()).as_str(),
        "dstport 4789",
        "local 192.0.2.1",
        "nolearning",
        "proxy",
        "mtu 1450",
    ] {
        assert!(shown.contains(want), "{want:?} missing: {shown}");
    }
    let vx_line = shown.lines().find(|l| l.contains("vxlan id")).unwrap();
    assert!(!vx_line.contains("group"), "no multicast group: {vx_line}");
    // The vxlan's UDP socket lives in the host namespace, not in the sandbox.
    let sockets = in_ns(&h.ns, || {
        std::fs::read_to_string("/proc/thread-self/net/udp").unwrap()
    });
    assert!(
        sockets.contains(":12B5"),
        "no socket on 4789 in the host namespace: {sockets}"
    );

    // An explicit MTU and another port are applied to the existing sandbox.
    spec.mtu = Some(1400);
    spec.vxlan_port = 4790;
    let info = h.dp.ensure_sandbox(&spec).await.unwrap();
    assert_eq!(info.mtu, Some(1400));
    let sb = Netns::open_path(&info.netns_path).unwrap();
    let shown = look(sb.path(), "ip", &["-d", "link", "show", "vxlan0"]);
    assert!(
        shown.contains("dstport 4790") && shown.contains("mtu 1400"),
        "{shown}"
    );

    // Attach twice converges.
    let c = w.container("c");
    let mut a = AttachSpec::new(c.path(), "10.3.0.5/24".parse().unwrap());
    a.ipv6 = Some("fd00:3::5/64".parse().unwrap());
    let made = h.dp.attach(&n, &a).await.unwrap();
    let again = h.dp.attach(&n, &a).await.unwrap();
    assert!(made.created && !again.created);
    assert_eq!(made.host_ifname, again.host_ifname);
    let addrs = look(c.path(), "ip", &["addr", "show", "eth0"]);
    assert!(
        addrs.contains("10.3.0.5/24")
            && addrs.contains("fd00:3::5/64")
            && addrs.contains("mtu 1400"),
        "{addrs}"
    );
    assert!(look(sb.path(), "ip", &["link", "show", &made.host_ifname]).contains("master br0"));
    // Another network's interface under the same name is refused, not clobbered.
    let (other, other_vni) = net(4);
    h.dp.ensure_sandbox(&SandboxSpec::new(other, other_vni, h.vtep))
        .await
        .unwrap();
    let clash = h.dp.attach(&other, &a).await.unwrap_err();
    assert_eq!(clash.kind(), ErrorKind::AlreadyExists, "{clash}");
    // A container namespace that does not exist is a clear NotFound.
    let missing = AttachSpec::new(
        "/run/netns/overlay-no-such-container",
        "10.3.0.9/24".parse().unwrap(),
    );
    assert_eq!(
        h.dp.attach(&n, &missing).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );

    // Peers: twice is fine, a moved endpoint (new VTEP) and a changed MAC replace.
    let mut p = Peer {
        ip: "10.3.0.9".parse().unwrap(),
        mac: MacAddr::from_ipv4(v4("10.3.0.9")),
        vtep: w.hosts[1].vtep,
    };
    h.dp.add_peer(&n, &p).await.unwrap();
    h.dp.add_peer(&n, &p).await.unwrap();
    assert_eq!(h.dp.list_peers(&n).await.unwrap(), vec![p]);
    let old = p;
    p.vtep = "192.0.2.77".parse().unwrap();
    h.dp.add_peer(&n, &p).await.unwrap();
    assert_eq!(h.dp.list_peers(&n).await.unwrap(), vec![p]);
    // Removing the stale (pre-move) peer leaves the moved one alone.
    h.dp.remove_peer(&n, &old).await.unwrap();
    assert_eq!(h.dp.list_peers(&n).await.unwrap(), vec![p]);
    p.mac = MacAddr([0x02, 0x42, 1, 2, 3, 4]);
    h.dp.add_peer(&n, &p).await.unwrap();
    assert_eq!(h.dp.list_peers(&n).await.unwrap(), vec![p]);
    let fdb = look(sb.path(), "bridge", &["fdb", "show", "dev", "vxlan0"]);
    assert!(
        !fdb.contains("02:42:0a:03:00:09"),
        "old MAC's FDB entry kept: {fdb}"
    );
    // A restarted process (a new data plane, same host tag) finds the sandbox and its peers.
    let restarted = NetlinkDataplane::in_namespace(h.dp.tag(), &h.ns)
        .await
        .unwrap();
    assert_eq!(restarted.list_peers(&n).await.unwrap(), vec![p]);
    drop(restarted);
    // An IPv6 peer.
    let p6 = Peer {
        ip: "fd00:3::9".parse().unwrap(),
        mac: p.mac,
        vtep: p.vtep,
    };
    h.dp.add_peer(&n, &p6).await.unwrap();
    assert_eq!(h.dp.list_peers(&n).await.unwrap().len(), 2);
    h.dp.remove_peer(&n, &p6).await.unwrap();
    h.dp.remove_peer(&n, &p).await.unwrap();
    h.dp.remove_peer(&n, &p).await.unwrap();
    assert!(h.dp.list_peers(&n).await.unwrap().is_empty());
    let bad = Peer {
        ip: "0.0.0.0".parse().unwrap(),
        ..p
    };
    assert_eq!(
        h.dp.add_peer(&n, &bad).await.unwrap_err().kind(),
        ErrorKind::InvalidArgument
    );

    // Operations on a network without a sandbox: NotFound, removals succeed.
    let (none, _) = net(9);
    assert_eq!(
        h.dp.add_peer(&none, &p).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    h.dp.remove_peer(&none, &p).await.unwrap();
    h.dp.remove_sandbox(&none).await.unwrap();
    // A VTEP that is not on this host is refused before anything is made.
    let (bad_net, bad_vni) = net(10);
    let e =
        h.dp.ensure_sandbox(&SandboxSpec::new(
            bad_net,
            bad_vni,
            "198.51.100.1".parse().unwrap(),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(Netns::open_named(&h.dp.sandbox_netns_name(&bad_net)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensure_over_leftovers_of_a_crashed_run_succeeds() {
    overlay_testkit::require_root("ensure_over_leftovers_of_a_crashed_run_succeeds");
    let w = World::two_hosts().await;
    let h = &w.hosts[0];
    let (old, vni) = net(5);
    // A crashed run left the sandbox of an older network with the same VNI (the kernel then
    // refuses a second vxlan with that VNI: Docker's "file exists").
    h.dp.ensure_sandbox(&SandboxSpec::new(old, vni, h.vtep))
        .await
        .unwrap();
    let (new, _) = net(6);
    // It also half-built the new network's sandbox: a bridge that is down, no vxlan, and a
    // vxlan0 that is really a bridge.
    let half = Netns::create_named(&h.dp.sandbox_netns_name(&new))
        .unwrap()
        .0;
    let nl = support::netlink_in(&half);
    nl.handle
        .link()
        .add(rtnetlink::LinkBridge::new("br0").mtu(9000).build())
        .execute()
        .await
        .unwrap();
    nl.handle
        .link()
        .add(rtnetlink::LinkBridge::new("vxlan0").build())
        .execute()
        .await
        .unwrap();
    drop(nl);
    let info =
        h.dp.ensure_sandbox(&SandboxSpec::new(new, vni, h.vtep))
            .await
            .unwrap();
    assert_eq!((info.vni, info.mtu), (Some(vni), Some(1450)));
    let shown = look(half.path(), "ip", &["-d", "link", "show", "vxlan0"]);
    assert!(
        shown.contains(&format!("vxlan id {}", vni.get())) && shown.contains("master br0"),
        "{shown}"
    );
    assert!(look(half.path(), "ip", &["link", "show", "br0"]).contains("state UP"));
    let old_sb = Netns::open_named(&h.dp.sandbox_netns_name(&old)).unwrap();
    assert!(
        !look(old_sb.path(), "ip", &["link"]).contains("vxlan0"),
        "the stale vxlan should be gone"
    );

    // A foreign device holding a VNI in the host namespace is reported by name, not deleted.
    let nl = support::netlink_in(&h.ns);
    let foreign = rtnetlink::LinkVxlan::new("vx-foreign", 4242)
        .port(4789)
        .build();
    nl.handle.link().add(foreign).execute().await.unwrap();
    let (n, _) = net(7);
    let e =
        h.dp.ensure_sandbox(&SandboxSpec::new(n, Vni::new(4242).unwrap(), h.vtep))
            .await
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "{e}");
    assert!(
        e.to_string().contains("vx-foreign") && e.errno() == Some(libc::EEXIST),
        "{e}"
    );

    // A stale plain file where a sandbox namespace should be (a crash inside `ip netns add`)
    // is replaced by ensure and removed by remove.
    let (stale, stale_vni) = net(11);
    std::fs::write(
        overlay_core::dataplane::named_path(&h.dp.sandbox_netns_name(&stale)),
        b"",
    )
    .unwrap();
    h.dp.ensure_sandbox(&SandboxSpec::new(stale, stale_vni, h.vtep))
        .await
        .unwrap();
    h.dp.remove_sandbox(&stale).await.unwrap();
    std::fs::write(
        overlay_core::dataplane::named_path(&h.dp.sandbox_netns_name(&stale)),
        b"",
    )
    .unwrap();
    h.dp.remove_sandbox(&stale).await.unwrap();
    assert!(!overlay_core::dataplane::named_path(&h.dp.sandbox_netns_name(&stale)).exists());

    // The largest VNI works.
    let (big, _) = net(8);
    let info =
        h.dp.ensure_sandbox(&SandboxSpec::new(big, Vni::new(Vni::MAX).unwrap(), h.vtep))
            .await
            .unwrap();
    assert_eq!(info.vni, Some(Vni::new(16_777_215).unwrap()));

    // Teardown of everything, then nothing of this host tag is left.
    for net in [old, new, n, big] {
        h.dp.remove_sandbox(&net).await.unwrap();
    }
    assert!(h.dp.list_sandboxes().await.unwrap().is_empty());
}

/// The kernel reports every deletion in a sandbox, but only those made behind the dataplane's
/// back are damage: a detach or a peer's removal is not. Reports of one sandbox arrive in order,
/// so each own deletion is followed by a foreign one of the other kind, and the first report
/// must be the foreign one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_deletions_are_not_damage() {
    use overlay_core::dataplane::{Damage, Damaged};
    overlay_testkit::require_root("own_deletions_are_not_damage");
    let w = World::two_hosts().await;
    let h = &w.hosts[0];
    let (n, vni) = net(9);
    let info =
        h.dp.ensure_sandbox(&SandboxSpec::new(n, vni, h.vtep))
            .await
            .unwrap();
    let sandbox = Netns::open_path(&info.netns_path).unwrap();
    let (c1, c2) = (w.container("c1"), w.container("c2"));
    join(&w, 0, &n, &c1, "10.9.0.1").await;
    join(&w, 0, &n, &c2, "10.9.0.2").await;
    let peer = |i: u8| Peer {
        ip: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 100 + i)),
        mac: MacAddr([0x02, 0, 0, 0, 9, i]),
        vtep: w.hosts[1].vtep,
    };
    h.dp.add_peers(&n, &[peer(1), peer(2)]).await.unwrap();
    let mut reports = h.dp.damage().expect("the netlink dataplane reports damage");
    let mut first = async |what: &str| -> Damage {
        match tokio::time::timeout(Duration::from_secs(5), reports.recv()).await {
            Ok(Ok(d)) => d,
            other => panic!("no report after {what}: {other:?}"),
        }
    };

    h.dp.remove_peer(&n, &peer(1)).await.unwrap();
    look(c2.path(), "ip", &["link", "del", "eth0"]);
    let d = first("a peer removed, then a container's interface deleted").await;
    assert_eq!(
        d,
        Damage {
            network: n,
            what: Damaged::Links
        },
        "the removal was reported"
    );

    h.dp.detach(&n, c1.path(), "eth0").await.unwrap();
    let mac = peer(2).mac.to_string();
    let out = look(
        sandbox.path(),
        "bridge",
        &["fdb", "del", &mac, "dev", "vxlan0", "dst", "192.0.2.2"],
    );
    assert!(out.trim().is_empty(), "bridge fdb del: {out}");
    let d = first("a detach, then a peer's FDB entry deleted").await;
    assert_eq!(
        d,
        Damage {
            network: n,
            what: Damaged::Peers
        },
        "the detach was reported"
    );
}

/// The gateway bridge of host A, with host B's namespace as the outside world (the underlay
/// LAN): a container reaches B masqueraded as A's underlay address, B reaches a container's
/// published port on A's address, two containers cannot talk over the gateway bridge, and
/// removing the gateway leaves no table, bridge or port behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_masquerades_publishes_and_isolates() {
    use overlay_core::dataplane::{GatewaySpec, PublishedPort};
    use overlay_core::model::PortProto;
    use overlay_testkit::{TcpGreeter, fetch};
    overlay_testkit::require_root("gateway_masquerades_publishes_and_isolates");
    let w = World::two_hosts().await;
    let (a, b) = (&w.hosts[0], &w.hosts[1]);
    let spec = GatewaySpec::new("172.18.0.0/16".parse().unwrap());
    a.dp.ensure_gateway(&spec).await.unwrap();
    a.dp.ensure_gateway(&spec).await.unwrap();
    let (c1, c2) = (w.container("g1"), w.container("g2"));
    for (c, ip) in [(&c1, "172.18.0.2/16"), (&c2, "172.18.0.3/16")] {
        let mut at = AttachSpec::new(c.path(), ip.parse().unwrap());
        at.ifname = "eth1".into();
        let made = a.dp.attach_gateway(&spec, &at).await.unwrap();
        assert_eq!(made.mtu, 1500);
        assert!(
            !a.dp.attach_gateway(&spec, &at).await.unwrap().created,
            "idempotent"
        );
    }
    let ports = [PublishedPort {
        proto: PortProto::Tcp,
        host_ip: None,
        host_port: 2181,
        container_ip: v4("172.18.0.2"),
        container_port: 2181,
    }];
    a.dp.publish(&spec, &ports).await.unwrap();
    a.dp.publish(&spec, &ports).await.unwrap();

    let limit = Duration::from_secs(2);
    let outside = TcpGreeter::answering(b.ns.path(), "192.0.2.2:8080".parse().unwrap(), |peer| {
        peer.ip().to_string()
    })
    .unwrap();
    let seen = fetch(c1.path(), ([192, 0, 2, 2], outside.port()).into(), limit);
    assert_eq!(seen.as_deref(), Some("192.0.2.1"), "masqueraded as host A");
    let zk = TcpGreeter::start(c1.path(), "0.0.0.0:2181".parse().unwrap(), "imok").unwrap();
    let published = fetch(b.ns.path(), ([192, 0, 2, 1], zk.port()).into(), limit);
    assert_eq!(
        published.as_deref(),
        Some("imok"),
        "host A's 2181 reaches g1"
    );
    let neighbour = TcpGreeter::start(c2.path(), "0.0.0.0:7000".parse().unwrap(), "g2").unwrap();
    let across = fetch(c1.path(), ([172, 18, 0, 3], neighbour.port()).into(), limit);
    assert_eq!(
        across, None,
        "containers cannot talk over the gateway bridge"
    );
    let routes = look(c1.path(), "ip", &["route", "show", "default"]);
    assert!(routes.contains("via 172.18.0.1 dev eth1"), "{routes}");

    let table = w.hosts[0].dp.firewall_table();
    let listed = look(a.ns.path(), "nft", &["list", "table", "ip", &table]);
    assert!(
        listed.contains("masquerade") && listed.contains("dnat to 172.18.0.2:2181"),
        "{listed}"
    );
    for c in [&c1, &c2] {
        a.dp.detach_gateway(&spec, c.path(), "eth1").await.unwrap();
        a.dp.detach_gateway(&spec, c.path(), "eth1").await.unwrap();
    }
    a.dp.remove_gateway(&spec).await.unwrap();
    a.dp.remove_gateway(&spec).await.unwrap();
    let links = look(a.ns.path(), "ip", &["-o", "link", "show"]);
    assert!(
        !links.contains("ovl_gwbridge") && !links.contains("ve-"),
        "{links}"
    );
    let tables = look(a.ns.path(), "nft", &["list", "tables"]);
    assert!(!tables.contains(&table), "{tables}");
    assert_eq!(
        fetch(b.ns.path(), ([192, 0, 2, 1], 2181).into(), limit),
        None,
        "nothing published after removal"
    );
}
