//! Kernel test support: simulated hosts and containers as namespaces the test creates, removed
//! by guards even when the test fails; traffic from threads that entered a container.

#![allow(dead_code, unreachable_pub)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use futures::TryStreamExt;
use overlay_core::dataplane::{NetlinkDataplane, Netns};
use rtnetlink::{LinkUnspec, LinkVeth};

/// A fresh tag unique to this process and call: `t<pid>x<n>z` (the `z` ends the number so
/// that no tag is a prefix of another).
pub fn unique_tag() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "t{}x{}z",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes every `/run/netns` entry with one of its prefixes when dropped.
pub struct NsGuard {
    prefixes: Vec<String>,
}

impl NsGuard {
    pub fn new(prefixes: Vec<String>) -> NsGuard {
        NsGuard { prefixes }
    }

    /// The entries still present (for cleanup assertions).
    pub fn remaining(&self) -> Vec<String> {
        self.prefixes
            .iter()
            .flat_map(|p| Netns::list_named(p).unwrap_or_default())
            .collect()
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        for name in self.remaining() {
            if let Err(e) = Netns::delete_named(&name) {
                eprintln!("cleanup: cannot delete namespace {name}: {e}");
            }
        }
    }
}

/// An rtnetlink handle inside `ns`, served by a thread that entered it (test setup only).
pub struct TestNl {
    pub handle: rtnetlink::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn netlink_in(ns: &Netns) -> TestNl {
    let ns = ns.try_clone().expect("dup namespace");
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        ns.enter().expect("enter namespace");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let (conn, handle, _) = rtnetlink::new_connection().expect("netlink socket");
            tx.send(handle).unwrap();
            tokio::select! {
                () = conn => {}
                _ = stopped => {}
            }
        });
    });
    TestNl {
        handle: rx.recv().expect("netlink thread"),
        _stop: stop,
    }
}

pub async fn link_index(nl: &TestNl, name: &str) -> u32 {
    let mut links = nl
        .handle
        .link()
        .get()
        .match_name(name.to_string())
        .execute();
    links
        .try_next()
        .await
        .expect("get link")
        .expect("link exists")
        .header
        .index
}

/// Joins `a` and `b` with a veth "underlay" and gives each end an address /24, both up.
pub async fn underlay(a: &Netns, b: &Netns, ip_a: Ipv4Addr, ip_b: Ipv4Addr) {
    let na = netlink_in(a);
    let nb = netlink_in(b);
    na.handle
        .link()
        .add(LinkVeth::new("under0", "underpeer").build())
        .execute()
        .await
        .unwrap();
    let peer = link_index(&na, "underpeer").await;
    let moved = LinkUnspec::new_with_index(peer)
        .setns_by_fd(b.raw_fd())
        .name("under0")
        .build();
    na.handle.link().set(moved).execute().await.unwrap();
    for (nl, ip) in [(&na, ip_a), (&nb, ip_b)] {
        let idx = link_index(nl, "under0").await;
        nl.handle
            .address()
            .add(idx, IpAddr::V4(ip), 24)
            .execute()
            .await
            .unwrap();
        nl.handle
            .link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .unwrap();
        let lo = link_index(nl, "lo").await;
        nl.handle
            .link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .unwrap();
    }
}

/// One simulated host: its namespace, VTEP address and data plane.
pub struct Host {
    pub ns: Netns,
    pub vtep: IpAddr,
    pub dp: NetlinkDataplane,
}

/// Two hosts joined by an underlay (192.0.2.1 and 192.0.2.2), plus containers on demand.
/// Fields drop in order: data planes (and their connections) first, then the namespaces.
pub struct World {
    pub tag: String,
    pub hosts: Vec<Host>,
    pub guard: NsGuard,
}

