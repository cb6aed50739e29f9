//! Endpoints: a veth pair from a sandbox bridge into a container namespace.

use ipnet::IpNet;
use netlink_packet_route::link::InfoKind;

use super::conn::NlConn;
use super::errors::nl_failure;
use super::link::{
    LinkChange, VethParams, add_address, del_link, get_link, set_link, validate_ifname, veth_msg,
};
use super::netns::{Netns, NetnsId};
use super::own::{Deleted, OwnDeletions};
use super::{AttachSpec, AttachedVeth};
use crate::error::{Error, ErrorKind, Result};

/// Index of `lo` in every network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// A bridge containers are attached to: a sandbox's `br0`, or the host's gateway bridge.
pub(crate) struct Bridge<'a> {
    /// The connection to the bridge's namespace.
    pub(crate) conn: &'a NlConn,
    /// The bridge's index there.
    pub(crate) index: u32,
    /// The MTU its ports get.
    pub(crate) mtu: u32,
    /// The namespace's name, for errors.
    pub(crate) label: &'a str,
    /// Deletions made there, which are not damage.
    pub(crate) own: &'a OwnDeletions,
}

/// What an interface on the gateway bridge gets besides what an overlay one does.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Uplink {
    /// The container's default route, through this interface.
    pub(crate) route_via: Option<std::net::Ipv4Addr>,
    /// The bridge port isolated from the other isolated ports: containers never talk to each
    /// other over the gateway bridge (Docker's `icc=false` there), only to the host.
    pub(crate) isolated: bool,
}

/// Name of the veth end on the sandbox bridge: derived from the container namespace and the
/// interface name, so a retry (or a detach) finds the same device without any stored state.
pub(crate) fn host_end_name(container: NetnsId, ifname: &str) -> String {
    // FNV-1a, stable across releases.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = container
        .dev
        .to_le_bytes()
        .into_iter()
        .chain(container.ino.to_le_bytes())
        .chain(ifname.bytes());
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // "ve-" + 12 hex = 15 characters, the kernel's limit.
    format!("ve-{:012x}", h & 0xffff_ffff_ffff)
}

fn validate(spec: &AttachSpec, sandbox_mtu: u32) -> Result<(u32, crate::model::MacAddr)> {
    validate_ifname(&spec.ifname, "attach endpoint")?;
    let mac = spec.effective_mac().ok_or_else(|| {
        Error::invalid(
            "attach endpoint",
            "the endpoint has neither an IPv4 nor an IPv6 address",
        )
        .with_hint("give the endpoint at least one address")
    })?;
    if mac.0[0] & 1 == 1 || mac.0 == [0; 6] {
        return Err(Error::invalid(
            "attach endpoint",
            format!("MAC {mac} is not a unicast address"),
        )
        .with_hint("use a unicast MAC (lowest bit of the first byte clear), or none"));
    }
    let mtu = spec.mtu.unwrap_or(sandbox_mtu);
    let min = if spec.ipv6.is_some() { 1280 } else { 68 };
    if !(min..=65535).contains(&mtu) {
        return Err(
            Error::invalid("attach endpoint", format!("MTU {mtu} is out of range")).with_hint(
                format!("use an MTU between {min} and 65535 (IPv6 needs 1280)"),
            ),
        );
    }
    Ok((mtu, mac))
}

