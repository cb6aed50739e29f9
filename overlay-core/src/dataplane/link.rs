//! Link and address messages: what the sandbox and endpoint code sends, and a parsed view of
//! what the kernel reports back.

use std::net::IpAddr;
use std::os::fd::RawFd;

use ipnet::IpNet;
use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::conn::NlConn;
use super::errors::nl_failure;
use crate::error::{Error, Result};
use crate::model::MacAddr;

/// Flags of a request that creates and fails when the object exists.
pub(crate) const CREATE_EXCL: u16 = NLM_F_CREATE | NLM_F_EXCL;
/// Flags of a request that creates or replaces.
pub(crate) const CREATE_REPLACE: u16 = NLM_F_CREATE | NLM_F_REPLACE;

/// The vxlan settings this crate cares about, as the kernel reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VxlanView {
    pub(crate) vni: Option<u32>,
    pub(crate) port: Option<u16>,
    pub(crate) local: Option<IpAddr>,
    pub(crate) learning: Option<bool>,
    pub(crate) proxy: Option<bool>,
}

/// A link as the kernel reports it.
#[derive(Debug, Clone)]
pub(crate) struct LinkView {
    pub(crate) index: u32,
    pub(crate) name: String,
    pub(crate) kind: Option<InfoKind>,
    pub(crate) mtu: Option<u32>,
    pub(crate) up: bool,
    pub(crate) controller: Option<u32>,
    pub(crate) mac: Option<Vec<u8>>,
    pub(crate) vxlan: Option<VxlanView>,
}

impl LinkView {
    pub(crate) fn parse(m: &LinkMessage) -> LinkView {
        let mut v = LinkView {
            index: m.header.index,
            name: String::new(),
            kind: None,
            mtu: None,
            up: m.header.flags.contains(LinkFlags::Up),
            controller: None,
            mac: None,
            vxlan: None,
        };
        for a in &m.attributes {
            match a {
                LinkAttribute::IfName(n) => v.name.clone_from(n),
                LinkAttribute::Mtu(mtu) => v.mtu = Some(*mtu),
                LinkAttribute::Controller(c) => v.controller = Some(*c),
                LinkAttribute::Address(mac) => v.mac = Some(mac.clone()),
                LinkAttribute::LinkInfo(infos) => {
                    for i in infos {
                        match i {
                            LinkInfo::Kind(k) => v.kind = Some(k.clone()),
                            LinkInfo::Data(InfoData::Vxlan(d)) => v.vxlan = Some(vxlan_view(d)),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        v
    }
}

fn vxlan_view(d: &[InfoVxlan]) -> VxlanView {
    let mut v = VxlanView {
        vni: None,
        port: None,
        local: None,
        learning: None,
        proxy: None,
    };
    for a in d {
        match a {
            InfoVxlan::Id(id) => v.vni = Some(*id),
            InfoVxlan::Port(p) => v.port = Some(*p),
            InfoVxlan::Local(ip) => v.local = Some(IpAddr::V4(*ip)),
            InfoVxlan::Local6(ip) => v.local = Some(IpAddr::V6(*ip)),
            InfoVxlan::Learning(l) => v.learning = Some(*l),
            InfoVxlan::Proxy(p) => v.proxy = Some(*p),
            _ => {}
        }
    }
    v
}

/// Every link of the connection's namespace.
pub(crate) async fn dump_links(conn: &NlConn) -> Result<Vec<LinkView>> {
    let replies = conn
        .query(RouteNetlinkMessage::GetLink(LinkMessage::default()), true)
        .await
        .map_err(|e| nl_failure(e, "list links", "dump links".into(), conn.label()))?;
    Ok(replies
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(LinkView::parse(l)),
            _ => None,
        })
        .collect())
}

/// The link named `name`, or `None` when there is none.
pub(crate) async fn get_link(conn: &NlConn, name: &str) -> Result<Option<LinkView>> {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    match conn.query(RouteNetlinkMessage::GetLink(m), false).await {
        Ok(replies) => Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewLink(l) => Some(LinkView::parse(l)),
            _ => None,
        })),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(nl_failure(
            e,
            "get link",
            format!("link {name}"),
            conn.label(),
        )),
    }
}

/// Deletes link `index`; a link already gone is not an error.
pub(crate) async fn del_link(conn: &NlConn, index: u32, name: &str) -> Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    match conn.ack(RouteNetlinkMessage::DelLink(m), 0).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_missing() => Ok(()),
        Err(e) => Err(nl_failure(
            e,
            "delete link",
            format!("link {name}"),
            conn.label(),
        )),
    }
}

/// Changes of an existing link; `None` leaves a setting alone.
#[derive(Debug, Default)]
pub(crate) struct LinkChange {
    pub(crate) mtu: Option<u32>,
    pub(crate) up: bool,
    pub(crate) controller: Option<u32>,
    pub(crate) mac: Option<MacAddr>,
}

/// Applies `change` to link `index`.
pub(crate) async fn set_link(conn: &NlConn, index: u32, change: &LinkChange) -> Result<()> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    if change.up {
        m.header.flags |= LinkFlags::Up;
        m.header.change_mask |= LinkFlags::Up;
    }
    if let Some(mtu) = change.mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    if let Some(c) = change.controller {
        m.attributes.push(LinkAttribute::Controller(c));
    }
    if let Some(mac) = change.mac {
        m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
    }
    conn.ack_or(RouteNetlinkMessage::SetLink(m), 0, "configure link", || {
        format!("link {index}")
    })
    .await
}

