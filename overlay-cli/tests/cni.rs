//! `overlay-cni` as the CNI specification words each operation, run by the test suite's CNI
//! runner (the role of upstream's `cnitool`) against real `overlayctl agent` processes on two
//! simulated hosts: ADD, DEL, CHECK, STATUS, GC and VERSION, error codes, runtime
//! capabilities, and names across hosts.
//!
//! Needs root. The etcd server of the STATUS test is started by `overlay-testkit`.

mod support;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use overlay_core::dataplane::Netns;
use overlay_testkit::{CniEnv, EtcdServer, TcpGreeter};
use serde_json::{Value, json};
use support::rig::Rig;

/// `ip` in namespace `ns`, for a test's own fault injection.
fn ip(ns: &Netns, args: &[&str]) {
    let ok = std::process::Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg("ip")
        .args(args)
        .status()
        .expect("run ip")
        .success();
    assert!(ok, "ip {args:?}");
}

/// The IPv4 addresses of `ifname` in `ns`.
fn addresses_of(ns: &Netns, ifname: &str) -> Vec<String> {
    let doc = overlay_testkit::ip_json(ns.path(), &["-4", "addr", "show", "dev", ifname]);
    doc.as_array()
        .into_iter()
        .flatten()
        .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default())
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
        .collect()
}

