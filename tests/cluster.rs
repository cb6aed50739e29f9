//! The seed's scenario across processes, on every store backend: one `overlay-host` process per
//! simulated host, containers as namespaces, real kernel state and real TCP.
//!
//! Needs root. Test servers (etcd, ZooKeeper) are started by `overlay-testkit`.

mod support;

use std::net::IpAddr;
use std::time::Duration;

use overlay_testkit::{ip_of, lacks, lookup, wait_until};
use serde_json::json;
use support::{Backend, Cluster, Running, fetch, serve};

/// How long convergence may take before a test fails. The benchmark measures the real figure
/// (milliseconds); this bound only keeps a broken build from hanging.
const CONVERGE: Duration = Duration::from_secs(10);

/// The walkthrough: network created on host 1 is listed with the same id on host 2; four
/// containers on two hosts reach each other by name and name.my-net; a removal reaches the
/// other host's hosts file and kernel.
async fn walkthrough(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    let net = c.hosts[0]
        .ok(json!({"op": "create_network", "name": "my-net"}))
        .await;
    let id = net["Id"].as_str().expect("Id").to_string();
    for h in 0..2 {
        let ls = c.hosts[h].ok(json!({"op": "networks"})).await;
        let ids: Vec<&str> = ls
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["ID"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [id.as_str()],
            "host{} lists the network with the same id",
            h + 1
        );
    }
    let mut containers = Vec::new();
    for (name, h) in [
        ("zookeeper1", 0),
        ("zookeeper3", 0),
        ("zookeeper2", 1),
        ("zookeeper4", 1),
    ] {
        containers.push(c.run(h, name, json!({})).await);
    }
    let mut servers = Vec::new();
    for r in &containers {
        servers.push(serve(&r.ns, 2181, "imok"));
    }
    for r in &containers {
        let (name, ns, hosts) = (&r.name, &r.ns, &r.hosts_file);
        for other in containers.iter().map(|o| &o.name).filter(|o| *o != name) {
            let full = format!("{other}.my-net");
            wait_until(&format!("{name} resolves {full}"), CONVERGE, async || {
                lookup(hosts, &full).is_some() && lookup(hosts, other).is_some()
            })
            .await;
            for n in [other.to_string(), full] {
                let ip = lookup(hosts, &n).unwrap();
                assert_eq!(
                    fetch(ns, ip, 2181).as_deref(),
                    Some("imok"),
                    "{name} -> {n} ({ip})"
                );
            }
        }
    }
    let doc = c.hosts[1]
        .ok(json!({"op": "inspect", "network": "my-net"}))
        .await;
    assert_eq!(
        doc["Containers"].as_object().unwrap().len(),
        4,
        "inspect on host2 sees all four"
    );
    assert_eq!(doc["Scope"], "global");
    assert_eq!(
        doc["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        net["Options"]["com.docker.network.driver.overlay.vxlanid_list"]
    );

    // Removal of zookeeper3 (host1) reaches host2's hosts files and kernel.
    let zk3 = containers.remove(1);
    let zk3_ip = zk3.ip();
    assert!(
        c.hosts[1].peers(&id).await.iter().any(|p| p.ip == zk3_ip),
        "host2 programs zookeeper3"
    );
    c.hosts[0]
        .ok(json!({"op": "disconnect", "network": "my-net", "container_id": zk3.id}))
        .await;
    let zk2_hosts = containers[1].hosts_file.clone();
    let took = wait_until("zookeeper3's removal reaches host2", CONVERGE, async || {
        lacks(&zk2_hosts, "zookeeper3")
            && !c.hosts[1].peers(&id).await.iter().any(|p| p.ip == zk3_ip)
    })
    .await;
    eprintln!("{test}: removal reached host2's hosts file and FDB in {took:?}");
    drop(servers);
    for r in &containers {
        c.hosts[r.host]
            .ok(json!({"op": "disconnect", "network": "my-net", "container_id": r.id}))
            .await;
    }
    let e = c.hosts[0]
        .call(json!({"op": "inspect", "network": "nope"}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, "not found");
    c.hosts[1]
        .ok(json!({"op": "remove_network", "network": "my-net"}))
        .await;
    c.stop().await;
}

/// A host agent killed with SIGKILL is forgotten by the other host: its peers go within the
/// host TTL, and its addresses come back to the pool after the reclaim grace.
async fn dead_host_forgotten(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    let id = c.create_my_net().await;
    let Running { ns: alpha, .. } = c.run(0, "alpha", json!({})).await;
    let Running { endpoint: ep, .. } = c.run(1, "beta", json!({})).await;
    let beta_ip = ip_of(&ep);
    wait_until("host1 programs beta", CONVERGE, async || {
        c.hosts[0].peers(&id).await.iter().any(|p| p.ip == beta_ip)
    })
    .await;
    // host1's resolver answers for beta until its host is forgotten.
    let resolver = "10.0.0.1:53".parse().unwrap();
    let beta = |a: &overlay_testkit::DnsAnswer| a.addresses == [beta_ip];
    let ask = || {
        overlay_testkit::dns_query(
            alpha.path(),
            resolver,
            "beta.my-net",
            "A",
            false,
            Duration::from_secs(1),
        )
    };
    assert!(ask().is_some_and(|a| beta(&a)), "{:?}", ask());
    c.hosts[1].kill().await;
    let ttl = Duration::from_millis(c.host_ttl_ms);
    let took = wait_until(
        "host1 forgets host2's peers",
        ttl * 3 + Duration::from_secs(2),
        async || !c.hosts[0].peers(&id).await.iter().any(|p| p.ip == beta_ip),
    )
    .await;
    eprintln!("{test}: peers of the killed host removed {took:?} after SIGKILL (TTL {ttl:?})");
    wait_until("beta stops resolving", CONVERGE, async || {
        ask().is_some_and(|a| a.code == "NXDomain")
    })
    .await;
    let grace = Duration::from_millis(c.reclaim_grace_ms);
    wait_until(
        "host2's endpoint is reclaimed",
        grace * 3 + Duration::from_secs(5),
        async || {
            let doc = c.hosts[0]
                .ok(json!({"op": "inspect", "network": "my-net"}))
                .await;
            doc["Containers"].as_object().unwrap().len() == 1
        },
    )
    .await;
    // The address is free again: a static request for it succeeds.
    let Running {
        endpoint: again, ..
    } = c
        .run(0, "gamma", json!({"ipv4": beta_ip.to_string()}))
        .await;
    assert_eq!(ip_of(&again), beta_ip);
    c.hosts[0].stop().await;
}

/// A sticky container restarted gets its old address back; others do not take it meanwhile.
async fn sticky_restart(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    c.create_my_net().await;
    let Running { id: cid, .. } = c.run(0, "db", json!({"sticky": true})).await;
    let first = ip_of(
        &c.hosts[0]
            .ok(json!({"op": "inspect", "network": "my-net"}))
            .await["Containers"][&cid],
    );
    c.hosts[0]
        .ok(json!({"op": "disconnect", "network": "my-net", "container_id": cid}))
        .await;
    // Meanwhile nobody gets it: not the containers host 1 connects next (its IPAM block holds
    // the address), and not a container of either host asking for it by address.
    for i in 0..3 {
        let Running { endpoint: ep, .. } = c.run(0, &format!("web{i}"), json!({})).await;
        assert_ne!(
            ip_of(&ep),
            first,
            "a reserved address went to another container"
        );
    }
    for h in 0..2 {
        let (ns, hosts) = c.container(&format!("thief{h}")).await;
        let e = c.hosts[h]
            .call(json!({"op": "connect", "network": "my-net", "container": {
                "id": format!("thief{h}"), "name": format!("thief{h}"),
                "netns": {"path": ns.path()}, "hosts_file": hosts,
                "ipv4": first.to_string()}}))
            .await
            .expect_err("a static request for a reserved address is refused");
        assert!(
            e.message.contains("reserved") && e.message.contains("db"),
            "host {h}: {}",
            e.message
        );
    }
    let (ns, hosts) = c.container("db2").await;
    let again = c.hosts[1]
        .ok(json!({"op": "connect", "network": "my-net", "container": {
            "id": "db-restarted", "name": "db", "netns": {"path": ns.path()},
            "hosts_file": hosts, "sticky": true}}))
        .await;
    assert_eq!(
        ip_of(&again),
        first,
        "the restarted sticky container (now on host2) got its address back"
    );
    c.stop().await;
}

/// Two hosts racing to create one name: exactly one network, one clear AlreadyExists.
async fn create_race(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    for round in 0..5 {
        let name = format!("race{round}");
        let req = json!({"op": "create_network", "name": name});
        let (h1, h2) = c.hosts.split_at_mut(1);
        let (a, b) = tokio::join!(h1[0].call(req.clone()), h2[0].call(req.clone()));
        let oks = [&a, &b].iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            oks, 1,
            "round {round}: exactly one create wins: {a:?} {b:?}"
        );
        let err = a.err().or(b.err()).unwrap();
        assert_eq!(err.kind, "already exists", "{}", err.message);
        assert!(err.message.contains(&name), "{}", err.message);
    }
    let ls = c.hosts[1].ok(json!({"op": "networks"})).await;
    assert_eq!(ls.as_array().unwrap().len(), 5);
    c.stop().await;
}

/// The store server restarted mid-run. Asserted: existing traffic flows while the store is
/// down (every one of 5 fetches, 100 ms apart, in the outage's first half second, well inside
/// the hosts' TTL); a connect meanwhile fails with Unavailable or Timeout; after the restart
/// connects work again, and traffic flows again within the convergence bound (an outage longer
/// than the TTL may expire the hosts' sessions, and peers are dropped until they are back).
async fn store_restart(test: &str, backend: Backend) {
    let mut c = Cluster::with_own_server(test, backend).await;
    c.create_my_net().await;
    let pair = c.run_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let ip_b = b.ip();
    wait_until("a reaches b", CONVERGE, async || {
        lookup(&a.hosts_file, "b").is_some() && fetch(&a.ns, ip_b, 2181).as_deref() == Some("imok")
    })
    .await;
    c.store.kill();
    for _ in 0..5 {
        assert_eq!(
            fetch(&a.ns, ip_b, 2181).as_deref(),
            Some("imok"),
            "traffic while the store is down"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ns_c, hosts_c) = c.container("c").await;
    let req = json!({"op": "connect", "network": "my-net", "container": {
        "id": "c", "name": "c", "netns": {"path": ns_c.path()}, "hosts_file": hosts_c}});
    let e = c.hosts[0].call(req.clone()).await.unwrap_err();
    assert!(
        e.kind == "unavailable" || e.kind == "timeout",
        "connect while the store is down: {e:?}"
    );
    c.store.restart();
    c.hosts[0]
        .call_until_ok(&req, Duration::from_secs(20))
        .await
        .expect("connect after the store came back");
    // An outage longer than the hosts' TTL (2 s here) may expire their sessions, and the other
    // host then drops their peers until the records are back: traffic resumes, bounded.
    wait_until("traffic after the restart", CONVERGE, async || {
        fetch(&a.ns, ip_b, 2181).as_deref() == Some("imok")
    })
    .await;
    wait_until("b's host learns c", CONVERGE, async || {
        lookup(&a.hosts_file, "c").is_some()
    })
    .await;
    c.stop().await;
}

/// Quorum lost (2 of the store's 3 members killed). Asserted: traffic between existing
/// containers flows throughout the first second without a quorum (10 fetches, 100 ms apart);
/// a connect fails with Unavailable or Timeout naming the store; once the members
/// are back, the same agents (never restarted) connect again and the other host learns the
/// new container: kernel peer, hosts file and traffic.
async fn quorum_lost(test: &str, backend: Backend) {
    let mut c = Cluster::on_store_cluster(test, backend).await;
    c.create_my_net().await;
    let pair = c.run_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let ip_b = b.ip();
    wait_until("a reaches b", CONVERGE, async || {
        fetch(&a.ns, ip_b, 2181).as_deref() == Some("imok")
    })
    .await;
    let leader = c.store.leader();
    let down = [leader, (leader + 1) % 3];
    for m in down {
        c.store.kill_member(m);
    }
    for _ in 0..10 {
        assert_eq!(
            fetch(&a.ns, ip_b, 2181).as_deref(),
            Some("imok"),
            "traffic without a store quorum"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (ns_c, hosts_c) = c.container("c").await;
    let _server_c = serve(&ns_c, 2181, "c here");
    let req = json!({"op": "connect", "network": "my-net", "container": {
        "id": "c", "name": "c", "netns": {"path": ns_c.path()}, "hosts_file": hosts_c}});
    let e = c.hosts[0].call(req.clone()).await.unwrap_err();
    assert!(
        e.kind == "unavailable" || e.kind == "timeout",
        "connect without a store quorum: {e:?}"
    );
    let store_name = match backend {
        Backend::Etcd => "etcd",
        _ => "ZooKeeper",
    };
    assert!(
        e.message.contains(store_name),
        "the error names the store: {e:?}"
    );
    for m in down {
        c.store.restart_member(m);
    }
    let back = std::time::Instant::now();
    let ep_c = c.hosts[0]
        .call_until_ok(&req, Duration::from_secs(30))
        .await
        .expect("connect after the quorum came back");
    let connected_after = back.elapsed();
    let ip_c = ip_of(&ep_c);
    // Each host's client comes back on its own reconnect backoff after the quorum loss: host
    // 2 gets the bound host 1's connect had.
    let learning = std::time::Instant::now();
    wait_until("host 2 learns c", Duration::from_secs(30), async || {
        lookup(&b.hosts_file, "c") == Some(ip_c)
            && fetch(&b.ns, ip_c, 2181).as_deref() == Some("c here")
    })
    .await;
    eprintln!(
        "{test}: host 2 learned c {:?} after the connect",
        learning.elapsed()
    );
    wait_until("a still reaches b", CONVERGE, async || {
        fetch(&a.ns, ip_b, 2181).as_deref() == Some("imok")
    })
    .await;
    eprintln!("{test}: a connect succeeded {connected_after:?} after the members restarted");
    c.stop().await;
}

/// The store's leader killed: no host is taken for dead (the other host keeps its peer in
/// the kernel throughout, and traffic flows), and no address of a live host is handed out
/// again, over three host TTLs.
async fn leader_lost(test: &str, backend: Backend) {
    let mut c = Cluster::on_store_cluster(test, backend).await;
    let id = c.create_my_net().await;
    let pair = c.run_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let (ip_a, ip_b) = (a.ip(), b.ip());
    wait_until("a reaches b", CONVERGE, async || {
        fetch(&a.ns, ip_b, 2181).as_deref() == Some("imok")
    })
    .await;
    let has_a = async |c: &Cluster| {
        c.hosts[1]
            .peers(&id)
            .await
            .iter()
            .any(|p| p.ip == ip_a && p.vtep.to_string() == "198.51.100.1")
    };
    assert!(has_a(&c).await, "host 2 holds a's peer");
    let leader = c.store.leader();
    c.store.kill_member(leader);
    let t0 = std::time::Instant::now();
    let span = Duration::from_millis(3 * c.host_ttl_ms);
    while t0.elapsed() < span {
        assert!(
            has_a(&c).await,
            "host 2 dropped a's peer {:?} after the store's leader died",
            t0.elapsed()
        );
        assert_eq!(
            fetch(&a.ns, ip_b, 2181).as_deref(),
            Some("imok"),
            "traffic {:?} after the store's leader died",
            t0.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (ns_d, hosts_d) = c.container("d").await;
    let req = json!({"op": "connect", "network": "my-net", "container": {
        "id": "d", "name": "d", "netns": {"path": ns_d.path()}, "hosts_file": hosts_d}});
    let ep_d = c.hosts[1]
        .call_until_ok(&req, Duration::from_secs(20))
        .await
        .expect("connect after the election");
    assert_ne!(ip_of(&ep_d), ip_a, "a's address was handed out again");
    assert_ne!(ip_of(&ep_d), ip_b, "b's address was handed out again");
    c.store.restart_member(leader);
    c.stop().await;
}

/// Corrupt, foreign and newer-schema records written by hand under the prefix are skipped:
/// no agent stops, and the hosts still converge.
async fn bad_records_skipped(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    let id = c.create_my_net().await;
    let store = overlay::store::connect_str(&c.store.url())
        .await
        .expect("open the store");
    let newer = json!({"schema": 99, "id": "x"}).to_string();
    let fake_ep = overlay::model::EndpointId::random();
    for (key, value) in [
        (format!("endpoints/{id}/garbage"), "{not json".to_string()),
        (format!("endpoints/{id}/{fake_ep}"), newer.clone()),
        (
            format!("networks/{}", overlay::model::NetworkId::random()),
            "\u{1}".to_string(),
        ),
        ("networks/not-an-id".to_string(), newer.clone()),
        ("hosts/intruder".to_string(), newer),
    ] {
        store
            .put(&key, value.as_bytes())
            .await
            .expect("write a bad record");
    }
    let pair = c.run_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    wait_until(
        "a and b converge past the bad records",
        CONVERGE,
        async || {
            lookup(&a.hosts_file, "b.my-net").is_some()
                && lookup(&b.hosts_file, "a.my-net").is_some()
        },
    )
    .await;
    wait_until("a reaches b", CONVERGE, async || {
        fetch(&a.ns, b.ip(), 2181).is_some()
    })
    .await;
    let ls = c.hosts[1].ok(json!({"op": "networks"})).await;
    assert_eq!(
        ls.as_array().unwrap().len(),
        1,
        "only the real network is listed: {ls}"
    );
    let doc = c.hosts[1]
        .ok(json!({"op": "inspect", "network": "my-net"}))
        .await;
    assert_eq!(doc["Containers"].as_object().unwrap().len(), 2);
    store.close().await.unwrap();
    c.stop().await;
}

/// A dual-stack network: both containers get an IPv4 and an IPv6 address from the global
/// IPAM, and TCP works across hosts over both.
async fn dual_stack(test: &str, backend: Backend) {
    let mut c = Cluster::new(test, backend).await;
    let opts =
        json!({"ipv6": true, "subnets": [{"subnet": "10.7.0.0/24"}, {"subnet": "fd00:7::/64"}]});
    let net = c.hosts[0]
        .ok(json!({"op": "create_network", "name": "my-net", "options": opts}))
        .await;
    assert_eq!(net["EnableIPv6"], true);
    let Running { ns: ns_a, .. } = c.run(0, "a", json!({})).await;
    let Running {
        ns: ns_b,
        endpoint: ep_b,
        ..
    } = c.run(1, "b", json!({})).await;
    let v4: IpAddr = ip_of(&ep_b);
    let v6: IpAddr = ep_b["IPv6Address"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(v6.is_ipv6() && v4.is_ipv4(), "{ep_b}");
    let _server = serve(&ns_b, 2181, "imok");
    for ip in [v4, v6] {
        wait_until(&format!("a reaches b at {ip}"), CONVERGE, async || {
            fetch(&ns_a, ip, 2181).as_deref() == Some("imok")
        })
        .await;
    }
    c.stop().await;
}

/// Kernel state removed behind the agent's back comes back by itself, at once: the kernel
/// reports each deletion and the agent heals the network it hit. The hosts sweep only every 30
/// s here, so the sweep is not what restores anything. Three faults on host2, one after the
/// other: its sandbox's vxlan device (taking every FDB and neighbour entry with it), the FDB
/// entry of the peer on host1, and the container's own interface. After each, traffic from
/// host1 is back (flannel never replayed its entries after its vxlan device was recreated).
async fn kernel_state_healed(test: &str, backend: Backend) {
    let mut c = Cluster::with_reclaim_grace(test, backend, 60_000).await;
    let id = c.create_my_net().await;
    let pair = c.run_pair().await;
    let (a, b) = (&pair.a, &pair.b);
    let ip_b = b.ip();
    let mac_a = a.endpoint["MacAddress"]
        .as_str()
        .expect("MacAddress")
        .to_string();
    let reaches = || {
        support::fetch_within(&a.ns, ip_b, 2181, Duration::from_millis(20)).as_deref()
            == Some("imok")
    };
    wait_until("a reaches b", CONVERGE, async || reaches()).await;
    let sandbox = format!("ovl-{}-{}", c.hosts[1].tag, &id[..12]);
    let container_b = format!("--net={}", b.ns.path().display());
    let faults: [(&str, &str, Vec<&str>); 3] = [
        (
            "vxlan device",
            "ip",
            vec!["-n", &sandbox, "link", "del", "vxlan0"],
        ),
        (
            "peer FDB entry",
            "bridge",
            vec![
                "-n",
                &sandbox,
                "fdb",
                "del",
                &mac_a,
                "dev",
                "vxlan0",
                "dst",
                "198.51.100.1",
            ],
        ),
        (
            "container interface",
            "nsenter",
            vec![&container_b, "ip", "link", "del", "eth0"],
        ),
    ];
    let mut report = Vec::new();
    for (what, program, args) in faults {
        let out = std::process::Command::new(program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        let deleted = std::time::Instant::now();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        wait_until(
            &format!("traffic back after the {what} was deleted"),
            CONVERGE,
            async || reaches(),
        )
        .await;
        let took = deleted.elapsed();
        let peers = c.hosts[1].peers(&id).await;
        assert!(
            peers.iter().any(|p| p.mac.to_string() == mac_a
                && p.vtep.to_string() == "198.51.100.1"
                && !p.ip.is_unspecified()),
            "after the {what}: host2 holds host1's peer whole: {peers:?}"
        );
        // Well under the 30 s sweep: only the kernel's report can have started the heal.
        assert!(
            took < Duration::from_secs(5),
            "the {what} took {took:?} to heal: the kernel's report was not acted on"
        );
        report.push(format!("{what} {took:?}"));
    }
    eprintln!(
        "{test}: traffic back after deleting the {}",
        report.join(", the ")
    );
    c.stop().await;
}

on_backends!(walkthrough:
    walkthrough_embedded => Backend::Embedded,
    walkthrough_etcd => Backend::Etcd,
    walkthrough_zookeeper => Backend::ZooKeeper,
);
on_backends!(dead_host_forgotten:
    dead_host_forgotten_embedded => Backend::Embedded,
    dead_host_forgotten_etcd => Backend::Etcd,
    dead_host_forgotten_zookeeper => Backend::ZooKeeper,
);
on_backends!(sticky_restart:
    sticky_restart_embedded => Backend::Embedded,
    sticky_restart_etcd => Backend::Etcd,
    sticky_restart_zookeeper => Backend::ZooKeeper,
);
on_backends!(create_race:
    create_race_embedded => Backend::Embedded,
    create_race_etcd => Backend::Etcd,
    create_race_zookeeper => Backend::ZooKeeper,
);
on_backends!(bad_records_skipped:
    bad_records_skipped_embedded => Backend::Embedded,
    bad_records_skipped_etcd => Backend::Etcd,
);
on_backends!(kernel_state_healed:
    kernel_state_healed_embedded => Backend::Embedded,
);
on_backends!(dual_stack:
    dual_stack_embedded => Backend::Embedded,
);
on_backends!(quorum_lost:
    quorum_lost_etcd => Backend::Etcd,
    quorum_lost_zookeeper => Backend::ZooKeeper,
);
on_backends!(leader_lost:
    leader_lost_etcd => Backend::Etcd,
    leader_lost_zookeeper => Backend::ZooKeeper,
);
on_backends!(store_restart:
    store_restart_etcd => Backend::Etcd,
    store_restart_zookeeper => Backend::ZooKeeper,
);
