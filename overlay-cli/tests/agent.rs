//! The host agent as a person runs it: `overlayctl agent status` while the store goes away and
//! comes back, and a shutdown (SIGTERM) in the middle of connects.
//!
//! Needs root. The etcd test server is started by `overlay-testkit`.

mod support;

use std::time::Duration;

use overlay_core::dataplane::lab::Lab;
use overlay_testkit::EtcdServer;
use serde_json::Value;
use support::{Host, NamespaceSweep, agent, ok, output, wait_until};

/// Bounds that only keep a broken build from hanging.
const CONVERGE: Duration = Duration::from_secs(15);

/// One host in namespace `<prefix>-host1` on `url`, with its files in `dir`.
async fn host(lab: &Lab, dir: &std::path::Path, url: &str) -> Host {
    let config = dir.join("config.toml");
    std::fs::write(&config, "").unwrap();
    Host {
        ns: lab.namespace("host1").await.expect("host1"),
        socket: dir.join("host1.sock"),
        store: url.to_string(),
        config,
    }
}
/// `overlayctl agent status` on a host whose etcd is killed and restarted: every task running
/// and the store reachable; then the store unreachable (exit code 1); then healthy again,
/// without restarting the agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_status_follows_the_store() {
    let test = "agent_status_follows_the_store";
    overlay_testkit::require_root(test);
    let mut server = EtcdServer::start_local();
    let url = server.url_with("timeout=1s&ttl=2s");
    let prefix = format!("s{:x}", std::process::id());
    let _sweep = NamespaceSweep(prefix.clone());
    let lab = Lab::new(&prefix).expect("lab");
    let dir = tempfile::tempdir().expect("temp dir");
    let host = host(&lab, dir.path(), &url).await;
    let mut agent = agent(&host, &lab.host_id("host1"), "198.51.100.1").await;
    let status = async || {
        let out = output(host.run(&["agent", "status", "--json"])).await;
        let health: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("status --json printed {:?}: {e}", out.stdout));
        (out.code(), health)
    };
    let healthy = async || {
        let (code, h) = status().await;
        code == Some(0)
            && h["healthy"] == true
            && h["tasks"]
                .as_array()
                .is_some_and(|t| t.len() >= 3 && t.iter().all(|t| t["state"] == "running"))
    };
    wait_until("every task healthy", CONVERGE, healthy).await;
    let table = ok(host.run(&["agent", "status"])).await;
    for line in [
        "store       reachable",
        "hosts",
        "networks",
        "sweep",
        "heal",
    ] {
        assert!(table.contains(line), "{line:?} in\n{table}");
    }
    // A request line over the limit is answered with an error, and the connection ends.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::UnixStream::connect(&host.socket)
            .await
            .expect("connect to the agent socket");
        let mut line = vec![b' '; overlay_core::rpc::MAX_REQUEST + 1];
        line.push(b'\n');
        s.write_all(&line).await.expect("send the long line");
        let mut answer = String::new();
        s.read_to_string(&mut answer)
            .await
            .expect("read the answer");
        let v: Value = serde_json::from_str(answer.trim()).expect("one JSON line, then EOF");
        assert_eq!(v["error"]["kind"], "invalid argument", "{answer}");
    }

    server.kill();
    wait_until("the store shows unreachable", CONVERGE, async || {
        let (code, h) = status().await;
        code == Some(1) && h["store_reachable"] == false && h["store_error"].is_string()
    })
    .await;
    server.restart();
    wait_until("healthy again after the restart", CONVERGE, healthy).await;
    assert!(agent.running(), "the agent kept running");
    agent.stop().await;
}

/// SIGTERM reaches the agent while `overlayctl network connect` requests are in flight: the
/// agent finishes (or rolls back) what it started before it exits, so every container is
/// connected in full (record in the store, interface in its namespace) or not at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_connects_leaves_no_half_connect() {
    let test = "shutdown_during_connects_leaves_no_half_connect";
    overlay_testkit::require_root(test);
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("file://{}/store.db", dir.path().display());
    let prefix = format!("q{:x}", std::process::id());
    let _sweep = NamespaceSweep(prefix.clone());
    let lab = Lab::new(&prefix).expect("lab");
    let host = host(&lab, dir.path(), &url).await;
    let id = lab.host_id("host1");
    let mut first = agent(&host, &id, "198.51.100.1").await;
    ok(host.run(&["network", "create", "my-net"])).await;
    first.stop().await;
    let store = overlay_core::store::connect_str(&url).await.unwrap();
    for round in 0..3u64 {
        let mut a = agent(&host, &id, "198.51.100.1").await;
        let mut clients = Vec::new();
        let mut boxes = Vec::new();
        for i in 0..4 {
            let name = format!("b{round}x{i}");
            let ns = lab.namespace(&name).await.unwrap();
            let full = ns
                .path()
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            clients.push(support::Proc::spawn(
                host.run(&["network", "connect", "my-net", &full]),
                &format!("connect {full}"),
            ));
            boxes.push((full, ns));
        }
        tokio::time::sleep(Duration::from_millis(20 * round)).await;
        a.stop().await;
        drop(clients);
        let records = store.list("containers/").await.unwrap();
        for (full, _) in &boxes {
            let recorded = records
                .kvs
                .iter()
                .any(|kv| kv.key.ends_with(&format!("/{full}")));
            let link = std::process::Command::new("ip")
                .args(["-n", full, "link", "show", "eth0"])
                .output()
                .unwrap()
                .status
                .success();
            assert_eq!(
                link, recorded,
                "{full} after a shutdown in round {round}: record {recorded}, interface {link}"
            );
        }
    }
    store.close().await.unwrap();
}
