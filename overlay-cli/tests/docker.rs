//! The seed's walkthrough typed into real Docker engines: Debian's `docker.io` (20.10) on
//! two simulated hosts, each engine with `overlayctl agent --docker-plugin` as its `ovl`
//! network and IPAM driver, the cluster store an etcd on the hosts' LAN (with its v2 API on,
//! which Docker's own `--cluster-store` speaks). Once in global scope (the engines share the
//! etcd, so one `docker network create` is seen by both) and once in local scope (no cluster
//! store: each engine creates `my-net`, and the name makes them one network).
//!
//! Needs root, `docker.io`, `etcd-server` and `busybox-static` (`scripts/install-deps`).

mod support;

use std::time::Duration;

use overlay_core::dataplane::Netns;
use overlay_testkit::DockerEngine;
use overlay_testkit::links;
use serde_json::{Value, json};
use support::docker::{DockerLab, RESOLVER, SUBNET, ovl_create};
use support::wait_until;

/// `docker run -d --net my-net --name NAME` of a server greeting every connection to 2181
/// with `imok NAME`.
fn zookeeper(e: &DockerEngine, name: &str, extra: &[&str]) {
    let serve = format!("while true; do echo imok {name} | nc -l -p 2181; done");
    let mut args = vec!["run", "-d", "--net", "my-net", "--name", name];
    args.extend(extra);
    args.extend(["busybox", "sh", "-c", &serve]);
    e.ok(&args);
}

