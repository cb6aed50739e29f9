//! The gateway table against the real kernel, with real traffic: a "WAN" namespace, a host
//! namespace holding the gateway bridge and an uplink, and a container on the bridge. Needs root;
//! the namespaces go when the test ends, even when it fails.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::*;
use crate::dataplane::conn::NlConn;
use crate::dataplane::link::{VethParams, add_address, bridge_msg, get_link, set_link, veth_msg};
use crate::model::{MacAddr, PortProto};

/// Deletes the namespaces named with its prefix when dropped.
struct Guard(String);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(names) = Netns::list_named(&self.0) {
            for n in names {
                let _ = Netns::delete_named(&n);
            }
        }
    }
}

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

/// A bridge named `bridge` in `ns` with `addr`, and a veth from it to `peer_ns` whose end
/// there is `peer_name` with `peer_addr` (and, when given, a default route via `gateway`).
async fn wire(
    ns: &Netns,
    bridge: &str,
    addr: &str,
    peer_ns: &Netns,
    peer_name: &str,
    peer_addr: &str,
    gateway: Option<Ipv4Addr>,
) {
    let conn = NlConn::open(Some(ns), "host").await.unwrap();
    conn.add_link(bridge_msg(
        bridge,
        1500,
        crate::model::MacAddr::from_hash(bridge.as_bytes()),
    ))
    .await
    .unwrap();
    let br = get_link(&conn, bridge).await.unwrap().unwrap();
    add_address(&conn, br.index, addr.parse().unwrap())
        .await
        .unwrap();
    let params = VethParams {
        host_name: format!("{bridge}p"),
        bridge: br.index,
        peer_name: peer_name.to_string(),
        peer_ns: peer_ns.raw_fd(),
        peer_mac: MacAddr([0x02, 0, 0, 0, 0x18, peer_addr.len() as u8]),
        mtu: 1500,
    };
    conn.add_link(veth_msg(&params)).await.unwrap();
    let peer = NlConn::open(Some(peer_ns), "peer").await.unwrap();
    let link = get_link(&peer, peer_name).await.unwrap().unwrap();
    let up = crate::dataplane::link::LinkChange {
        up: true,
        ..Default::default()
    };
    set_link(&peer, link.index, &up).await.unwrap();
    set_link(&peer, 1, &up).await.unwrap();
    add_address(&peer, link.index, peer_addr.parse().unwrap())
        .await
        .unwrap();
    if let Some(gw) = gateway {
        let route = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new()
            .gateway(gw)
            .build();
        peer.handle().route().add(route).execute().await.unwrap();
    }
}

/// Runs `f` on a thread inside `ns`.
fn inside<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.try_clone().unwrap();
    run_on_thread(move || {
        ns.enter()?;
        Ok(f())
    })
    .unwrap()
}

/// A server in `ns` on `addr` that answers each connection with `reply(peer address)`.
fn serve(ns: &Netns, addr: SocketAddr, reply: fn(SocketAddr) -> String) {
    let ns = ns.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        ns.enter().unwrap();
        let l = TcpListener::bind(addr).unwrap();
        tx.send(()).unwrap();
        for s in l.incoming().flatten() {
            let peer = s.peer_addr().unwrap();
            let _ = (&s).write_all(reply(peer).as_bytes());
        }
    });
    rx.recv().unwrap();
}

/// What `addr` says when connected to from `ns`; `None` when it cannot be reached.
fn ask(ns: &Netns, addr: SocketAddr) -> Option<String> {
    inside(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok().map(|_| text)
    })
}

fn nft(ns: &Netns, args: &[&str]) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec"])
        .arg(ns.path().file_name().unwrap())
        .arg("nft")
        .args(args)
        .output()
        .expect("run nft");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masquerade_out_dnat_in_and_nothing_else_touched() {
    overlay_testkit::require_root("masquerade_out_dnat_in_and_nothing_else_touched");
    let prefix = format!("ovlfw{}-", std::process::id());
    let _guard = Guard(prefix.clone());
    let make = |n: &str| Netns::create_named(&format!("{prefix}{n}")).unwrap().0;
    let (wan, host, ctr) = (make("wan"), make("host"), make("ctr"));
    wire(
        &host,
        "up0",
        "192.0.2.1/24",
        &wan,
        "eth0",
        "192.0.2.254/24",
        None,
    )
    .await;
    wire(
        &host,
        "ovgw0",
        "172.18.0.1/16",
        &ctr,
        "eth1",
        "172.18.0.2/16",
        Some(v4("172.18.0.1")),
    )
    .await;
    inside(&host, || {
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap()
    });
    // Someone else's table, which must survive everything.
    let theirs = nft(&host, &["add", "table", "ip", "theirs"]);
    assert!(theirs.trim().is_empty(), "{theirs}");

    let rules = GatewayRules {
        table: "overlay-test".into(),
        bridge: "ovgw0".into(),
        pool: "172.18.0.0/16".parse().unwrap(),
        ports: vec![PublishedPort {
            proto: PortProto::Tcp,
            host_ip: None,
            host_port: 2181,
            container_ip: v4("172.18.0.2"),
            container_port: 2181,
        }],
    };
    let wan_server = SocketAddr::new(IpAddr::V4(v4("192.0.2.254")), 8080);
    serve(&wan, wan_server, |peer| peer.ip().to_string());
    serve(&ctr, "0.0.0.0:2181".parse().unwrap(), |_| {
        "zookeeper1".into()
    });
    let published = SocketAddr::new(IpAddr::V4(v4("192.0.2.1")), 2181);
    assert_eq!(ask(&ctr, wan_server), None, "no route out before the rules");

    apply(Some(&host), &rules).await.unwrap();
    assert_eq!(
        ask(&ctr, wan_server).as_deref(),
        Some("192.0.2.1"),
        "the WAN sees the host's uplink address"
    );
    assert_eq!(ask(&wan, published).as_deref(), Some("zookeeper1"));

    // Again, and over a leftover rule: the table holds exactly what is asked.
    let stray = nft(
        &host,
        &[
            "add",
            "rule",
            "ip",
            "overlay-test",
            "postrouting",
            "counter",
        ],
    );
    assert!(stray.trim().is_empty(), "{stray}");
    apply(Some(&host), &rules).await.unwrap();
    let listed = nft(&host, &["list", "table", "ip", "overlay-test"]);
    assert_eq!(listed.matches("masquerade").count(), 1, "{listed}");
    assert_eq!(
        listed.matches("dnat to 172.18.0.2:2181").count(),
        2,
        "{listed}"
    );
    assert!(!listed.contains("counter"), "{listed}");
    assert!(
        listed.contains("oifname != \"ovgw0\""),
        "traffic staying on the bridge is not masqueraded: {listed}"
    );

    remove(Some(&host), "overlay-test").await.unwrap();
    remove(Some(&host), "overlay-test").await.unwrap();
    let tables = nft(&host, &["list", "tables"]);
    assert!(!tables.contains("overlay-test"), "{tables}");
    assert!(tables.contains("table ip theirs"), "{tables}");
    assert_eq!(ask(&wan, published), None, "no DNAT after removal");
}