impl World {
    pub async fn two_hosts() -> World {
        let tag = unique_tag();
        let guard = NsGuard::new(vec![format!("ovlt-{tag}-"), format!("ovl-{tag}")]);
        let a = Netns::create_named(&format!("ovlt-{tag}-hosta")).unwrap().0;
        let b = Netns::create_named(&format!("ovlt-{tag}-hostb")).unwrap().0;
        let (ip_a, ip_b) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(192, 0, 2, 2));
        underlay(&a, &b, ip_a, ip_b).await;
        let mut hosts = Vec::new();
        for (ns, ip, t) in [(a, ip_a, "a"), (b, ip_b, "b")] {
            let dp = NetlinkDataplane::in_namespace(&format!("{tag}{t}"), &ns)
                .await
                .unwrap();
            hosts.push(Host {
                ns,
                vtep: IpAddr::V4(ip),
                dp,
            });
        }
        World { tag, hosts, guard }
    }

    /// A container namespace (with nothing in it yet).
    pub fn container(&self, name: &str) -> Netns {
        Netns::create_named(&format!("ovlt-{}-{name}", self.tag))
            .unwrap()
            .0
    }
}

/// Runs `f` on a thread that entered `ns` and returns its result.
pub fn in_ns<T: Send + 'static>(ns: &Netns, f: impl FnOnce() -> T + Send + 'static) -> T {
    overlay_testkit::in_netns(ns.path(), f).expect("enter the namespace")
}

const WAIT: Duration = Duration::from_secs(5);

/// A TCP round trip from `client` to a server in `server` on `ip`: what the server sent.
pub fn tcp_roundtrip(
    server: &Netns,
    ip: Ipv4Addr,
    client: &Netns,
    timeout: Duration,
) -> std::io::Result<String> {
    let greeter =
        overlay_testkit::TcpGreeter::start(server.path(), (ip, 0).into(), "hello over vxlan")?;
    let addr = SocketAddr::new(IpAddr::V4(ip), greeter.port());
    overlay_testkit::fetch(client.path(), addr, timeout).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from {addr}"),
        )
    })
}

/// Sends `size` bytes of UDP with DF set (IP_PMTUDISC_DO) from `client` to `server` on `ip`.
/// Returns the send error, or how many bytes the server received (None: nothing arrived).
pub fn udp_df(
    server: &Netns,
    ip: Ipv4Addr,
    client: &Netns,
    size: usize,
) -> std::io::Result<Option<usize>> {
    let (port_tx, port_rx) = mpsc::channel();
    let server_ns = server.try_clone().unwrap();
    let srv = std::thread::spawn(move || -> Option<usize> {
        server_ns.enter().unwrap();
        let s = UdpSocket::bind((ip, 0)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        port_tx.send(s.local_addr().unwrap().port()).unwrap();
        let mut buf = vec![0u8; 65536];
        let (n, from) = s.recv_from(&mut buf).ok()?;
        s.send_to(&buf[..n.min(16)], from).ok()?;
        Some(n)
    });
    let port = port_rx.recv().unwrap();
    let sent = in_ns(client, move || -> std::io::Result<()> {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
        let on: libc::c_int = libc::IP_PMTUDISC_DO;
        // SAFETY: a valid socket, option and int-sized value.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                (&raw const on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        s.send_to(&vec![0x5a; size], (ip, port))?;
        s.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut reply = [0u8; 64];
        s.recv_from(&mut reply)?;
        Ok(())
    });
    let received = srv.join().unwrap();
    match sent {
        Err(e) if received.is_none() => Err(e),
        _ => Ok(received),
    }
}

/// A counter from the `Ip:` lines of `/proc/net/snmp` as seen inside `ns`.
pub fn ip_counter(ns: &Netns, field: &'static str) -> u64 {
    in_ns(ns, move || {
        let text = std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap();
        let mut lines = text.lines().filter(|l| l.starts_with("Ip:"));
        let names: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let values: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        let i = names.iter().position(|n| *n == field).unwrap();
        values[i].parse().unwrap()
    })
}
