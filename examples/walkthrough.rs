//! The seed's walkthrough (Docker 1.9 multi-host networking), on one machine, no server needed.
//!
//! Run it as root (it creates network namespaces):
//!
//! ```sh
//! sudo cargo run --example walkthrough
//! ```
//!
//! Two hosts (namespaces joined by a veth underlay) share the embedded store. Host 1 creates
//! `my-net`; both hosts list it with the same id; zookeeper1 and zookeeper3 start on host 1,
//! zookeeper2 and zookeeper4 on host 2 (containers are namespaces); the example prints
//! zookeeper2's hosts file and `inspect my-net`, proves that every container reaches every
//! other by `name` and by `name.my-net` with a real TCP exchange, then removes everything.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use overlay::dataplane::Netns;
use overlay::dataplane::lab::{self, Lab};
use overlay::{ContainerSpec, Controller, ControllerOptions, NetnsRef, NetworkSummary};
use overlay::{Error, ErrorKind, Result};

/// ZooKeeper's client port: each simulated container answers on it.
const PORT: u16 = 2181;

struct Container {
    name: &'static str,
    host: usize,
    id: String,
    ns: Netns,
    hosts_file: PathBuf,
}

fn print_ls(host: &str, rows: &[NetworkSummary]) {
    println!("[root@{host} ~]# docker network ls");
    println!("NETWORK ID          NAME                DRIVER              SCOPE");
    for r in rows {
        println!(
            "{:<20}{:<20}{:<20}{}",
            &r.id[..12],
            r.name,
            r.driver,
            r.scope
        );
    }
    println!();
}

/// Looks `name` up the way the container's resolver would: in its own hosts file.
fn lookup(hosts_file: &Path, name: &str) -> Option<IpAddr> {
    let text = std::fs::read_to_string(hosts_file).ok()?;
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let ip = words.next()?.parse().ok()?;
        words.any(|w| w == name).then_some(ip)
    })
}

/// Waits until every container's hosts file names every other container.
fn converge(containers: &[Container]) -> Result<Duration> {
    let start = Instant::now();
    loop {
        let done = containers.iter().all(|c| {
            containers
                .iter()
                .filter(|o| o.name != c.name)
                .all(|o| lookup(&c.hosts_file, &format!("{}.my-net", o.name)).is_some())
        });
        if done {
            return Ok(start.elapsed());
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(Error::new(
                ErrorKind::Timeout,
                "walkthrough",
                "hosts files did not converge in 5 s",
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A tiny server in the container: answers each line with `<name> got: <line>`.
fn serve(c: &Container) -> Result<()> {
    let name = c.name;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    lab::spawn_in(&c.ns, move || {
        let listener = match TcpListener::bind(("0.0.0.0", PORT)) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = ready_tx.send(Ok(()));
        for stream in listener.incoming().flatten() {
            let mut line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut line).is_ok() {
                let _ = (&stream).write_all(format!("{name} got: {line}").as_bytes());
            }
        }
    })?;
    ready_rx
        .recv()
        .map_err(|_| Error::internal("walkthrough", "server thread died"))?
        .map_err(|e| Error::io("walkthrough", format!("{name} cannot listen on {PORT}"), e))
}

/// From inside `from`, connects to `to_name` as `from`'s hosts file resolves it and talks.
fn talk(from: &Container, to_name: &str) -> Result<String> {
    let ip = lookup(&from.hosts_file, to_name).ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            "walkthrough",
            format!("{} cannot resolve {to_name}", from.name),
        )
    })?;
    let msg = format!("hello {to_name} from {}\n", from.name);
    lab::run_in(&from.ns, move || {
        let io = |e| Error::io("walkthrough", format!("TCP to {ip}:{PORT}"), e);
        let mut s =
            TcpStream::connect_timeout(&(ip, PORT).into(), Duration::from_secs(2)).map_err(io)?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(io)?;
        s.write_all(msg.as_bytes()).map_err(io)?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).map_err(io)?;
        Ok(reply.trim_end().to_string())
    })
}

