//! The seed's walkthrough driven only through `overlayctl` processes: two simulated hosts
//! (namespaces joined by an underlay), each running `overlayctl agent`, on every store backend;
//! the network created on one host, listed with the same id on both; four `container run`
//! containers reaching each other by `name` and `name.my-net`.
//!
//! Needs root. Test servers (etcd, ZooKeeper) are started by `overlay-testkit`.

mod support;

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use overlay_core::dataplane::Netns;
use overlay_testkit::{EtcdServer, TcpGreeter, ZooKeeperServer};
use serde_json::Value;
use support::rig::Rig;
use support::{Host, Proc, agent, child_of, ok, output, wait_until};
use tokio::process::Command;

/// Bounds that only keep a broken build from hanging; convergence takes milliseconds.
const CONVERGE: Duration = Duration::from_secs(15);

/// Held for its Drop: the server (or the store file's directory) lives as long as the test.
#[allow(dead_code)]
enum Server {
    File(tempfile::TempDir),
    Etcd(EtcdServer),
    Zk(ZooKeeperServer),
}

/// A store for one test, kept alive with its server.
fn store(backend: &str) -> (Server, String) {
    // Each url_with call names a fresh key prefix: take it once and share it.
    match backend {
        "embedded" => {
            let dir = tempfile::tempdir().expect("temp dir");
            let url = format!("file://{}/store.db", dir.path().display());
            (Server::File(dir), url)
        }
        "etcd" => {
            let s = EtcdServer::start();
            let url = s.url_with("timeout=1s");
            (Server::Etcd(s), url)
        }
        _ => {
            let s = ZooKeeperServer::start();
            let url = s.url_with("timeout=1s");
            (Server::Zk(s), url)
        }
    }
}

/// The address of container `name` in a `network inspect`.
fn member_ip(inspect: &Value, name: &str) -> IpAddr {
    let containers = inspect[0]["Containers"].as_object().expect("Containers");
    let c = containers
        .values()
        .find(|c| c["Name"] == name)
        .unwrap_or_else(|| panic!("{name} in inspect: {inspect}"));
    overlay_testkit::ip_of(c)
}

/// `ip netns exec NS getent hosts NAME`: the address NAME has inside container NS.
async fn getent(ns: &str, name: &str) -> Option<IpAddr> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "getent", "hosts", name])
        .output()
        .await
        .expect("run ip netns exec");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next()?.parse().ok()
}

/// Answers one TCP greeting per connection on 2181 in `ns` until dropped.
fn greet(ns: &Netns, text: &'static str) -> TcpGreeter {
    TcpGreeter::start(ns.path(), ([0, 0, 0, 0], 2181).into(), text).expect("greeter")
}

/// The greeting of `ip`:2181 as seen from `ns`.
fn fetch(ns: &Netns, ip: IpAddr) -> Option<String> {
    overlay_testkit::fetch(ns.path(), (ip, 2181).into(), Duration::from_secs(2))
}

fn container(host: &Host, name: &str, cmd: &[&str]) -> Proc {
    let mut c = host.run(&["container", "run", "--net", "my-net", "--name", name, "--"]);
    c.args(cmd);
    Proc::spawn(c, &format!("container {name}"))
}

async fn inspect(host: &Host) -> Value {
    let text = ok(host.run(&["network", "inspect", "my-net"])).await;
    serde_json::from_str(&text).expect("inspect prints JSON")
}

fn hosts_of(pid: i32) -> String {
    // /proc/PID/root resolves paths in the process's own mount namespace.
    let path = format!("/proc/{pid}/root/etc/hosts");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"))
}

