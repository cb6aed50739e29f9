//! A lab on one machine: simulated hosts and containers as named network namespaces, hosts
//! joined by a veth "underlay", for examples, tests and benchmarks (the seed walkthrough needs
//! two hosts; one machine can play both).
//!
//! Everything a [`Lab`] makes carries its prefix, and dropping the lab removes all of it
//! (namespaces, and the overlay sandboxes of hosts whose id starts with the prefix), also when
//! a test fails half-way. Removal keeps going after a failure and reports every failure.

use std::net::IpAddr;
use std::sync::Mutex;

use ipnet::Ipv4Net;
use netlink_packet_route::link::{InfoData, InfoVeth};
use rtnetlink::{LinkUnspec, LinkVeth};

use super::conn::NlConn;
use super::errors::{Failures, nl_failure};
use super::link::{self, LinkChange};
use super::netns::{Netns, run_on_thread};
use crate::error::{Error, ErrorKind, Result};

/// Index of `lo` in every network namespace.
const LOOPBACK: u32 = 1;

/// A set of namespaces made for one demo or test run.
#[derive(Debug)]
pub struct Lab {
    prefix: String,
    made: Mutex<Vec<String>>,
}

impl Lab {
    /// A lab whose namespaces are named `<prefix>-<name>`. Pick a prefix unique to the run
    /// (e.g. with the process id) and short: names end up in interface names.
    pub fn new(prefix: &str) -> Result<Lab> {
        if prefix.is_empty()
            || prefix.len() > 16
            || !prefix.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(
                Error::invalid("create lab", format!("lab prefix {prefix:?} is invalid"))
                    .with_hint("use 1 to 16 letters or digits"),
            );
        }
        Ok(Lab {
            prefix: prefix.to_string(),
            made: Mutex::new(Vec::new()),
        })
    }

    /// The lab's prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// A host id for a simulated host of this lab: `<prefix>_<name>`. The lab cleans up the
    /// sandboxes of hosts named so.
    pub fn host_id(&self, name: &str) -> String {
        format!("{}_{name}", self.prefix)
    }

    /// Creates (or reuses a leftover of) the namespace `<prefix>-<name>` with `lo` up.
    pub async fn namespace(&self, name: &str) -> Result<Netns> {
        let full = format!("{}-{name}", self.prefix);
        let (ns, _) = Netns::create_named(&full)?;
        crate::sync::lock(&self.made).push(full.clone());
        let conn = NlConn::open(Some(&ns), &full).await?;
        link::set_link(
            &conn,
            LOOPBACK,
            &LinkChange {
                up: true,
                ..LinkChange::default()
            },
        )
        .await?;
        Ok(ns)
    }

    /// Two new namespaces `a` and `b` joined by an [`underlay`](Lab::underlay): `a` at
    /// 198.51.100.1/24 and `b` at 198.51.100.2/24 (TEST-NET-2, a documentation range, so the
    /// lab never clashes with a real network).
    pub async fn two_hosts(&self, a: &str, b: &str) -> Result<(Netns, Netns)> {
        let na = self.namespace(a).await?;
        let nb = self.namespace(b).await?;
        let (a_addr, b_addr) = (
            Ipv4Net::new([198, 51, 100, 1].into(), 24).expect("a /24 is a valid prefix"),
            Ipv4Net::new([198, 51, 100, 2].into(), 24).expect("a /24 is a valid prefix"),
        );
        self.underlay(&na, a_addr, &nb, b_addr).await?;
        Ok((na, nb))
    }

    /// Joins two hosts with a veth pair named `underlay0` on both sides, the peer born in
    /// `b` by one request, each end with its address, both up.
    pub async fn underlay(
        &self,
        a: &Netns,
        a_addr: Ipv4Net,
        b: &Netns,
        b_addr: Ipv4Net,
    ) -> Result<()> {
        let name = "underlay0";
        let ca = NlConn::open(Some(a), &a.path().display().to_string()).await?;
        let cb = NlConn::open(Some(b), &b.path().display().to_string()).await?;
        // Both ends take the same name; the peer is born in `b`.
        let peer = LinkUnspec::new_with_name(name)
            .setns_by_fd(b.raw_fd())
            .build();
        let m = LinkVeth::new(name, name)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .build();
        ca.add_link(m).await.map_err(|e| {
            nl_failure(
                e,
                "create underlay",
                format!(
                    "veth {name} between {} and {}",
                    a.path().display(),
                    b.path().display()
                ),
                ca.label(),
            )
        })?;
        for (conn, addr) in [(&ca, a_addr), (&cb, b_addr)] {
            let l = link::get_link(conn, name).await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::Kernel,
                    "create underlay",
                    format!("{name} vanished after creation"),
                )
            })?;
            link::add_address(conn, l.index, addr.into()).await?;
            link::set_link(
                conn,
                l.index,
                &LinkChange {
                    up: true,
                    ..LinkChange::default()
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Joins `hosts` on one LAN, for more hosts than [`Lab::underlay`]'s two: a bridge `lan`
    /// in namespace `<prefix>-lan`, and for each host a veth pair, `underlay0` in the host
    /// (born there, with its address) and `lanN` on the bridge. Returns the LAN's namespace.
    pub async fn lan(&self, hosts: &[(&Netns, Ipv4Net)]) -> Result<Netns> {
        let op = "create LAN";
        let lan = self.namespace("lan").await?;
        let conn = NlConn::open(Some(&lan), &lan.path().display().to_string()).await?;
        let bridge = "lan";
        conn.add_link(link::bridge_msg(
            bridge,
            1500,
            crate::model::MacAddr::from_hash(bridge.as_bytes()),
        ))
        .await
        .map_err(|e| nl_failure(e, op, format!("bridge {bridge}"), conn.label()))?;
        let bridge = link::get_link(&conn, bridge).await?.ok_or_else(|| {
            Error::new(
                ErrorKind::Kernel,
                op,
                format!("{bridge} vanished after creation"),
            )
        })?;
        for (i, (host, addr)) in hosts.iter().enumerate() {
            let name = "underlay0";
            let port = format!("lan{i}");
            let peer = LinkUnspec::new_with_name(name)
                .setns_by_fd(host.raw_fd())
                .build();
            let m = LinkVeth::new(&port, name)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .controller(bridge.index)
                .up()
                .build();
            conn.add_link(m).await.map_err(|e| {
                nl_failure(
                    e,
                    op,
                    format!("veth {port} to {}", host.path().display()),
                    conn.label(),
                )
            })?;
            // The host's end comes up from inside its namespace (see `underlay`).
            let hc = NlConn::open(Some(host), &host.path().display().to_string()).await?;
            let l = link::get_link(&hc, name).await?.ok_or_else(|| {
                Error::new(
                    ErrorKind::Kernel,
                    op,
                    format!("{name} vanished after creation"),
                )
            })?;
            link::add_address(&hc, l.index, (*addr).into()).await?;
            link::set_link(
                &hc,
                l.index,
                &LinkChange {
                    up: true,
                    ..LinkChange::default()
                },
            )
            .await?;
        }
        Ok(lan)
    }

    /// Removes everything the lab made, and the sandboxes of hosts named with its prefix.
    /// Keeps going after a failure and reports all of them.
    pub fn cleanup(&self) -> Result<()> {
        let mut failures = Failures::default();
        let made: Vec<String> = std::mem::take(&mut *crate::sync::lock(&self.made));
        // Sandboxes of host `<prefix>_x` are named `ovl-<prefix>_x-<net>`.
        let tag_prefix = format!("{}_", self.prefix);
        let ours = super::sandbox::prefix(&tag_prefix);
        let sandboxes = Netns::list_named(ours.trim_end_matches('-')).unwrap_or_default();
        for name in made.into_iter().chain(sandboxes) {
            failures.record(Netns::delete_named(&name));
        }
        failures.finish("clean up lab")
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Err(e) = self.cleanup() {
            eprintln!("lab {}: {e}", self.prefix);
        }
    }
}

/// Runs `f` on a fresh thread inside `ns` (sockets it opens live in that namespace) and
/// returns its result.
pub fn run_in<T: Send + 'static>(
    ns: &Netns,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let ns = ns.try_clone()?;
    run_on_thread(move || {
        ns.enter()?;
        f()
    })
}

/// Spawns a thread inside `ns` that keeps running `f`; for servers in simulated containers.
pub fn spawn_in(
    ns: &Netns,
    f: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>> {
    let ns = ns.try_clone()?;
    std::thread::Builder::new()
        .name("overlay-lab".into())
        .spawn(move || {
            if ns.enter().is_ok() {
                f();
            }
        })
        .map_err(|e| Error::io("spawn lab thread", "cannot start a thread", e))
}

/// Whether `ip` answers in the container namespace `ns`: a TCP connect to `port` that is
/// refused still proves the path works, a timeout does not.
pub fn reachable(ns: &Netns, ip: IpAddr, port: u16, timeout: std::time::Duration) -> Result<bool> {
    run_in(ns, move || {
        match std::net::TcpStream::connect_timeout(&(ip, port).into(), timeout) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Ok(true),
            Err(_) => Ok(false),
        }
    })
}