/// The first address of a CNI result.
fn result_ip(result: &Value) -> IpAddr {
    let a = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    a.split('/').next().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_check_and_del_as_the_spec_words_them() {
    let rig = Rig::new("add_check_and_del_as_the_spec_words_them", 1, None).await;
    let c1 = rig.container("c1").await;
    let conf = rig.conf(0, "1.1.0");
    let env = CniEnv::new("c1id", c1.path(), "eth0");

    // VERSION, with no agent needed.
    let v = rig
        .runner
        .exec(
            "VERSION",
            &json!({"cniVersion": "1.0.0", "type": "overlay-cni"}),
            &env,
        )
        .ok();
    assert_eq!(v["supportedVersions"], json!(["0.4.0", "1.0.0", "1.1.0"]));

    // ADD: the network is created from the config's options, the container attached.
    let r = rig.runner.exec("ADD", &conf, &env).ok();
    assert_eq!(r["cniVersion"], "1.1.0");
    assert_eq!(r["interfaces"][0]["name"], "eth0");
    assert_eq!(
        r["interfaces"][0]["sandbox"],
        c1.path().display().to_string()
    );
    assert_eq!(r["interfaces"][1]["name"], "eth1", "the gateway interface");
    assert_eq!(r["ips"][0]["address"], "10.0.9.2/24");
    assert_eq!(r["ips"][0]["gateway"], "10.0.9.1");
    assert_eq!(r["ips"][1]["address"], "172.18.0.2/16");
    assert_eq!(
        r["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "172.18.0.1"})
    );
    assert_eq!(r["dns"]["nameservers"], json!(["10.0.9.1"]));
    assert_eq!(r["dns"]["search"], json!(["my-net"]));
    // ... and the kernel agrees.
    assert_eq!(addresses_of(&c1, "eth0"), ["10.0.9.2/24"]);
    let mac = overlay_testkit::ip_json(c1.path(), &["link", "show", "eth0"])[0]["address"].clone();
    assert_eq!(mac, r["interfaces"][0]["mac"]);
    let inspect = rig.agent_call(1, &json!({"op": "inspect", "network": "my-net"}));
    assert_eq!(
        inspect["ok"]["Options"]["com.docker.network.driver.overlay.vxlanid_list"],
        "4242"
    );

    // CHECK holds, then finds what was taken away.
    let with_prev = |c: &Value, prev: &Value| {
        let mut c = c.clone();
        c["prevResult"] = prev.clone();
        c
    };
    assert!(
        rig.runner
            .exec("CHECK", &with_prev(&conf, &r), &env)
            .success
    );
    assert_eq!(
        rig.runner.exec("CHECK", &conf, &env).code(),
        7,
        "no prevResult"
    );
    ip(&c1, &["addr", "del", "10.0.9.2/24", "dev", "eth0"]);
    let e = rig.runner.exec("CHECK", &with_prev(&conf, &r), &env).err();
    assert_eq!(e["code"], 103, "{e}");
    assert!(
        e["msg"]
            .as_str()
            .unwrap()
            .contains("no longer holds 10.0.9.2/24"),
        "{e}"
    );
    ip(&c1, &["addr", "add", "10.0.9.2/24", "dev", "eth0"]);
    assert!(
        rig.runner
            .exec("CHECK", &with_prev(&conf, &r), &env)
            .success
    );
    let stranger = CniEnv::new("nobody", c1.path(), "eth0");
    assert_eq!(
        rig.runner
            .exec("CHECK", &with_prev(&conf, &r), &stranger)
            .code(),
        3
    );

    // ADD fails when the interface exists: the same container again, or a namespace whose
    // eth0 is somebody else's; nothing is left of the failed attempt.
    let again = rig.runner.exec("ADD", &conf, &env).err();
    assert_eq!(again["code"], 102, "{again}");
    let c2 = rig.container("c2").await;
    ip(
        &c2,
        &[
            "link", "add", "eth0", "type", "veth", "peer", "name", "other0",
        ],
    );
    let e = rig
        .runner
        .exec("ADD", &conf, &CniEnv::new("c2id", c2.path(), "eth0"))
        .err();
    assert_eq!(e["code"], 102, "{e}");
    assert!(
        e["msg"].as_str().unwrap().contains("eth0 already exists"),
        "{e}"
    );
    assert_eq!(rig.attachments(0).len(), 1, "only c1 is attached");
    assert!(
        overlay_testkit::link(c2.path(), "eth1").is_none(),
        "no gateway interface left"
    );

    // DEL: idempotent, and fine without a namespace or prevResult.
    assert!(rig.runner.exec("DEL", &with_prev(&conf, &r), &env).success);
    assert!(rig.attachments(0).is_empty());
    assert!(
        overlay_testkit::link(c1.path(), "eth0").is_none(),
        "eth0 is gone"
    );
    assert!(rig.runner.exec("DEL", &conf, &env).success, "a second DEL");
    let gone = CniEnv {
        netns: None,
        ..env.clone()
    };
    assert!(
        rig.runner.exec("DEL", &conf, &gone).success,
        "DEL without CNI_NETNS"
    );
    // The address went back: a container may ask for it by number.
    let c3 = rig.container("c3").await;
    let r3 = rig.agent_call(
        0,
        &json!({"op": "connect", "network": "my-net",
               "container": {"id": "c3id", "name": "c3", "netns": {"path": c3.path()},
                             "ipv4": "10.0.9.2"}}),
    );
    assert_eq!(r3["ok"]["IPv4Address"], "10.0.9.2/24", "{r3}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_across_hosts_and_configs_must_agree() {
    let rig = Rig::new("names_resolve_across_hosts_and_configs_must_agree", 2, None).await;
    let a = rig.container("a").await;
    let b = rig.container("b").await;
    let aliases = |name: &str| json!({"aliases": {"my-net": [name, format!("{name}-short")]}});
    let list = |h: usize| {
        json!({
            "cniVersion": "1.0.0", "name": "my-net",
            "plugins": [{
                "type": "overlay-cni", "socket": rig.hosts[h].socket,
                "create": {"subnet": "10.0.9.0/24"},
                "capabilities": {"aliases": true, "portMappings": true}
            }]
        })
    };
    let mut env_a = CniEnv::new("aid", a.path(), "eth0");
    env_a.args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=x".into();
    let ra = rig
        .runner
        .add_list(&list(0), &aliases("zookeeper1"), &env_a)
        .unwrap();
    let rb = rig
        .runner
        .add_list(
            &list(1),
            &aliases("zookeeper2"),
            &CniEnv::new("bid", b.path(), "eth0"),
        )
        .unwrap();
    let (ip_a, ip_b) = (result_ip(&ra), result_ip(&rb));
    assert_ne!(ip_a, ip_b, "one global IPAM");

    // Each resolves the other by name, by name.network and by alias, at the resolver the
    // result names.
    let resolver: IpAddr = rb["dns"]["nameservers"][0]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let limit = Duration::from_secs(2);
    for (from, name, want) in [
        (&b, "zookeeper1", ip_a),
        (&b, "zookeeper1.my-net", ip_a),
        (&b, "zookeeper1-short", ip_a),
        (&a, "zookeeper2.my-net", ip_b),
    ] {
        let mut got = None;
        support::wait_until(
            &format!("{name} resolves"),
            Duration::from_secs(15),
            async || {
                got = overlay_testkit::dns_query(
                    from.path(),
                    (resolver, 53).into(),
                    name,
                    "A",
                    false,
                    limit,
                );
                got.as_ref().is_some_and(|g| g.addresses == [want])
            },
        )
        .await;
    }
    // ... and reaches it over TCP across the hosts.
    let _greeter = TcpGreeter::start(a.path(), ([0, 0, 0, 0], 2181).into(), "imok").unwrap();
    let got = overlay_testkit::fetch(b.path(), (ip_a, 2181).into(), Duration::from_secs(5));
    assert_eq!(got.as_deref(), Some("imok"));

    // An existing network is checked against the config's create options.
    let c = rig.container("c").await;
    let mut other = list(1);
    other["plugins"][0]["create"] = json!({"subnet": "10.0.8.0/24"});
    let e = rig
        .runner
        .add_list(&other, &json!({}), &CniEnv::new("cid", c.path(), "eth0"))
        .unwrap_err();
    assert_eq!(e["code"], 7, "{e}");
    let msg = e["msg"].as_str().unwrap();
    assert!(
        msg.contains("10.0.9.0/24") && msg.contains("10.0.8.0/24"),
        "{msg}"
    );
    assert_eq!(rig.attachments(1).len(), 1, "nothing was attached");

    // Unknown CNI_ARGS without IgnoreUnknown are refused.
    let mut strict = CniEnv::new("cid", c.path(), "eth0");
    strict.args = "K8S_POD_NAMESPACE=x".into();
    let e = rig
        .runner
        .add_list(&list(1), &json!({}), &strict)
        .unwrap_err();
    assert_eq!(e["code"], 4, "{e}");

    for (h, id, ns) in [(0, "aid", &a), (1, "bid", &b)] {
        rig.runner
            .run_list(
                "DEL",
                &list(h),
                &json!({}),
                None,
                &CniEnv::new(id, ns.path(), "eth0"),
            )
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_only_its_own_stale_attachments() {
    let rig = Rig::new("gc_removes_only_its_own_stale_attachments", 3, None).await;
    let conf = rig.conf(0, "1.1.0");
    let mut names = Vec::new();
    for n in ["keep", "stale"] {
        let ns = rig.container(n).await;
        rig.runner
            .exec(
                "ADD",
                &conf,
                &CniEnv::new(&format!("{n}id"), ns.path(), "eth0"),
            )
            .ok();
        names.push(ns);
    }
    // Attached by somebody else, straight through the agent: not the plugin's to collect.
    let other = rig.container("other").await;
    let r = rig.agent_call(
        0,
        &json!({"op": "connect", "network": "my-net",
               "container": {"id": "otherid", "name": "other", "netns": {"path": other.path()}}}),
    );
    assert!(r.get("ok").is_some(), "{r}");

    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": "keepid", "ifname": "eth0"}]);
    assert!(rig.runner.exec("GC", &gc, &CniEnv::default()).success);
    let left: Vec<String> = rig
        .attachments(0)
        .iter()
        .map(|a| a["container_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, ["keepid", "otherid"]);
    assert!(
        overlay_testkit::link(names[1].path(), "eth0").is_none(),
        "stale's eth0 went"
    );
    assert!(
        !addresses_of(&names[0], "eth0").is_empty(),
        "keep's eth0 stays"
    );

    // GC without the list is refused (it would collect everything).
    assert_eq!(rig.runner.exec("GC", &conf, &CniEnv::default()).code(), 7);
    // GC of a network that does not exist has nothing to do.
    let mut none = gc.clone();
    none["name"] = json!("no-such-net");
    assert!(rig.runner.exec("GC", &none, &CniEnv::default()).success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_error_codes() {
    let etcd = EtcdServer::start_local();
    let mut etcd = etcd;
    let rig = Rig::new(
        "status_and_error_codes",
        4,
        Some(etcd.url_with("timeout=1s")),
    )
    .await;
    let mut rig = rig;
    let conf = rig.conf(0, "1.0.0");
    let c = rig.container("c").await;
    let env = CniEnv::new("cid", c.path(), "eth0");
    assert!(rig.runner.exec("STATUS", &conf, &CniEnv::default()).success);

    // Configurations: an unknown version (1), a document that does not decode (6), a
    // wrong type or bad create options (7); a missing variable (4).
    let plugin = PathBuf::from(env!("CARGO_BIN_EXE_overlay-cni"));
    let raw =
        |stdin: &str, env: &CniEnv| rig.runner.exec_raw(&plugin, "ADD", stdin.as_bytes(), env);
    let bad_version = raw(
        r#"{"cniVersion":"0.2.0","name":"n","type":"overlay-cni"}"#,
        &env,
    );
    assert_eq!(bad_version.code(), 1);
    assert_eq!(raw("{not json", &env).code(), 6);
    let wrong_type = raw(r#"{"cniVersion":"1.0.0","name":"n","type":"bridge"}"#, &env).err();
    assert_eq!(wrong_type["code"], 7);
    assert_eq!(
        wrong_type["cniVersion"], "1.0.0",
        "errors speak the config's version"
    );
    let mut bad_subnet = conf.clone();
    bad_subnet["create"] = json!({"subnet": "10.0.300.0/24"});
    let e = rig.runner.exec("ADD", &bad_subnet, &env).err();
    assert_eq!(e["code"], 7, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("10.0.300.0/24"), "{e}");
    let mut no_netns = env.clone();
    no_netns.netns = None;
    assert_eq!(rig.runner.exec("ADD", &conf, &no_netns).code(), 4);
    let missing_ns = CniEnv::new("cid", Path::new("/run/netns/does-not-exist"), "eth0");
    let e = rig.runner.exec("ADD", &conf, &missing_ns).err();
    assert_eq!(e["code"], 7, "{e}");
    // A network that does not exist and no options to create it.
    let mut bare = conf.clone();
    bare.as_object_mut().unwrap().remove("create");
    bare["name"] = json!("absent");
    let e = rig.runner.exec("ADD", &bare, &env).err();
    assert_eq!(e["code"], 7, "{e}");
    assert!(e["msg"].as_str().unwrap().contains("absent"), "{e}");

    // The store goes: STATUS says the plugin cannot serve ADDs (50).
    etcd.kill();
    support::wait_until(
        "STATUS sees the store gone",
        Duration::from_secs(20),
        async || rig.runner.exec("STATUS", &conf, &CniEnv::default()).output["code"] == 50,
    )
    .await;
    etcd.restart();
    support::wait_until(
        "STATUS sees the store back",
        Duration::from_secs(30),
        async || rig.runner.exec("STATUS", &conf, &CniEnv::default()).success,
    )
    .await;

    // None of the refused ADDs (all to host 1) attached anything.
    assert!(rig.attachments(0).is_empty());

    // The agent goes: ADD is "try again later" (11), STATUS 50, and the message says what
    // to start.
    rig.agents[0].stop().await;
    let e = rig.runner.exec("ADD", &conf, &env).err();
    assert_eq!(e["code"], 11, "{e}");
    assert!(
        e["details"].as_str().unwrap().contains("overlayctl agent"),
        "{e}"
    );
    assert_eq!(
        rig.runner.exec("STATUS", &conf, &CniEnv::default()).code(),
        50
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_mappings_and_version_0_4_0() {
    let rig = Rig::new("port_mappings_and_version_0_4_0", 5, None).await;
    let c = rig.container("web").await;
    let list = json!({
        "cniVersion": "0.4.0", "name": "my-net",
        "plugins": [{
            "type": "overlay-cni", "socket": rig.hosts[0].socket,
            "create": {"subnet": "10.0.9.0/24"},
            "capabilities": {"portMappings": true}
        }]
    });
    let runtime = json!({
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}],
        // Not declared by the plugin: the runner, as libcni, does not pass it.
        "aliases": {"my-net": ["undeclared"]}
    });
    let env = CniEnv::new("webid", c.path(), "eth0");
    let r = rig.runner.add_list(&list, &runtime, &env).unwrap();
    assert_eq!(r["cniVersion"], "0.4.0");
    assert_eq!(
        r["ips"][0]["version"], "4",
        "0.4.0 results carry address versions"
    );
    let att = rig.attachments(0);
    assert_eq!(att[0]["ports"], json!(["8080:80/tcp"]));
    assert_eq!(
        att[0]["name"], "webid",
        "no alias: the container id names it"
    );
    // A client on the other host reaches the published port at host 1's address.
    let _greeter = TcpGreeter::start(c.path(), ([0, 0, 0, 0], 80).into(), "hello").unwrap();
    let got = overlay_testkit::fetch(
        rig.hosts[1].ns.path(),
        ([198, 51, 100, 1], 8080).into(),
        Duration::from_secs(5),
    );
    assert_eq!(got.as_deref(), Some("hello"));
    // The same port for another container is refused, naming the holder.
    let d = rig.container("d").await;
    let e = rig
        .runner
        .add_list(&list, &runtime, &CniEnv::new("did", d.path(), "eth0"))
        .unwrap_err();
    assert_eq!(e["code"], 102, "{e}");
    rig.runner
        .run_list("DEL", &list, &runtime, Some(&r), &env)
        .unwrap();
    assert!(rig.attachments(0).is_empty());
}
