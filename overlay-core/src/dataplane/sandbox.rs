//! Network sandboxes: a namespace per network and host holding `br0` and `vxlan0`.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use netlink_packet_route::link::InfoKind;

use super::conn::{NlConn, Notifications};
use super::damage::SandboxCheck;
use super::endpoint::host_end_name;
use super::errors::{Failures, nl_failure};
use super::link::{
    LinkChange, LinkView, VxlanParams, add_address, bridge_msg, del_link, dump_addresses,
    dump_links, get_link, set_link, vxlan_msg,
};
use super::netns::{Netns, NetnsId};
use super::own::OwnDeletions;
use super::{SANDBOX_BRIDGE, SANDBOX_VXLAN, SandboxInfo, SandboxSpec};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{MacAddr, NetworkId, Vni};

/// VXLAN encapsulation overhead over an IPv4 underlay: outer IPv4 (20) + UDP (8) + VXLAN (8) +
/// inner Ethernet (14).
const OVERHEAD_V4: u32 = 50;
/// The same over an IPv6 underlay (outer header 40 bytes).
const OVERHEAD_V6: u32 = 70;

/// An open sandbox: its namespace, a netlink connection inside it, and its device indexes.
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub(crate) name: String,
    pub(crate) ns: Netns,
    pub(crate) conn: NlConn,
    pub(crate) bridge: u32,
    pub(crate) vxlan: u32,
    pub(crate) mtu: u32,
    /// The bridge's addresses (the network's gateways), checked with its links.
    pub(crate) addresses: Vec<IpNet>,
    /// Deletions made here whose reports are not damage (shared with the report forwarder).
    pub(crate) own: Arc<OwnDeletions>,
    /// What it was last made or checked to be; `None` when opened as found after a restart.
    pub(crate) spec: Option<SandboxSpec>,
    /// Set by the report forwarder when the kernel reports a link of it deleted: from then on
    /// it is checked again, not trusted.
    pub(crate) damaged: Arc<std::sync::atomic::AtomicBool>,
}

impl Sandbox {
    /// Its bridge, as containers are attached to it.
    pub(crate) fn bridge(&self) -> super::endpoint::Bridge<'_> {
        super::endpoint::Bridge {
            conn: &self.conn,
            index: self.bridge,
            mtu: self.mtu,
            label: &self.name,
            own: &self.own,
        }
    }

    pub(crate) fn info(&self, network: &NetworkId, vni: Option<Vni>) -> SandboxInfo {
        SandboxInfo {
            netns_name: self.name.clone(),
            netns_path: self.ns.path().to_path_buf(),
            network_short: network.short(),
            vni,
            mtu: Some(self.mtu),
        }
    }
}

/// The namespace-name prefix of every sandbox of host `tag`.
pub(crate) fn prefix(tag: &str) -> String {
    format!("ovl-{tag}-")
}

/// The namespace name of `network`'s sandbox on host `tag`.
pub(crate) fn sandbox_name(tag: &str, network: &NetworkId) -> String {
    format!("{}{}", prefix(tag), network.short())
}

/// MTU for the overlay: the one asked for, or the underlay's minus the encapsulation overhead.
pub(crate) async fn overlay_mtu(host: &NlConn, spec: &SandboxSpec) -> Result<u32> {
    if let Some(mtu) = spec.mtu {
        return crate::model::checked_mtu("ensure sandbox", mtu);
    }
    let addrs = dump_addresses(host).await?;
    let Some((index, _, _)) = addrs.iter().find(|(_, ip, _)| *ip == spec.vtep) else {
        return Err(Error::invalid(
            "ensure sandbox",
            format!(
                "VTEP address {} is not assigned to any interface in {}",
                spec.vtep,
                host.label()
            ),
        )
        .with_hint("pass this host's advertise address (an address of a local interface)"));
    };
    let links = dump_links(host).await?;
    let underlay = links
        .iter()
        .find(|l| l.index == *index)
        .and_then(|l| l.mtu)
        .ok_or_else(|| {
            Error::internal(
                "ensure sandbox",
                format!("interface {index} holding the VTEP has no MTU"),
            )
        })?;
    let overhead = if spec.vtep.is_ipv4() {
        OVERHEAD_V4
    } else {
        OVERHEAD_V6
    };
    underlay
        .checked_sub(overhead)
        .filter(|m| *m >= 68)
        .ok_or_else(|| {
            Error::invalid(
                "ensure sandbox",
                format!("underlay MTU {underlay} is too small for VXLAN"),
            )
            .with_hint("raise the underlay MTU or pass an explicit MTU")
        })
}