/// What `nc TARGET 2181` prints in container `from`.
fn fetch(e: &DockerEngine, from: &str, target: &str) -> String {
    let out = e.run(&["exec", from, "nc", "-w", "3", target, "2181"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The seed's walkthrough on the lab: four zookeepers, TCP between every pair by name and
/// `name.my-net`, inspect on both engines, and nothing left after `docker rm -f` and
/// `docker network rm`.
async fn walkthrough(lab: &DockerLab, global: bool) {
    let (e1, e2) = (&lab.engines[0], &lab.engines[1]);
    let create = ovl_create(&["--subnet", SUBNET, "--label", "app=zookeeper", "my-net"]);
    let id1 = e1.ok(&create);
    if global {
        // Seen on host 2 with the same id, without a create there.
        let ls = e2.ok(&[
            "network",
            "ls",
            "--filter",
            "driver=ovl",
            "--format",
            "{{.ID}} {{.Name}} {{.Scope}}",
        ]);
        assert_eq!(ls, format!("{} my-net global", &id1[..12]));
    } else {
        let id2 = e2.ok(&create);
        assert_ne!(id1, id2, "in local scope each engine has its own id");
        // A second create with other options is the cluster's my-net all the same: refused
        // at its first use, with both values named.
    }
    // Containers of local scope ask the network's resolver for names their engine does not
    // know; Docker's resolver answers for the others in global scope.
    let dns: &[&str] = if global { &[] } else { &["--dns", RESOLVER] };
    let placement = [
        (0, "zookeeper1"),
        (1, "zookeeper2"),
        (0, "zookeeper3"),
        (1, "zookeeper4"),
    ];
    for (h, name) in placement {
        zookeeper(&lab.engines[h], name, dns);
    }
    for (hf, from) in placement {
        for (_, to) in placement.iter().filter(|(_, n)| *n != from) {
            for target in [to.to_string(), format!("{to}.my-net")] {
                let want = format!("imok {to}");
                let mut got = String::new();
                wait_until(
                    &format!("{from} reaches {target}"),
                    Duration::from_secs(20),
                    async || {
                        got = fetch(&lab.engines[hf], from, &target);
                        got == want
                    },
                )
                .await;
            }
        }
    }
    // The engines' view.
    for e in [e1, e2] {
        let doc: Value = serde_json::from_str(&e.ok(&["network", "inspect", "my-net"])).unwrap();
        let n = &doc[0];
        assert_eq!(n["Driver"], "ovl", "{n}");
        assert_eq!(n["IPAM"]["Driver"], "ovl", "{n}");
        assert_eq!(n["IPAM"]["Config"][0]["Subnet"], SUBNET, "{n}");
        assert_eq!(n["Scope"], if global { "global" } else { "local" }, "{n}");
        if global {
            assert_eq!(n["Id"], id1.as_str(), "{n}");
        }
    }
    // The cluster's view: the four, named, with four distinct addresses.
    let mut names = Vec::new();
    wait_until(
        "the cluster knows the names",
        Duration::from_secs(10),
        async || {
            let inspect = lab.agent_call(0, &json!({"op": "inspect", "network": "my-net"}));
            let containers = inspect["ok"]["Containers"]
                .as_object()
                .cloned()
                .unwrap_or_default();
            names = containers
                .values()
                .map(|c| {
                    (
                        c["Name"].as_str().unwrap_or("").to_string(),
                        c["IPv4Address"].clone(),
                    )
                })
                .collect::<Vec<_>>();
            names.sort_by(|a, b| a.0.cmp(&b.0));
            names.iter().map(|n| n.0.as_str()).collect::<Vec<_>>()
                == ["zookeeper1", "zookeeper2", "zookeeper3", "zookeeper4"]
        },
    )
    .await;
    let mut addresses: Vec<String> = names.iter().map(|n| n.1.to_string()).collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 4, "no address twice: {names:?}");
    let net = lab.agent_call(1, &json!({"op": "inspect", "network": "my-net"}));
    assert_eq!(net["ok"]["Labels"]["app"], "zookeeper", "{net}");

    // A second network, IPv6 and internal, connected and disconnected while zookeeper1 runs.
    e1.ok(&ovl_create(&[
        "--internal",
        "--ipv6",
        "--subnet",
        "10.0.10.0/24",
        "--subnet",
        "fd00:10::/64",
        "back",
    ]));
    e1.ok(&[
        "network",
        "connect",
        "--alias",
        "zk-back",
        "--ip6",
        "fd00:10::99",
        "back",
        "zookeeper1",
    ]);
    let addrs = e1.ok(&["exec", "zookeeper1", "ip", "-o", "addr", "show"]);
    assert!(
        addrs.contains("inet 10.0.10.") && addrs.contains("inet6 fd00:10::99/64"),
        "{addrs}"
    );
    wait_until("the alias resolves", Duration::from_secs(10), async || {
        let r = lab.agent_call(1, &json!({"op": "resolve", "name": "zk-back.back"}));
        r["ok"]
            .as_array()
            .is_some_and(|a| a.iter().any(|ip| ip == "fd00:10::99"))
    })
    .await;
    e1.ok(&["network", "disconnect", "back", "zookeeper1"]);
    let addrs = e1.ok(&["exec", "zookeeper1", "ip", "-o", "addr", "show"]);
    assert!(!addrs.contains("10.0.10."), "{addrs}");
    e1.ok(&["network", "rm", "back"]);

    // Nothing left behind.
    for (h, name) in placement {
        lab.engines[h].ok(&["rm", "-f", name]);
    }
    e1.ok(&["network", "rm", "my-net"]);
    if !global {
        e2.ok(&["network", "rm", "my-net"]);
    }
    wait_until(
        "the cluster has no network",
        Duration::from_secs(10),
        async || lab.agent_call(0, &json!({"op": "networks"}))["ok"] == json!([]),
    )
    .await;
    let keys = lab.store_keys();
    assert!(
        keys.iter().any(|k| k.contains("/hosts/")),
        "the store is read: the hosts' records are there: {keys:?}"
    );
    // The IPAM's registry is one key for every network's subnets; what it claimed for my-net
    // is given back (my-net's subnet can be claimed again, below).
    let left: Vec<&String> = keys
        .iter()
        .filter(|k| !k.contains("/hosts/") && !k.ends_with("/ipam/registry"))
        .collect();
    assert!(
        left.is_empty(),
        "the store holds only the hosts' own records: {keys:?}"
    );
    let again = ovl_create(&["--subnet", SUBNET, "again"]);
    e2.ok(&again);
    e2.ok(&["network", "rm", "again"]);
    wait_until(
        "the cluster has no network",
        Duration::from_secs(10),
        async || lab.agent_call(0, &json!({"op": "networks"}))["ok"] == json!([]),
    )
    .await;
    for h in &lab.hosts {
        let ours: Vec<String> = links(h.path())
            .into_iter()
            .filter(|l| l.starts_with("ovl"))
            .collect();
        assert!(ours.is_empty(), "no interface waits in the host: {ours:?}");
    }
    // The hosts' sandboxes are named `ovl-<host id>-<network>`, the host ids `<prefix>_hostN`.
    let left = Netns::list_named(&format!("ovl-{}_", lab.prefix)).unwrap();
    assert!(left.is_empty(), "no sandbox is left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_walkthrough_in_global_scope() {
    let test = "docker_walkthrough_in_global_scope";
    let lab = DockerLab::new(test, 1, true).await;
    let e1 = &lab.engines[0];
    // Errors come back with our message and what to do, as the docker CLI prints them.
    let out = e1.run(&ovl_create(&["--subnet", SUBNET, "-o", "color=red", "bad"]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("no option \"color\""),
        "{err}"
    );
    let out = e1.run(&["network", "create", "-d", "ovl", "local-ipam"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--ipam-driver"),
        "{err}"
    );
    // Without --subnet, a free /24 of the default pools.
    e1.ok(&ovl_create(&["auto"]));
    let doc: Value = serde_json::from_str(&e1.ok(&["network", "inspect", "auto"])).unwrap();
    let subnet = doc[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        subnet.starts_with("10.") && subnet.ends_with("/24"),
        "{doc}"
    );
    e1.ok(&["network", "rm", "auto"]);
    walkthrough(&lab, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_walkthrough_in_local_scope() {
    let test = "docker_walkthrough_in_local_scope";
    let lab = DockerLab::new(test, 2, false).await;
    walkthrough(&lab, false).await;
    // A later create of the same name with another subnet: the engine records it before the
    // driver can know its name, so it is refused at its first use, naming both subnets.
    let (e1, e2) = (&lab.engines[0], &lab.engines[1]);
    e1.ok(&ovl_create(&["--subnet", "10.0.11.0/24", "conf"]));
    e2.ok(&ovl_create(&["--subnet", "10.0.12.0/24", "conf"]));
    let out = e2.run(&[
        "run", "-d", "--net", "conf", "--name", "late", "busybox", "sleep", "60",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("10.0.11.0/24") && err.contains("10.0.12.0/24"),
        "the error names both subnets: {err}"
    );
    let _ = e2.run(&["rm", "-f", "late"]);
    e2.ok(&["network", "rm", "conf"]);
    e1.ok(&["network", "rm", "conf"]);
}