/// A bridge named `name`, up, with `mtu`.
pub(crate) fn bridge_msg(name: &str, mtu: u32) -> RouteNetlinkMessage {
    let mut m = LinkMessage::default();
    m.header.flags |= LinkFlags::Up;
    m.header.change_mask |= LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::Mtu(mtu));
    m.attributes
        .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(
            InfoKind::Bridge,
        )]));
    RouteNetlinkMessage::NewLink(m)
}

/// Parameters of a sandbox's vxlan device.
#[derive(Debug, Clone)]
pub(crate) struct VxlanParams {
    pub(crate) name: String,
    pub(crate) vni: u32,
    pub(crate) port: u16,
    pub(crate) local: IpAddr,
    pub(crate) mtu: u32,
}

/// A vxlan device born in namespace `target` (so its UDP socket stays in the sender's
/// namespace), learning off, proxy ARP on, no group, up, already enslaved to `controller`
/// (an ifindex in `target`).
pub(crate) fn vxlan_msg(p: &VxlanParams, target: RawFd, controller: u32) -> RouteNetlinkMessage {
    let mut data = vec![
        InfoVxlan::Id(p.vni),
        InfoVxlan::Port(p.port),
        InfoVxlan::Learning(false),
        InfoVxlan::Proxy(true),
    ];
    data.push(match p.local {
        IpAddr::V4(ip) => InfoVxlan::Local(ip),
        IpAddr::V6(ip) => InfoVxlan::Local6(ip),
    });
    let mut m = LinkMessage::default();
    m.header.flags |= LinkFlags::Up;
    m.header.change_mask |= LinkFlags::Up;
    m.attributes.push(LinkAttribute::IfName(p.name.clone()));
    m.attributes.push(LinkAttribute::Mtu(p.mtu));
    m.attributes.push(LinkAttribute::NetNsFd(target));
    m.attributes.push(LinkAttribute::Controller(controller));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Vxlan),
        LinkInfo::Data(InfoData::Vxlan(data)),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

/// Parameters of an endpoint's veth pair.
#[derive(Debug, Clone)]
pub(crate) struct VethParams {
    pub(crate) host_name: String,
    pub(crate) bridge: u32,
    pub(crate) peer_name: String,
    pub(crate) peer_ns: RawFd,
    pub(crate) peer_mac: MacAddr,
    pub(crate) mtu: u32,
}

/// A veth pair in one request: this end up on `bridge`, the peer born in `peer_ns` with its
/// name, MAC and MTU. The peer comes up later from inside its namespace: the kernel (6.x)
/// refuses to bring up a peer created in another namespace (ENOTCONN).
pub(crate) fn veth_msg(p: &VethParams) -> RouteNetlinkMessage {
    let mut peer = LinkMessage::default();
    peer.attributes
        .push(LinkAttribute::IfName(p.peer_name.clone()));
    peer.attributes.push(LinkAttribute::Mtu(p.mtu));
    peer.attributes
        .push(LinkAttribute::Address(p.peer_mac.0.to_vec()));
    peer.attributes.push(LinkAttribute::NetNsFd(p.peer_ns));
    let mut m = LinkMessage::default();
    m.header.flags |= LinkFlags::Up;
    m.header.change_mask |= LinkFlags::Up;
    m.attributes
        .push(LinkAttribute::IfName(p.host_name.clone()));
    m.attributes.push(LinkAttribute::Mtu(p.mtu));
    m.attributes.push(LinkAttribute::Controller(p.bridge));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Veth),
        LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
    ]));
    RouteNetlinkMessage::NewLink(m)
}

/// Adds (or keeps) `addr` on link `index`. IPv6 skips duplicate address detection: the overlay
/// IPAM already guarantees uniqueness, and DAD would hold the address unusable for seconds.
pub(crate) async fn add_address(conn: &NlConn, index: u32, addr: IpNet) -> Result<()> {
    let mut m = AddressMessage::default();
    m.header.index = index;
    m.header.prefix_len = addr.prefix_len();
    match addr.addr() {
        IpAddr::V4(ip) => {
            m.header.family = AddressFamily::Inet;
            m.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
            m.attributes.push(AddressAttribute::Address(IpAddr::V4(ip)));
        }
        IpAddr::V6(ip) => {
            m.header.family = AddressFamily::Inet6;
            m.attributes.push(AddressAttribute::Address(IpAddr::V6(ip)));
            m.attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
    }
    conn.ack_or(
        RouteNetlinkMessage::NewAddress(m),
        CREATE_REPLACE,
        "add address",
        || format!("{addr} on link {index}"),
    )
    .await
}

/// Every address of the namespace as (ifindex, address, prefix length).
pub(crate) async fn dump_addresses(conn: &NlConn) -> Result<Vec<(u32, IpAddr, u8)>> {
    let replies = conn
        .query(
            RouteNetlinkMessage::GetAddress(AddressMessage::default()),
            true,
        )
        .await
        .map_err(|e| nl_failure(e, "list addresses", "dump addresses".into(), conn.label()))?;
    let mut out = Vec::new();
    for r in &replies {
        if let RouteNetlinkMessage::NewAddress(a) = r {
            let ip = a.attributes.iter().find_map(|at| match at {
                AddressAttribute::Local(ip) => Some(*ip),
                _ => None,
            });
            let ip = ip.or_else(|| {
                a.attributes.iter().find_map(|at| match at {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                })
            });
            if let Some(ip) = ip {
                out.push((a.header.index, ip, a.header.prefix_len));
            }
        }
    }
    Ok(out)
}

/// Checks an interface name the way the kernel will (`dev_valid_name`), before any I/O.
pub(crate) fn validate_ifname(name: &str, op: &'static str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0);
    if ok {
        Ok(())
    } else {
        Err(
            Error::invalid(op, format!("invalid interface name {name:?}"))
                .with_hint("use 1 to 15 characters without '/', ':' or whitespace"),
        )
    }
}