/// Creates or repairs the sandbox of `spec` for host `tag`, whose namespace `host` talks to;
/// with the notifications of its namespace.
pub(crate) async fn ensure(
    host: &NlConn,
    tag: &str,
    spec: &SandboxSpec,
) -> Result<(Sandbox, Notifications)> {
    if spec.vxlan_port == 0 {
        return Err(Error::invalid("ensure sandbox", "VXLAN UDP port 0")
            .with_hint("use 4789 (the default) or another non-zero port"));
    }
    let mtu = overlay_mtu(host, spec).await?;
    let name = sandbox_name(tag, &spec.network);
    let ns_name = name.clone();
    let (ns, _) = blocking(move || Netns::create_named(&ns_name)).await?;
    // Subscribed before the first dump, so that nothing deleted after it goes unreported.
    let (conn, notes) = NlConn::open_watching(Some(&ns), &name).await?;
    let links = dump_links(&conn).await?;

    // Fixed (see `bridge_msg`): the network's resolver answers on the bridge's addresses.
    let mac = MacAddr::from_hash(format!("{SANDBOX_BRIDGE} {name}").as_bytes());
    let bridge = match links.iter().find(|l| l.name == SANDBOX_BRIDGE) {
        Some(l) if l.kind == Some(InfoKind::Bridge) => {
            let mac_wrong = l.mac.as_deref() != Some(&mac.0[..]);
            if l.mtu != Some(mtu) || !l.up || mac_wrong {
                let change = LinkChange {
                    mtu: Some(mtu),
                    up: true,
                    mac: mac_wrong.then_some(mac),
                    ..LinkChange::default()
                };
                set_link(&conn, l.index, &change).await?;
            }
            l.index
        }
        other => {
            if let Some(l) = other {
                del_link(&conn, l.index, &l.name).await?;
            }
            conn.add_link(bridge_msg(SANDBOX_BRIDGE, mtu, mac))
                .await
                .map_err(|e| nl_failure(e, "create bridge", SANDBOX_BRIDGE.into(), conn.label()))?;
            existing(&conn, SANDBOX_BRIDGE).await?.index
        }
    };

    let want = VxlanParams {
        name: SANDBOX_VXLAN.to_string(),
        vni: spec.vni.get(),
        port: spec.vxlan_port,
        local: spec.vtep,
        mtu,
    };
    let current = links.iter().find(|l| l.name == SANDBOX_VXLAN);
    let vxlan = match current {
        Some(l) if vxlan_matches(l, &want) => l.clone(),
        other => {
            if let Some(l) = other {
                del_link(&conn, l.index, &l.name).await?;
            }
            create_vxlan(host, tag, &ns, &want, bridge).await?;
            existing(&conn, SANDBOX_VXLAN).await?
        }
    };
    if vxlan.mtu != Some(mtu) || !vxlan.up || vxlan.controller != Some(bridge) {
        let change = LinkChange {
            mtu: Some(mtu),
            up: true,
            controller: Some(bridge),
            mac: None,
            ..LinkChange::default()
        };
        set_link(&conn, vxlan.index, &change).await?;
    }
    for a in &spec.addresses {
        add_address(&conn, bridge, *a).await?;
    }
    let sb = Sandbox {
        name,
        ns,
        conn,
        bridge,
        vxlan: vxlan.index,
        mtu,
        addresses: spec.addresses.clone(),
        own: Arc::default(),
        spec: Some(spec.clone()),
        damaged: Arc::default(),
    };
    Ok((sb, notes))
}

