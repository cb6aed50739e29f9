//! Data plane benchmark: endpoint attach latency, peer programming rate and resync time, with
//! the CNI reference `bridge` plugin (host-local IPAM) doing the same attaches as the baseline;
//! then the gateway interface with NAT and one published port per container, with CNI's
//! `bridge` (isGateway, ipMasq) + `portmap` chain doing the same.
//!
//! Run as root (it creates namespaces, all removed at the end, even on failure):
//!
//! ```sh
//! cargo bench --bench dataplane_bench
//! ```
//!
//! Needs Debian's `containernetworking-plugins` (binaries in /usr/lib/cni) and `iptables` (which
//! `portmap` runs) for the baseline; `CNI_PATH` overrides the directory.

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use overlay::dataplane::{
    AttachSpec, Dataplane, GatewaySpec, NetlinkDataplane, Netns, Peer, PublishedPort, SandboxSpec,
};
use overlay::model::{MacAddr, NetworkId, PortProto, Vni};

const ENDPOINTS: usize = 200;
const PEERS: usize = 10_000;

/// Removes every namespace of this run when dropped.
struct Cleanup {
    prefixes: Vec<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.prefixes {
            for name in Netns::list_named(p).unwrap_or_default() {
                if let Err(e) = Netns::delete_named(&name) {
                    eprintln!("cleanup: {name}: {e}");
                }
            }
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A host namespace with a 1500-MTU underlay interface holding `vtep`.
async fn make_host(name: &str, vtep: Ipv4Addr) -> Result<Netns, Box<dyn std::error::Error>> {
    let (ns, _) = Netns::create_named(name)?;
    let fd = ns.try_clone()?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    // Set up from a thread inside the host namespace.
    std::thread::spawn(move || {
        let run = || -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
            fd.enter()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let (conn, handle, _) = rtnetlink::new_connection()?;
                tokio::spawn(conn);
                let veth = rtnetlink::LinkVeth::new("under0", "under1").build();
                handle.link().add(veth).execute().await?;
                for name in ["under0", "under1", "lo"] {
                    let mut links = handle.link().get().match_name(name.to_string()).execute();
                    let idx = links.try_next().await?.ok_or("link vanished")?.header.index;
                    let up = rtnetlink::LinkUnspec::new_with_index(idx).up().build();
                    handle.link().set(up).execute().await?;
                    if name == "under0" {
                        handle
                            .address()
                            .add(idx, IpAddr::V4(vtep), 24)
                            .execute()
                            .await?;
                    }
                }
                Ok(())
            })
        };
        let _ = tx.send(run().map_err(|e| e.to_string()));
    });
    rx.await?.map_err(|e| format!("underlay setup: {e}"))?;
    Ok(ns)
}