/// Attaches `spec` to bridge `sb`. The veth pair is made in one request from the bridge's
/// namespace with its peer born inside the container; then the container side gets its
/// addresses (and the route of `uplink`) and `lo` comes up.
pub(crate) async fn attach(
    sb: &Bridge<'_>,
    spec: &AttachSpec,
    uplink: Uplink,
) -> Result<AttachedVeth> {
    let (mtu, mac) = validate(spec, sb.mtu)?;
    let container = Netns::open_path(&spec.netns)?;
    let label = container.path().display().to_string();
    let host_name = host_end_name(container.id(), &spec.ifname);
    let params = VethParams {
        host_name: host_name.clone(),
        bridge: sb.index,
        peer_name: spec.ifname.clone(),
        peer_ns: container.raw_fd(),
        peer_mac: mac,
        mtu,
    };
    // The container connection (a thread entering the namespace) opens while the kernel makes
    // the pair.
    let (created, cconn) = tokio::join!(
        sb.conn.add_link(veth_msg(&params)),
        NlConn::open(Some(&container), &label)
    );
    let cconn = cconn?;
    let created = match created {
        Ok(()) => true,
        Err(e) if e.is_exists() => {
            reconcile(sb, &cconn, &params).await?;
            false
        }
        Err(e) => {
            let err = nl_failure(
                e,
                "attach endpoint",
                format!("veth {host_name} ↔ {}", spec.ifname),
                sb.label,
            );
            return Err(match e.errno() {
                Some(libc::EOPNOTSUPP) => err.with_hint("load the veth module: modprobe veth"),
                _ => err,
            });
        }
    };
    if spec.handoff {
        // The runtime moves the container end and configures it; the port stays quiet.
        if let Err(e) = quiet_port(sb.conn, &host_name).await {
            tracing::debug!(port = %host_name, error = %e, "the port keeps its IPv6 link-local address");
        }
        return Ok(AttachedVeth {
            host_ifname: host_name,
            container_ifname: spec.ifname.clone(),
            mac,
            mtu,
            addresses: Vec::new(),
            created,
        });
    }
    // The host end is a bridge port: it needs no IPv6 address at all, and gets no link-local
    // (set before the container end comes up, when the kernel would make one).
    let (link, host_quiet) = tokio::join!(
        get_link(&cconn, &spec.ifname),
        quiet_port(sb.conn, &host_name)
    );
    if let Err(e) = host_quiet {
        tracing::debug!(port = %host_name, error = %e, "the port keeps its IPv6 link-local address");
    }
    let link = link?.ok_or_else(|| {
        Error::internal(
            "attach endpoint",
            format!("{} vanished from {label} after its creation", spec.ifname),
        )
    })?;
    let addresses: Vec<IpNet> = spec
        .ipv4
        .map(IpNet::V4)
        .into_iter()
        .chain(spec.ipv6.map(IpNet::V6))
        .collect();
    let up = LinkChange {
        up: true,
        ..LinkChange::default()
    };
    // An interface without IPv6 gets no link-local address either: with one, it sends
    // duplicate address detection and router solicitations as it comes up, multicasts the
    // bridge floods to every other port, so each connect cost the host in proportion to the
    // containers already on it.
    let if_up = LinkChange {
        up: true,
        no_link_local: spec.ipv6.is_none(),
        ..LinkChange::default()
    };
    let bring_up = async {
        match set_link(&cconn, link.index, &if_up).await {
            // A kernel without IPv6 has no link-local address to refuse.
            Err(e) if if_up.no_link_local && e.errno() == Some(libc::EAFNOSUPPORT) => {
                set_link(&cconn, link.index, &up).await
            }
            r => r,
        }
    };
    let (lo_up, if_up, added) = tokio::join!(
        set_link(&cconn, LOOPBACK_INDEX, &up),
        bring_up,
        futures::future::join_all(
            addresses
                .iter()
                .map(|a| add_address(&cconn, link.index, *a))
        )
    );
    lo_up?;
    if_up?;
    added.into_iter().collect::<Result<Vec<()>>>()?;
    if let Some(gw) = uplink.route_via {
        default_route(&cconn, link.index, gw).await?;
    }
    if uplink.isolated {
        isolate(sb, &host_name).await?;
    }
    Ok(AttachedVeth {
        host_ifname: host_name,
        container_ifname: spec.ifname.clone(),
        mac,
        mtu,
        addresses,
        created,
    })
}

/// Turns off IPv6 address generation on bridge port `name`.
async fn quiet_port(conn: &NlConn, name: &str) -> Result<()> {
    super::link::set_link_by_name(
        conn,
        name,
        &LinkChange {
            no_link_local: true,
            ..LinkChange::default()
        },
    )
    .await
}

