//! The embedded resolver with real queries from containers' namespaces: names across hosts,
//! aliases, PTR, AAAA of an IPv4-only name, forwarding to an upstream on the underlay, an
//! internal network that never forwards, a container that sees only its own networks' names,
//! a removed container that stops resolving, and no query lost while names change.
//!
//! Needs root.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use overlay::dataplane::Netns;
use overlay::dataplane::lab::Lab;
use overlay::{ContainerSpec, Controller, ControllerOptions, NetnsRef, NetworkOptions};
use overlay_testkit::{DnsAnswer, DnsUpstream, dns_query, reverse_name};

/// Bounds that only keep a broken build from hanging.
const LIMIT: Duration = Duration::from_secs(15);
const ASK: Duration = Duration::from_secs(1);

fn container(name: &str, ns: &Netns, aliases: &[&str], resolv: Option<PathBuf>) -> ContainerSpec {
    let mut spec = ContainerSpec::new(name, name, NetnsRef::Path(ns.path().to_path_buf()))
        .aliases(aliases.iter().copied());
    spec.resolv_conf = resolv;
    spec
}

/// The IPv4 address a connect gave.
fn ipv4_of(made: &overlay::Attachment) -> IpAddr {
    made.ipv4().expect("an IPv4 address").addr().into()
}