/// One CNI call of `plugin`, run inside the host namespace: how long it took and its result.
fn cni_plugin(
    plugin: &str,
    command: &str,
    host: &Netns,
    container: &Netns,
    id: &str,
    config: &str,
    cni_path: &str,
) -> Result<(Duration, String), String> {
    let host_fd = host.raw_fd();
    let started = Instant::now();
    let mut cmd = Command::new(format!("{cni_path}/{plugin}"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", id)
        .env("CNI_NETNS", container.path())
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", cni_path)
        // portmap and the bridge's ipMasq run iptables.
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: only setns (async-signal-safe) runs between fork and exec; the fd stays open in
    // the parent for the child's lifetime.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(host_fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("run {cni_path}/{plugin}: {e}"))?;
    child
        .stdin
        .take()
        .ok_or("no stdin")?
        .write_all(config.as_bytes())
        .map_err(|e| e.to_string())?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if !out.status.success() {
        return Err(format!(
            "CNI {plugin} {command} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).into_owned()))
}

/// The gateway measurements: per container, the interface on the gateway bridge with NAT and
/// one more published port (ours), and CNI's bridge (isGateway, ipMasq) + portmap chain.
async fn gateway(
    dp: &NetlinkDataplane,
    host: &Netns,
    ours: &[Netns],
    theirs: &[Netns],
    cni_path: &str,
) -> Result<(Vec<Duration>, Result<Vec<Duration>, String>), Box<dyn std::error::Error>> {
    let spec = GatewaySpec::new("172.30.0.0/16".parse()?);
    dp.ensure_gateway(&spec).await?;
    let mut ports = Vec::new();
    let mut times = Vec::with_capacity(ours.len());
    for (i, c) in ours.iter().enumerate() {
        let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 30, 0, 2)) + i as u32);
        let mut attach = AttachSpec::new(c.path(), ipnet::Ipv4Net::new(ip, 16)?);
        attach.ifname = "eth1".into();
        ports.push(PublishedPort {
            proto: PortProto::Tcp,
            host_ip: None,
            host_port: 20000 + i as u16,
            container_ip: ip,
            container_port: 80,
        });
        let t = Instant::now();
        dp.attach_gateway(&spec, &attach).await?;
        dp.publish(&spec, &ports).await?;
        times.push(t.elapsed());
    }
    dp.remove_gateway(&spec).await?;

    let ipam_dir = tempfile::tempdir()?;
    let name = format!("gwbench{}", std::process::id());
    let bridge = serde_json::json!({
        "cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": "cnigw0",
        "isGateway": true, "ipMasq": true,
        "ipam": {"type": "host-local", "subnet": "10.202.0.0/16", "dataDir": ipam_dir.path()},
    });
    let portmap = |i: usize, prev: Option<serde_json::Value>| {
        let mut c = serde_json::json!({
            "cniVersion": "1.0.0", "name": name, "type": "portmap",
            "capabilities": {"portMappings": true},
            "runtimeConfig": {"portMappings": [
                {"hostPort": 20000 + i, "containerPort": 80, "protocol": "tcp"}]},
        });
        if let Some(p) = prev {
            c["prevResult"] = p;
        }
        c.to_string()
    };
    let mut cni_times = Vec::with_capacity(theirs.len());
    let mut added = 0;
    let mut failed = None;
    for (i, c) in theirs.iter().enumerate() {
        let id = format!("gw{i}");
        let run = || -> Result<Duration, String> {
            let (t1, result) =
                cni_plugin("bridge", "ADD", host, c, &id, &bridge.to_string(), cni_path)?;
            let prev: serde_json::Value =
                serde_json::from_str(&result).map_err(|e| e.to_string())?;
            let (t2, _) = cni_plugin(
                "portmap",
                "ADD",
                host,
                c,
                &id,
                &portmap(i, Some(prev)),
                cni_path,
            )?;
            Ok(t1 + t2)
        };
        match run() {
            Ok(d) => {
                cni_times.push(d);
                added += 1;
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    for (i, c) in theirs.iter().enumerate().take(added) {
        let id = format!("gw{i}");
        let _ = cni_plugin("portmap", "DEL", host, c, &id, &portmap(i, None), cni_path);
        let _ = cni_plugin("bridge", "DEL", host, c, &id, &bridge.to_string(), cni_path);
    }
    Ok((times, failed.map_or(Ok(cni_times), Err)))
}

fn peers(n: usize) -> Vec<Peer> {
    (0..n)
        .map(|i| {
            let ip = Ipv4Addr::new(10, 50, (i / 250) as u8, (i % 250 + 1) as u8);
            let vtep = Ipv4Addr::new(192, 0, 2, (i % 200 + 2) as u8);
            Peer {
                ip: IpAddr::V4(ip),
                mac: MacAddr::from_ipv4(ip),
                vtep: IpAddr::V4(vtep),
            }
        })
        .collect()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid != 0 {
        return Err("dataplane_bench needs root: cargo bench --bench dataplane_bench".into());
    }
    let cni_path = std::env::var("CNI_PATH").unwrap_or_else(|_| "/usr/lib/cni".to_string());
    let pid = std::process::id();
    let tag = format!("bench{pid}z");
    let _cleanup = Cleanup {
        prefixes: vec![format!("ovlbench-{pid}-"), format!("ovl-{tag}-")],
    };
    let vtep = Ipv4Addr::new(192, 0, 2, 1);
    let host = make_host(&format!("ovlbench-{pid}-host"), vtep).await?;
    let dp = NetlinkDataplane::in_namespace(&tag, &host).await?;
    let network = NetworkId::random();
    let vni = Vni::new(4242)?;
    let t = Instant::now();
    let sandbox = dp
        .ensure_sandbox(&SandboxSpec::new(network, vni, IpAddr::V4(vtep)))
        .await?;
    let ensure = t.elapsed();
    println!(
        "sandbox {} (VNI {vni}, MTU {:?})",
        sandbox.netns_name, sandbox.mtu
    );

    // Containers (not timed): one set for overlay, one for CNI.
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for i in 0..ENDPOINTS {
        ours.push(Netns::create_named(&format!("ovlbench-{pid}-o{i}"))?.0);
        theirs.push(Netns::create_named(&format!("ovlbench-{pid}-c{i}"))?.0);
    }

    let mut attach = Vec::with_capacity(ENDPOINTS);
    for (i, c) in ours.iter().enumerate() {
        let ip = Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8);
        let spec = AttachSpec::new(c.path(), format!("{ip}/16").parse()?);
        let t = Instant::now();
        dp.attach(&network, &spec).await?;
        attach.push(t.elapsed());
    }
    attach.sort();

    let ipam_dir = tempfile::tempdir()?;
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": format!("bench{pid}"),
        "type": "bridge",
        "bridge": "cnibench0",
        "isGateway": false,
        "ipMasq": false,
        "mtu": 1450,
        "ipam": {"type": "host-local", "subnet": "10.201.0.0/16", "dataDir": ipam_dir.path()},
    })
    .to_string();
    let mut cni_add = Vec::with_capacity(ENDPOINTS);
    let mut cni_error = None;
    for (i, c) in theirs.iter().enumerate() {
        match cni_plugin(
            "bridge",
            "ADD",
            &host,
            c,
            &format!("bench{i}"),
            &config,
            &cni_path,
        ) {
            Ok((d, _)) => cni_add.push(d),
            Err(e) => {
                cni_error = Some(e);
                break;
            }
        }
    }
    cni_add.sort();
    for (i, c) in theirs.iter().enumerate().take(cni_add.len()) {
        let _ = cni_plugin(
            "bridge",
            "DEL",
            &host,
            c,
            &format!("bench{i}"),
            &config,
            &cni_path,
        );
    }

    let all = peers(PEERS);
    let t = Instant::now();
    dp.add_peers(&network, &all).await?;
    let program = t.elapsed();
    let t = Instant::now();
    let present: HashSet<Peer> = dp.list_peers(&network).await?.into_iter().collect();
    let desired: HashSet<Peer> = all.iter().copied().collect();
    let missing = desired.difference(&present).count();
    let extra = present.difference(&desired).count();
    let resync = t.elapsed();
    let t = Instant::now();
    dp.add_peers(&network, &all).await?;
    let readd = t.elapsed();

    let (p50, p99) = (percentile(&attach, 0.5), percentile(&attach, 0.99));
    println!();
    println!("| measurement | overlay | CNI bridge + host-local | goal | met |");
    println!("|---|---|---|---|---|");
    let yes = |b: bool| if b { "yes" } else { "NO" };
    if let Some(e) = &cni_error {
        println!(
            "(CNI baseline failed after {} attaches: {e})",
            cni_add.len()
        );
    }
    let (c50, c99) = if cni_add.is_empty() {
        (None, None)
    } else {
        (
            Some(percentile(&cni_add, 0.5)),
            Some(percentile(&cni_add, 0.99)),
        )
    };
    let show = |d: Option<Duration>| d.map_or("n/a".to_string(), |d| format!("{:.2} ms", ms(d)));
    let ratio = c50.map(|c| ms(p50) / ms(c));
    println!(
        "| attach p50 ({ENDPOINTS} endpoints) | {:.2} ms | {} | < 3 ms | {} |",
        ms(p50),
        show(c50),
        yes(ms(p50) < 3.0)
    );
    println!("| attach p99 | {:.2} ms | {} | | |", ms(p99), show(c99));
    println!(
        "| create sandbox (netns + bridge + vxlan) | {:.2} ms | | | |",
        ms(ensure)
    );
    let mut detach = Vec::with_capacity(ENDPOINTS);
    for c in &ours {
        let t = Instant::now();
        dp.detach(&network, c.path(), "eth0").await?;
        detach.push(t.elapsed());
    }
    detach.sort();
    println!(
        "| detach p50 | {:.2} ms | | | |",
        ms(percentile(&detach, 0.5))
    );
    println!(
        "| attach p50 ratio overlay/CNI | {} | 1 | < 0.2 | {} |",
        ratio.map_or("n/a".into(), |r| format!("{r:.3}")),
        yes(ratio.is_some_and(|r| r < 0.2))
    );
    println!(
        "| program {PEERS} peers | {:.0} ms ({:.0} peers/s) | | < 2 s | {} |",
        ms(program),
        PEERS as f64 / program.as_secs_f64(),
        yes(program < Duration::from_secs(2))
    );
    println!(
        "| resync: list + diff ({} present, {missing} missing, {extra} extra) | {:.0} ms | | < 0.5 s | {} |",
        present.len(),
        ms(resync),
        yes(resync < Duration::from_millis(500) && missing == 0 && extra == 0)
    );
    println!(
        "| re-add all {PEERS} peers (converge, no change) | {:.0} ms | | | |",
        ms(readd)
    );

    let (mut gw, cni_gw) = gateway(&dp, &host, &ours, &theirs, &cni_path).await?;
    gw.sort();
    let (g50, g99) = (percentile(&gw, 0.5), percentile(&gw, 0.99));
    match cni_gw {
        Ok(mut c) if !c.is_empty() => {
            c.sort();
            let (c50, c99) = (percentile(&c, 0.5), percentile(&c, 0.99));
            println!(
                "| gateway attach + NAT + 1 published port p50 | {:.2} ms | {:.2} ms (bridge + portmap) | | |",
                ms(g50),
                ms(c50)
            );
            println!(
                "| gateway attach p99 | {:.2} ms | {:.2} ms | | |",
                ms(g99),
                ms(c99)
            );
            println!(
                "| gateway attach p50 ratio overlay/CNI | {:.3} | 1 | | |",
                ms(g50) / ms(c50)
            );
        }
        Ok(_) => println!("(CNI gateway baseline made no attach)"),
        Err(e) => {
            println!(
                "| gateway attach + NAT + 1 published port p50 | {:.2} ms | n/a | | |",
                ms(g50)
            );
            println!("(CNI gateway baseline failed: {e})");
        }
    }

    dp.remove_sandbox(&network).await?;
    Ok(())
}