async fn walkthrough(test: &str, backend: &str) {
    overlay_testkit::require_root(test);
    let (_server, url) = store(backend);
    let mut rig = Rig::new(test, 16 + backend.len() as u32, Some(url)).await;
    let prefix = rig.prefix.clone();
    let (lab, hosts, agents) = (&rig.lab, &rig.hosts, &mut rig.agents);

    // The socket takes several request lines per connection, one response line each.
    {
        use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
        let mut s = tokio::net::UnixStream::connect(&hosts[0].socket)
            .await
            .unwrap();
        s.write_all(b"{\"op\":\"hosts\"}\n{\"op\":\"launch\"}\n")
            .await
            .unwrap();
        let mut lines = BufReader::new(s).lines();
        let first: Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert!(
            first["ok"].as_array().is_some_and(|h| !h.is_empty()),
            "{first}"
        );
        let second: Value =
            serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
        assert_eq!(second["error"]["kind"], "invalid argument", "{second}");
    }

    // The network, created on host 1, is listed with the same id on both hosts.
    let id = ok(hosts[0].run(&["network", "create", "-d", "overlay", "my-net"])).await;
    let id = id.trim().to_string();
    assert_eq!(id.len(), 64, "create prints the full id: {id}");
    for h in hosts {
        let table = ok(h.run(&["network", "ls"])).await;
        let mut lines = table.lines();
        let head: Vec<&str> = lines
            .next()
            .unwrap()
            .split("  ")
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        assert_eq!(head, ["NETWORK ID", "NAME", "DRIVER", "SCOPE"]);
        let row = lines.find(|l| l.contains("my-net")).expect("my-net listed");
        let cells: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(cells, [&id[..12], "my-net", "overlay", "global"]);
        let quiet = ok(h.run(&["network", "ls", "-q"])).await;
        assert!(quiet.lines().any(|l| l == &id[..12]), "{quiet}");
        let json = ok(h.run(&["network", "ls", "--format", "json", "--no-trunc"])).await;
        let rows: Vec<Value> = json
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(
            rows.iter()
                .any(|r| r["ID"] == id.as_str() && r["Name"] == "my-net")
        );
    }
    let doc = inspect(&hosts[1]).await;
    assert_eq!(doc[0]["Id"], id.as_str());
    assert_eq!(doc[0]["Driver"], "overlay");

    // zookeeper1 and 2 on host 1, 3 and 4 on host 2, as the seed runs them.
    let names: Vec<String> = (1..=4).map(|i| format!("{prefix}-zk{i}")).collect();
    let mut containers = Vec::new();
    for (i, name) in names.iter().enumerate() {
        containers.push(container(&hosts[i / 2], name, &["sleep", "600"]));
    }
    let mut doc = Value::Null;
    wait_until("four containers in inspect", CONVERGE, async || {
        for c in &mut containers {
            assert!(c.running(), "{} exited early", c.what);
        }
        doc = inspect(&hosts[0]).await;
        doc[0]["Containers"]
            .as_object()
            .is_some_and(|c| c.len() == 4)
    })
    .await;
    let ips: Vec<IpAddr> = names.iter().map(|n| member_ip(&doc, n)).collect();

    // Every container resolves every other by name and name.my-net, and talks to it.
    for (i, from) in names.iter().enumerate() {
        for (j, to) in names.iter().enumerate() {
            if i == j {
                continue;
            }
            for name in [to.clone(), format!("{to}.my-net")] {
                wait_until(&format!("{from} resolves {name}"), CONVERGE, async || {
                    getent(from, &name).await == Some(ips[j])
                })
                .await;
            }
        }
    }
    let namespaces: Vec<Netns> = names
        .iter()
        .map(|n| Netns::open_named(n).unwrap())
        .collect();
    let _servers: Vec<TcpGreeter> = namespaces.iter().map(|ns| greet(ns, "imok")).collect();
    for (i, ns) in namespaces.iter().enumerate() {
        for (j, ip) in ips.iter().enumerate() {
            if i != j {
                let mut got = None;
                wait_until(
                    &format!("{} reaches {}", names[i], names[j]),
                    CONVERGE,
                    async || {
                        got = fetch(ns, *ip);
                        got.is_some()
                    },
                )
                .await;
                assert_eq!(got.as_deref(), Some("imok"));
            }
        }
    }

    // `network connect` of a namespace made elsewhere: same hosts file, aliases, disconnect.
    let extra = lab.namespace("web").await.expect("web namespace");
    let web = format!("{prefix}-web");
    let out = output(hosts[1].run(&["network", "connect", "--alias", "www", "my-net", &web])).await;
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    wait_until("web resolves zookeeper1.my-net", CONVERGE, async || {
        getent(&web, &format!("{}.my-net", names[0])).await == Some(ips[0])
    })
    .await;
    let mut web_ip = None;
    wait_until("zookeeper1 resolves www.my-net", CONVERGE, async || {
        web_ip = getent(&names[0], "www.my-net").await;
        web_ip.is_some()
    })
    .await;
    let _web_server = greet(&extra, "web");
    assert_eq!(
        fetch(&namespaces[0], web_ip.unwrap()).as_deref(),
        Some("web")
    );
    let out = output(hosts[1].run(&["network", "connect", "my-net", &web])).await;
    assert_eq!(out.code(), Some(102), "connected twice: {}", out.stderr);
    ok(hosts[1].run(&["network", "disconnect", "my-net", &web])).await;
    wait_until("www is gone from zookeeper1", CONVERGE, async || {
        getent(&names[0], "www.my-net").await.is_none()
    })
    .await;

    // zookeeper1's command, whose /etc/hosts is the agent's file bind-mounted once when the
    // command started, sees each later container within a second of its connect (a hang
    // guard: the latency is the scale bench's figure), from both hosts.
    let cmd_pid = child_of(containers[0].pid()).expect("zookeeper1's command");
    let mut later = Vec::new();
    for i in 0..5 {
        let name = format!("{prefix}-later{i}");
        let ns = lab
            .namespace(&format!("later{i}"))
            .await
            .expect("namespace");
        ok(hosts[i % 2].run(&["network", "connect", "my-net", &name])).await;
        // Its own files were written before the connect answered: a runtime bind-mounts
        // them right away.
        let own = format!("/etc/netns/{name}/hosts");
        let text = std::fs::read_to_string(&own).unwrap_or_else(|e| panic!("read {own}: {e}"));
        assert!(
            text.contains(&format!("\t{}.my-net\n", names[0])),
            "{own} right after the connect: {text}"
        );
        assert!(
            std::fs::metadata(format!("/etc/netns/{name}/resolv.conf")).is_ok(),
            "{name}'s resolv.conf right after the connect"
        );
        let line = format!("\t{name}.my-net\n");
        wait_until(
            &format!("zookeeper1's bind-mounted /etc/hosts shows {name}"),
            Duration::from_secs(1),
            async || hosts_of(cmd_pid).contains(&line),
        )
        .await;
        later.push((i % 2, name, ns));
    }
    // iproute2 bind-mounts every file of /etc/netns/NAME over /etc: nothing there lacks a
    // counterpart in /etc, so `ip netns exec` into a connected container says nothing.
    let out = Command::new("ip")
        .args(["netns", "exec", &later[0].1, "true"])
        .output()
        .await
        .expect("run ip netns exec");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ip netns exec {} true: {:?} {}",
        later[0].1,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for (h, name, _) in &later {
        ok(hosts[*h].run(&["network", "disconnect", "my-net", name])).await;
    }

    // The agent of host 2 stops cleanly and comes back: its containers stay connected.
    let status = agents[1].stop().await;
    assert!(status.success(), "agent 2: {status:?}");
    let doc = inspect(&hosts[0]).await;
    assert_eq!(
        doc[0]["Containers"].as_object().map(|c| c.len()),
        Some(4),
        "{doc}"
    );
    // Kernel state stays: the two containers of host 2 still talk over its bridge. (Other
    // hosts drop host 2's peers while its record is withdrawn, until it is back.)
    assert_eq!(
        fetch(&namespaces[2], ips[3]).as_deref(),
        Some("imok"),
        "zk3 still reaches zk4"
    );
    agents[1] = agent(&hosts[1], &lab.host_id("host2"), "198.51.100.2").await;
    wait_until(
        "zk3 reaches zk1 after the agent restart",
        CONVERGE,
        async || fetch(&namespaces[2], ips[0]).as_deref() == Some("imok"),
    )
    .await;

    // The command of zookeeper1, started first, sees zookeeper4 in its /etc/hosts.
    wait_until(
        "zookeeper1's /etc/hosts follows the agent",
        CONVERGE,
        async || hosts_of(cmd_pid).contains(&format!("{}\t{}.my-net", ips[3], names[3])),
    )
    .await;

    // A command runs inside its container, with the names, and its exit code comes back.
    let probe = format!("{prefix}-probe");
    let script = format!(
        "getent hosts {}.my-net && ip -o -4 addr show eth0 && exit 3",
        names[2]
    );
    let out = output(hosts[1].run(&[
        "container",
        "run",
        "--net",
        "my-net",
        "--name",
        &probe,
        "--",
        "sh",
        "-c",
        &script,
    ]))
    .await;
    assert_eq!(
        out.code(),
        Some(3),
        "exit code passes through: {}",
        out.stderr
    );
    assert!(out.stdout.contains(&ips[2].to_string()), "{}", out.stdout);
    assert!(out.stdout.contains("eth0"), "{}", out.stdout);
    assert!(
        !Netns::list_named(&probe).unwrap().contains(&probe),
        "probe namespace removed"
    );
    assert!(
        !Path::new("/etc/netns").join(&probe).exists(),
        "probe hosts dir removed"
    );

    // A command that cannot start: a failure, and nothing is left behind.
    let out = output(hosts[0].run(&[
        "container",
        "run",
        "--net",
        "my-net",
        "--name",
        &probe,
        "--",
        "/nonexistent/cmd",
    ]))
    .await;
    assert_eq!(out.code(), Some(1), "{}", out.stderr);
    assert!(out.stderr.contains("cannot start"), "{}", out.stderr);
    assert!(
        !Netns::list_named(&probe).unwrap().contains(&probe),
        "probe namespace removed"
    );

    // SIGTERM or Ctrl-C stops a container: its command ends, it leaves the network, its
    // namespace goes.
    for (i, (c, name)) in containers.iter_mut().zip(&names).enumerate() {
        let sig = if i % 2 == 0 {
            libc::SIGTERM
        } else {
            libc::SIGINT
        };
        let status = c.stop_with(sig).await;
        assert!(
            status.code().is_some(),
            "{name} exited by itself: {status:?}"
        );
        assert!(
            !Netns::list_named(name).unwrap().contains(name),
            "{name} namespace removed"
        );
    }
    let doc = inspect(&hosts[1]).await;
    assert_eq!(
        doc[0]["Containers"].as_object().map(|c| c.len()),
        Some(0),
        "{doc}"
    );

    ok(hosts[1].run(&["network", "rm", "my-net"])).await;
    let quiet = ok(hosts[0].run(&["network", "ls", "-q"])).await;
    assert!(!quiet.contains(&id[..12]), "{quiet}");

    // Agents stop cleanly on SIGTERM and take their socket with them.
    for (agent, h) in agents.iter_mut().zip(hosts) {
        let status = agent.stop().await;
        assert!(status.success(), "{}: {status:?}", agent.what);
        assert!(!h.socket.exists(), "socket removed");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_embedded() {
    walkthrough("walkthrough_embedded", "embedded").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_etcd() {
    walkthrough("walkthrough_etcd", "etcd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_zookeeper() {
    walkthrough("walkthrough_zookeeper", "zookeeper").await;
}