/// Asks until the answer satisfies `ok` (names travel through the store to other hosts).
async fn until(
    what: &str,
    ns: &Netns,
    server: SocketAddr,
    name: &str,
    qtype: &str,
    ok: impl Fn(&DnsAnswer) -> bool,
) -> DnsAnswer {
    let start = Instant::now();
    loop {
        if let Some(a) = dns_query(ns.path(), server, name, qtype, false, ASK)
            && ok(&a)
        {
            return a;
        }
        assert!(start.elapsed() < LIMIT, "{what}: not within {LIMIT:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a UDP socket is bound to `addr` in the namespace named `netns` (assertions only).
fn listening_in(netns: &str, addr: &str) -> bool {
    std::process::Command::new("ip")
        .args(["netns", "exec", netns, "ss", "-H", "-lun"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(addr))
}

fn ask(ns: &Netns, server: SocketAddr, name: &str, qtype: &str) -> DnsAnswer {
    dns_query(ns.path(), server, name, qtype, false, ASK)
        .unwrap_or_else(|| panic!("{name} {qtype}: no answer from {server}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn containers_resolve_names_of_their_networks() {
    overlay_testkit::require_root("containers_resolve_names_of_their_networks");
    let lab = Lab::new(&format!("d{:x}", std::process::id() & 0xffff)).expect("lab");
    let (h1, h2) = lab.two_hosts("host1", "host2").await.unwrap();
    // The hosts' upstream resolver, on the underlay.
    let upstream = DnsUpstream::start(
        h2.path(),
        "198.51.100.2:5353".parse().unwrap(),
        &[("example.test", "192.0.2.7".parse().unwrap())],
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let opts = |name: &str, ns: &Netns, vtep: &str| {
        ControllerOptions::new(format!("file://{}/store.db", dir.path().display()))
            .advertise(vtep)
            .host_id(lab.host_id(name))
            .host_netns(ns.path())
            .state_dir(dir.path().join(name))
            .dns_upstreams([upstream.addr()])
            // A sweep (which checks the sandboxes) every half second.
            .reclaim_grace(Duration::from_secs(1))
    };
    let ctl1 = Controller::open(opts("host1", &h1, "198.51.100.1"))
        .await
        .unwrap();
    let ctl2 = Controller::open(opts("host2", &h2, "198.51.100.2"))
        .await
        .unwrap();
    ctl1.create_network("my-net", &NetworkOptions::default())
        .await
        .unwrap();
    let internal = NetworkOptions::default().internal(true);
    ctl1.create_network("back", &internal).await.unwrap();
    let front_dns: SocketAddr = "10.0.0.1:53".parse().unwrap();
    let back_dns: SocketAddr = "10.0.1.1:53".parse().unwrap();

    // web (host1) joins both networks, cache (host2) my-net only, db (host1) back only.
    let web = lab.namespace("web").await.unwrap();
    let resolv = dir.path().join("web/resolv.conf");
    let web_ip = ipv4_of(
        &ctl1
            .connect("my-net", &container("web", &web, &[], Some(resolv.clone())))
            .await
            .unwrap(),
    );
    ctl1.connect("back", &container("web", &web, &[], None))
        .await
        .unwrap();
    let cache = lab.namespace("cache").await.unwrap();
    let cache_ip = ipv4_of(
        &ctl2
            .connect("my-net", &container("cache", &cache, &["kv"], None))
            .await
            .unwrap(),
    );
    let db = lab.namespace("db").await.unwrap();
    let db_ip = ipv4_of(
        &ctl1
            .connect("back", &container("db", &db, &[], None))
            .await
            .unwrap(),
    );

    // Names across hosts, plain, with the network, aliases; over UDP and TCP.
    let found = |want: IpAddr| move |a: &DnsAnswer| a.code == "NoError" && a.addresses == [want];
    // Waits until web's resolver answers cache's address for "cache".
    let web_finds_cache =
        async |what: &str| until(what, &web, front_dns, "cache", "A", found(cache_ip)).await;
    let start = Instant::now();
    web_finds_cache("cache from web").await;
    eprintln!(
        "a remote name resolved {:?} after its connect returned",
        start.elapsed()
    );
    for name in ["cache.my-net", "kv", "KV.My-Net"] {
        assert_eq!(
            ask(&web, front_dns, name, "A").addresses,
            [cache_ip],
            "{name}"
        );
    }
    let tcp = dns_query(web.path(), front_dns, "cache.my-net", "A", true, ASK).expect("TCP");
    assert_eq!(tcp.addresses, [cache_ip]);
    assert_eq!(
        ask(&cache, front_dns, "web", "A").addresses,
        [web_ip],
        "host2's resolver answers for its own containers"
    );
    // AAAA of an IPv4-only name: the name exists, it has no such record (aardvark-dns#679).
    let aaaa = ask(&web, front_dns, "cache", "AAAA");
    assert_eq!((aaaa.code.as_str(), aaaa.addresses.len()), ("NoError", 0));
    let ptr = ask(&web, front_dns, &reverse_name(cache_ip), "PTR");
    assert_eq!(ptr.names, ["cache.my-net"]);

    // Only the networks a container joined: web sees db, cache does not.
    assert_eq!(ask(&web, front_dns, "db.back", "A").addresses, [db_ip]);
    assert_eq!(ask(&web, back_dns, "db", "A").addresses, [db_ip]);
    for name in ["db", "db.back"] {
        let a = ask(&cache, front_dns, name, "A");
        assert!(
            a.addresses.is_empty() && a.code == "NXDomain",
            "{name}: {a:?}"
        );
    }
    assert_eq!(ask(&web, front_dns, "gone.my-net", "A").code, "NXDomain");

    // Other names go upstream, except from an internal network.
    let before = upstream.queries();
    assert_eq!(
        ask(&web, front_dns, "example.test", "A").addresses,
        ["192.0.2.7".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(upstream.queries(), before + 1);
    let refused = ask(&db, back_dns, "example.test", "A");
    assert_eq!(refused.code, "Refused", "{refused:?}");
    assert_eq!(
        upstream.queries(),
        before + 1,
        "the internal network forwarded"
    );

    let text = std::fs::read_to_string(&resolv).unwrap();
    for line in ["nameserver 10.0.0.1", "nameserver 10.0.1.1"] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from:\n{text}"
        );
    }
    assert!(
        text.lines()
            .any(|l| l == "search my-net back" || l == "search back my-net"),
        "{text}"
    );

    // The resolver's address removed from the sandbox, then the whole sandbox namespace
    // deleted, behind the agent's back: the sweep puts the address back, and starts the
    // resolver again in the rebuilt sandbox.
    let net_id = ctl1.inspect("my-net").await.unwrap().id;
    let sandbox = format!(
        "ovl-{}-{}",
        lab.host_id("host1").replace('-', "_"),
        &net_id[..12]
    );
    for (args, what) in [
        (
            vec!["-n", sandbox.as_str(), "addr", "flush", "dev", "br0"],
            "address",
        ),
        (vec!["netns", "del", sandbox.as_str()], "sandbox"),
    ] {
        let out = std::process::Command::new("ip")
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let start = Instant::now();
        // Listening in the sandbox that has the name now (a new namespace after the deletion:
        // the old one lives on while anything holds it, so its answers would prove nothing).
        while !listening_in(&sandbox, "10.0.0.1:53") {
            assert!(
                start.elapsed() < LIMIT,
                "no resolver in the rebuilt sandbox"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        web_finds_cache(&format!("the resolver after its {what} went")).await;
        eprintln!(
            "resolver healed {:?} after its {what} was removed",
            start.elapsed()
        );
    }

    // While names change, every query is answered: the directory is swapped, never a socket.
    let asker = {
        let path = web.path().to_path_buf();
        std::thread::spawn(move || {
            (0..300)
                .filter(|_| dns_query(&path, front_dns, "web", "A", false, ASK).is_none())
                .count()
        })
    };
    for i in 0..5 {
        let name = format!("churn{i}");
        let ns = lab.namespace(&name).await.unwrap();
        ctl2.connect("my-net", &container(&name, &ns, &[], None))
            .await
            .unwrap();
        ctl2.disconnect("my-net", &name).await.unwrap();
    }
    assert_eq!(
        asker.join().unwrap(),
        0,
        "queries were lost while names changed"
    );

    // A removed container stops resolving as soon as its host's disconnect reaches this one.
    ctl2.disconnect("my-net", "cache").await.unwrap();
    let start = Instant::now();
    until("cache is gone", &web, front_dns, "cache.my-net", "A", |a| {
        a.code == "NXDomain"
    })
    .await;
    eprintln!(
        "a removed name stopped resolving {:?} after the disconnect",
        start.elapsed()
    );

    for (net, c) in [("my-net", "web"), ("back", "web"), ("back", "db")] {
        ctl1.disconnect(net, c).await.unwrap();
    }
    ctl2.close().await.unwrap();
    ctl1.close().await.unwrap();
}