/// The pair (or one of its names) already exists: keep it when both ends are there, replace a
/// lone host end, refuse a foreign interface in the container.
async fn reconcile(sb: &Bridge<'_>, cconn: &NlConn, p: &VethParams) -> Result<()> {
    let host = get_link(sb.conn, &p.host_name).await?;
    let peer = get_link(cconn, &p.peer_name).await?;
    match (host, peer) {
        (Some(h), Some(c)) if c.kind == Some(InfoKind::Veth) => {
            let host_change = LinkChange {
                mtu: Some(p.mtu),
                up: true,
                controller: Some(p.bridge),
                mac: None,
                ..LinkChange::default()
            };
            set_link(sb.conn, h.index, &host_change).await?;
            let peer_change = LinkChange {
                mtu: Some(p.mtu),
                up: true,
                controller: None,
                mac: Some(p.peer_mac),
                ..LinkChange::default()
            };
            set_link(cconn, c.index, &peer_change).await
        }
        (_, Some(_)) => Err(Error::new(
            ErrorKind::AlreadyExists,
            "attach endpoint",
            format!(
                "interface {} already exists in {} and is not this network's endpoint",
                p.peer_name,
                cconn.label()
            ),
        )
        .with_errno(libc::EEXIST)
        .with_hint("pick another interface name, or detach the other network first")),
        (host, None) => {
            // A host end without its container end cannot be a live pair: a leftover.
            if let Some(h) = host {
                sb.own
                    .deleting(Deleted::Link(h.index), del_link(sb.conn, h.index, &h.name))
                    .await?;
            }
            sb.conn.add_link(veth_msg(p)).await.map_err(|e| {
                nl_failure(
                    e,
                    "attach endpoint",
                    format!("veth {}", p.host_name),
                    sb.label,
                )
            })
        }
    }
}

/// Detaches the interface `ifname` of the container in `netns` from `sb` by deleting the host
/// end (which takes the container end with it). Nothing of this network there is not an error.
pub(crate) async fn detach(sb: &Bridge<'_>, container: &Netns, ifname: &str) -> Result<()> {
    validate_ifname(ifname, "detach endpoint")?;
    let host_name = host_end_name(container.id(), ifname);
    match get_link(sb.conn, &host_name).await? {
        Some(l) => {
            sb.own
                .deleting(Deleted::Link(l.index), del_link(sb.conn, l.index, &l.name))
                .await
        }
        None => Ok(()),
    }
}

/// The container's default route through `gw` on link `index` (replacing one it had).
async fn default_route(cconn: &NlConn, index: u32, gw: std::net::Ipv4Addr) -> Result<()> {
    let route = rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new()
        .output_interface(index)
        .gateway(gw)
        .build();
    NlConn::done(cconn.handle().route().add(route).replace().execute())
        .await
        .map_err(|e| nl_failure(e, "add default route", format!("via {gw}"), cconn.label()))
}

/// Marks the bridge port `name` isolated.
async fn isolate(sb: &Bridge<'_>, name: &str) -> Result<()> {
    let port = get_link(sb.conn, name).await?.ok_or_else(|| {
        Error::internal(
            "attach endpoint",
            format!("{name} vanished after its creation"),
        )
    })?;
    let msg = rtnetlink::LinkBridgePort::new(port.index)
        .append_info_data(netlink_packet_route::link::InfoBridgePort::Isolated(true))
        .build();
    NlConn::done(sb.conn.handle().link().set_port(msg).execute())
        .await
        .map_err(|e| nl_failure(e, "isolate bridge port", name.to_string(), sb.label))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_end_names_are_stable_short_and_distinct() {
        let a = NetnsId {
            dev: 4,
            ino: 4026532000,
        };
        let b = NetnsId {
            dev: 4,
            ino: 4026532001,
        };
        let n = host_end_name(a, "eth0");
        assert_eq!(n.len(), 15);
        assert_eq!(n, host_end_name(a, "eth0"));
        assert_ne!(n, host_end_name(b, "eth0"));
        assert_ne!(n, host_end_name(a, "eth1"));
    }

    #[test]
    fn bad_specs_are_rejected_before_any_io() {
        let mut spec = AttachSpec::new("/nonexistent", "10.0.0.2/24".parse().unwrap());
        assert_eq!(validate(&spec, 1450).unwrap().0, 1450);
        spec.ifname = "a/b".into();
        assert_eq!(
            validate(&spec, 1450).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        spec.ifname = "eth0".into();
        spec.mtu = Some(10);
        assert_eq!(
            validate(&spec, 1450).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        spec.mtu = None;
        spec.ipv4 = None;
        assert_eq!(
            validate(&spec, 1450).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        spec.ipv6 = Some("fd00::2/64".parse().unwrap());
        let (_, mac) = validate(&spec, 1450).unwrap();
        assert_eq!(mac.0[0] & 1, 0);
    }
}