fn vxlan_matches(l: &LinkView, want: &VxlanParams) -> bool {
    l.kind == Some(InfoKind::Vxlan)
        && l.vxlan.as_ref().is_some_and(|v| {
            v.vni == Some(want.vni)
                && v.port == Some(want.port)
                && v.local == Some(want.local)
                && v.learning == Some(false)
                && v.proxy == Some(true)
        })
}

async fn existing(conn: &NlConn, name: &str) -> Result<LinkView> {
    get_link(conn, name).await?.ok_or_else(|| {
        Error::internal(
            "ensure sandbox",
            format!(
                "{name} vanished right after its creation in {}",
                conn.label()
            ),
        )
    })
}

/// Creates the vxlan device from the host namespace, born in the sandbox. When the kernel says
/// the VNI is taken (Docker's "error creating vxlan interface: file exists"), finds the holder:
/// one in a sandbox of this host tag is a leftover and is deleted; one elsewhere is reported.
async fn create_vxlan(
    host: &NlConn,
    tag: &str,
    ns: &Netns,
    want: &VxlanParams,
    bridge: u32,
) -> Result<()> {
    const ATTEMPTS: u32 = 4;
    for attempt in 1..=ATTEMPTS {
        let err = match host.add_link(vxlan_msg(want, ns.raw_fd(), bridge)).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let what = format!(
            "vxlan device {} (VNI {}, port {})",
            want.name, want.vni, want.port
        );
        if !err.is_exists() {
            let e = nl_failure(err, "create vxlan", what, host.label());
            return Err(match err.errno() {
                Some(libc::EOPNOTSUPP) => e.with_hint("load the vxlan module: modprobe vxlan"),
                _ => e,
            });
        }
        let holders = vni_holders(host, tag, want.vni, want.port).await?;
        if holders.is_empty() && attempt == ATTEMPTS {
            return Err(
                nl_failure(err, "create vxlan", what, host.label()).with_hint(
                    "the VNI is used by a vxlan device created from this host namespace but living \
                 in a namespace this host cannot see; delete it or use another VNI",
                ),
            );
        }
        for (where_, link) in holders {
            match where_ {
                Holder::OwnSandbox(conn) => del_link(&conn, link.index, &link.name).await?,
                Holder::Host => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        "create vxlan",
                        format!(
                            "VNI {} (port {}) is already used by device {} in {}",
                            want.vni,
                            want.port,
                            link.name,
                            host.label()
                        ),
                    )
                    .with_errno(libc::EEXIST)
                    .with_hint(format!(
                        "delete that device (ip link del {}) or give the network another VNI",
                        link.name
                    )));
                }
            }
        }
        // A namespace being torn down frees its devices asynchronously.
        tokio::time::sleep(Duration::from_millis(25 * u64::from(attempt))).await;
    }
    Err(Error::internal("create vxlan", "retries exhausted"))
}

enum Holder {
    Host,
    OwnSandbox(Arc<NlConn>),
}

/// The vxlan devices with `vni` and `port` in the host namespace and in this tag's sandboxes.
async fn vni_holders(
    host: &NlConn,
    tag: &str,
    vni: u32,
    port: u16,
) -> Result<Vec<(Holder, LinkView)>> {
    let same = |l: &LinkView| {
        l.kind == Some(InfoKind::Vxlan)
            && l.vxlan
                .as_ref()
                .is_some_and(|v| v.vni == Some(vni) && v.port == Some(port))
    };
    let mut out = Vec::new();
    for l in dump_links(host).await? {
        if same(&l) {
            out.push((Holder::Host, l));
        }
    }
    let pfx = prefix(tag);
    for name in blocking(move || Netns::list_named(&pfx)).await? {
        let Ok(ns) = Netns::open_named(&name) else {
            continue;
        };
        let conn = Arc::new(NlConn::open(Some(&ns), &name).await?);
        for l in dump_links(&conn).await?.into_iter().filter(|l| same(l)) {
            out.push((Holder::OwnSandbox(Arc::clone(&conn)), l));
        }
    }
    Ok(out)
}