async fn run() -> Result<()> {
    let started = Instant::now();
    let lab = Lab::new(&format!("wt{}", std::process::id()))?;
    let dir = tempfile::tempdir().map_err(|e| Error::io("walkthrough", "temp dir", e))?;
    let store = format!("file://{}/store.db", dir.path().display());

    // Two hosts on one underlay, as 10.211.55.13 and .16 were in the seed.
    let hosts = [lab.namespace("host1").await?, lab.namespace("host2").await?];
    let addrs = ["192.0.2.13", "192.0.2.16"];
    lab.underlay(
        &hosts[0],
        "192.0.2.13/24".parse().unwrap(),
        &hosts[1],
        "192.0.2.16/24".parse().unwrap(),
    )
    .await?;
    let mut ctls = Vec::new();
    for (i, ns) in hosts.iter().enumerate() {
        ctls.push(
            Controller::open(
                ControllerOptions::new(store.clone())
                    .advertise(addrs[i])
                    .host_id(lab.host_id(&format!("host{}", i + 1)))
                    .host_netns(ns.path())
                    // Each host's own state (its containers' paths) beside the store, removed
                    // with it.
                    .state_dir(dir.path().join(format!("host{}-state", i + 1))),
            )
            .await?,
        );
    }

    println!("[root@host1 ~]# docker network create --driver overlay my-net");
    let net = ctls[0]
        .create_network("my-net", &Default::default())
        .await?;
    println!("{}\n", net.id);
    print_ls("host1", &ctls[0].networks().await?);
    print_ls("host2", &ctls[1].networks().await?);

    let mut containers = Vec::new();
    for (name, host) in [
        ("zookeeper1", 0),
        ("zookeeper3", 0),
        ("zookeeper2", 1),
        ("zookeeper4", 1),
    ] {
        let id = overlay::model::EndpointId::random().to_string();
        let ns = lab.namespace(name).await?;
        let hosts_file = dir.path().join(format!("{name}.hosts"));
        let ep = ctls[host]
            .connect(
                "my-net",
                &ContainerSpec::new(id.clone(), name, NetnsRef::Path(ns.path().to_path_buf()))
                    .hosts_file(hosts_file.clone()),
            )
            .await?;
        println!(
            "[root@host{} ~]# docker run --name {name} --net=my-net -d jplock/zookeeper",
            host + 1
        );
        let ip = ep.ipv4().map(|a| a.to_string()).unwrap_or_default();
        println!("{}    ({ip} on {})", id, ctls[host].host_id());
        containers.push(Container {
            name,
            host,
            id,
            ns,
            hosts_file,
        });
    }
    let took = converge(&containers)?;
    println!("\n(all hosts files converged {took:.0?} after the last connect)\n");

    let zk2 = &containers[2];
    println!("[root@{} /]# cat /etc/hosts", &zk2.id[..12]);
    print!(
        "{}",
        std::fs::read_to_string(&zk2.hosts_file).map_err(|e| Error::io(
            "walkthrough",
            "read hosts",
            e
        ))?
    );
    println!("\n[root@host1 ~]# docker network inspect my-net");
    let doc = ctls[0].inspect("my-net").await?;
    let json = serde_json::to_string_pretty(&[doc])
        .map_err(|e| Error::internal("walkthrough", e.to_string()))?;
    println!("{json}\n");

    for c in &containers {
        serve(c)?;
    }
    let mut replies = BTreeMap::new();
    for from in &containers {
        for to in containers.iter().filter(|t| t.name != from.name) {
            for name in [to.name.to_string(), format!("{}.my-net", to.name)] {
                let reply = talk(from, &name)?;
                if reply != format!("{} got: hello {name} from {}", to.name, from.name) {
                    return Err(Error::internal(
                        "walkthrough",
                        format!("unexpected reply {reply:?}"),
                    ));
                }
                replies.insert((from.name, name), reply);
            }
        }
    }
    println!("TCP by name and by name.my-net, each container to every other:");
    for ((from, to), reply) in &replies {
        println!("  {from:<11} -> {to:<18} {reply}");
    }
    println!("{} exchanges, all answered.\n", replies.len());

    for c in &containers {
        ctls[c.host].disconnect("my-net", &c.id).await?;
    }
    ctls[1].remove_network("my-net").await?;
    for ctl in &ctls {
        ctl.close().await?;
    }
    drop(containers);
    lab.cleanup()?;
    println!(
        "removed everything; walkthrough took {:.1?}",
        started.elapsed()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    if !nix_is_root() {
        eprintln!("walkthrough: this needs root (it creates network namespaces); run it with sudo");
        return ExitCode::from(2);
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("walkthrough failed: {e}");
            ExitCode::FAILURE
        }
    }
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