/// Opens the existing sandbox of `network`, with the notifications of its namespace; `None`
/// when it has no namespace.
pub(crate) async fn open_existing(
    tag: &str,
    network: &NetworkId,
) -> Result<Option<(Sandbox, Notifications)>> {
    let name = sandbox_name(tag, network);
    let ns = match Netns::open_named(&name) {
        Ok(ns) => ns,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let (conn, notes) = NlConn::open_watching(Some(&ns), &name).await?;
    let incomplete = |what: &str| {
        Error::new(
            ErrorKind::NotFound,
            "open sandbox",
            format!(
                "sandbox {name} of network {} has no {what}",
                network.short()
            ),
        )
        .with_hint("call ensure_sandbox to repair it")
    };
    let bridge = get_link(&conn, SANDBOX_BRIDGE)
        .await?
        .ok_or_else(|| incomplete(SANDBOX_BRIDGE))?;
    let vxlan = get_link(&conn, SANDBOX_VXLAN)
        .await?
        .ok_or_else(|| incomplete(SANDBOX_VXLAN))?;
    let mtu = bridge.mtu.unwrap_or(1500);
    let addresses = bridge_addresses(&conn, bridge.index).await?;
    let sb = Sandbox {
        name,
        ns,
        conn,
        bridge: bridge.index,
        vxlan: vxlan.index,
        mtu,
        addresses,
        own: Arc::default(),
        spec: None,
        damaged: Arc::default(),
    };
    Ok(Some((sb, notes)))
}

/// Compares `sb` with what the kernel holds, in one link dump over its open connection: its
/// namespace still named, its bridge and vxlan device the ones it made (same index, up, the
/// vxlan device on the bridge), and the host end of each container in `attached` on the bridge.
pub(crate) async fn check(sb: &Sandbox, attached: &[(NetnsId, String)]) -> Result<SandboxCheck> {
    // `ip netns del` of the sandbox unlinks the name while this connection keeps the
    // namespace alive: the sandbox is as lost as if its devices went.
    let named = std::fs::metadata(sb.ns.path()).is_ok_and(|m| {
        NetnsId {
            dev: m.dev(),
            ino: m.ino(),
        } == sb.ns.id()
    });
    let links = dump_links(&sb.conn).await?;
    let by_name: HashMap<&str, &LinkView> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    let bridge_ok = by_name
        .get(SANDBOX_BRIDGE)
        .is_some_and(|l| l.index == sb.bridge && l.up);
    let vxlan_ok = by_name
        .get(SANDBOX_VXLAN)
        .is_some_and(|l| l.index == sb.vxlan && l.up && l.controller == Some(sb.bridge));
    let addressed = sb.addresses.is_empty() || {
        let have = bridge_addresses(&sb.conn, sb.bridge).await?;
        sb.addresses.iter().all(|a| have.contains(a))
    };
    let intact = named && bridge_ok && vxlan_ok && addressed;
    let detached = missing_ports(&by_name, sb.bridge, attached, intact);
    Ok(SandboxCheck { intact, detached })
}

/// The addresses of link `bridge`.
async fn bridge_addresses(conn: &NlConn, bridge: u32) -> Result<Vec<IpNet>> {
    Ok(dump_addresses(conn)
        .await?
        .into_iter()
        .filter(|(index, _, _)| *index == bridge)
        .filter_map(|(_, ip, len)| IpNet::new(ip, len).ok())
        .collect())
}

/// Binds a UDP socket and a TCP listener to `addr` in the namespace of this thread, even
/// before the address is up (`IP_FREEBIND`: a sandbox being healed gets it back).
pub(crate) fn bind_service(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = Domain::for_address(addr);
    let freebind = |s: &Socket| match addr {
        SocketAddr::V4(_) => s.set_freebind_v4(true),
        SocketAddr::V6(_) => s.set_freebind_v6(true),
    };
    let udp = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    freebind(&udp)?;
    udp.bind(&addr.into())?;
    let tcp = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    freebind(&tcp)?;
    tcp.set_reuse_address(true)?;
    tcp.bind(&addr.into())?;
    tcp.listen(1024)?;
    for s in [&udp, &tcp] {
        s.set_cloexec(true)?;
        s.set_nonblocking(true)?;
    }
    Ok((udp.into(), tcp.into()))
}

/// The indexes of the containers `attached` whose host end is not up on bridge `bridge` among
/// the links `by_name` (every one of them when the bridge itself is not `intact`).
pub(crate) fn missing_ports(
    by_name: &HashMap<&str, &LinkView>,
    bridge: u32,
    attached: &[(NetnsId, String)],
    intact: bool,
) -> Vec<usize> {
    attached
        .iter()
        .enumerate()
        .filter(|(_, (ns, ifname))| {
            let host_end = host_end_name(*ns, ifname);
            !intact
                || !by_name
                    .get(host_end.as_str())
                    .is_some_and(|l| l.up && l.controller == Some(bridge))
        })
        .map(|(i, _)| i)
        .collect()
}

/// Removes the sandbox namespace `name` and its devices, reporting every failure.
pub(crate) async fn remove(name: &str) -> Result<()> {
    let mut failures = Failures::default();
    match Netns::open_named(name) {
        Ok(ns) => match NlConn::open(Some(&ns), name).await {
            Ok(conn) => failures.record(delete_devices(&conn).await),
            Err(e) => failures.record(Err(e)),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        // A stale plain file: nothing to delete inside, just the entry.
        Err(e) if e.kind() == ErrorKind::InvalidArgument => {}
        Err(e) => failures.record(Err(e)),
    }
    let owned = name.to_string();
    failures.record(blocking(move || Netns::delete_named(&owned)).await);
    failures.finish("remove sandbox")
}

/// Deletes the vxlan device first (so its VNI is free at once, not when the namespace dies),
/// then endpoints, then the bridge; keeps going after a failure.
async fn delete_devices(conn: &NlConn) -> Result<()> {
    let links = dump_links(conn).await?;
    let mut failures = Failures::default();
    let order = [InfoKind::Vxlan, InfoKind::Veth, InfoKind::Bridge];
    for kind in order {
        for l in links.iter().filter(|l| l.kind.as_ref() == Some(&kind)) {
            failures.record(del_link(conn, l.index, &l.name).await);
        }
    }
    failures.finish("remove sandbox devices")
}

/// What the kernel holds for sandbox namespace `name`.
pub(crate) async fn describe(name: &str, tag: &str) -> SandboxInfo {
    let mut info = SandboxInfo {
        netns_name: name.to_string(),
        netns_path: super::netns::named_path(name),
        network_short: name
            .strip_prefix(&prefix(tag))
            .unwrap_or_default()
            .to_string(),
        vni: None,
        mtu: None,
    };
    let Ok(ns) = Netns::open_named(name) else {
        return info;
    };
    let Ok(conn) = NlConn::open(Some(&ns), name).await else {
        return info;
    };
    if let Ok(links) = dump_links(&conn).await {
        for l in links {
            if l.name == SANDBOX_BRIDGE {
                info.mtu = l.mtu;
            } else if l.name == SANDBOX_VXLAN {
                info.vni = l.vxlan.and_then(|v| v.vni).and_then(|v| Vni::new(v).ok());
            }
        }
    }
    info
}

/// Runs blocking namespace work (file system, mount, thread joins) off the async workers.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::internal("namespace task", format!("blocking task failed: {e}")))?
}
