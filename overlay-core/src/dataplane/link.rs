//! Link and address messages: what the sandbox and endpoint code sends, built with rtnetlink's
//! message builders, and a parsed view of what the kernel reports back.

use std::net::IpAddr;
use std::os::fd::RawFd;

use ipnet::IpNet;
use netlink_packet_route::address::{AddressAttribute, AddressFlags};
use netlink_packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, InfoVxlan,
    LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::{LinkBridge, LinkUnspec, LinkVeth, LinkVxlan};

use super::conn::NlConn;
use super::errors::nl_failure;
use crate::error::{Error, Result};
use crate::model::MacAddr;

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
    let replies = NlConn::collect(conn.handle().link().get().execute())
        .await
        .map_err(|e| nl_failure(e, "list links", "dump links".into(), conn.label()))?;
    Ok(replies.iter().map(LinkView::parse).collect())
}

/// The link named `name`, or `None` when there is none.
pub(crate) async fn get_link(conn: &NlConn, name: &str) -> Result<Option<LinkView>> {
    let get = conn.handle().link().get().match_name(name).execute();
    match NlConn::collect(get).await {
        Ok(replies) => Ok(replies.first().map(LinkView::parse)),
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
    match NlConn::done(conn.handle().link().del(index).execute()).await {
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
    /// Give the link no IPv6 link-local address (set in the same request as `up`, so none
    /// is made when it comes up).
    pub(crate) no_link_local: bool,
    pub(crate) controller: Option<u32>,
    pub(crate) mac: Option<MacAddr>,
}

/// Applies `change` to link `index`.
pub(crate) async fn set_link(conn: &NlConn, index: u32, change: &LinkChange) -> Result<()> {
    apply(
        conn,
        LinkUnspec::new_with_index(index),
        change,
        &format!("link {index}"),
    )
    .await
}

/// Applies `change` to the link named `name` (one request, no lookup first).
pub(crate) async fn set_link_by_name(conn: &NlConn, name: &str, change: &LinkChange) -> Result<()> {
    apply(
        conn,
        LinkUnspec::new_with_name(name),
        change,
        &format!("link {name}"),
    )
    .await
}

async fn apply(
    conn: &NlConn,
    mut b: rtnetlink::LinkMessageBuilder<LinkUnspec>,
    change: &LinkChange,
    what: &str,
) -> Result<()> {
    if change.up {
        b = b.up();
    }
    if let Some(mtu) = change.mtu {
        b = b.mtu(mtu);
    }
    if let Some(c) = change.controller {
        b = b.controller(c);
    }
    if let Some(mac) = change.mac {
        b = b.address(mac.0.to_vec());
    }
    if change.no_link_local {
        b = b.append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]));
    }
    NlConn::done(conn.handle().link().set(b.build()).execute())
        .await
        .map_err(|e| nl_failure(e, "configure link", what.to_string(), conn.label()))
}

/// A bridge named `name`, up, with `mtu`.
/// A bridge, up, with its own MAC address. Set, not left to the kernel: a bridge without one
/// takes the lowest MAC of its ports and changes it when that port leaves, and every
/// neighbour entry of the bridge's addresses (the containers' gateway, the network's
/// resolver) then points at a MAC nobody answers to until it expires: replies are lost.
pub(crate) fn bridge_msg(name: &str, mtu: u32, mac: MacAddr) -> LinkMessage {
    LinkBridge::new(name)
        .mtu(mtu)
        .address(mac.0.to_vec())
        .up()
        .build()
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
pub(crate) fn vxlan_msg(p: &VxlanParams, target: RawFd, controller: u32) -> LinkMessage {
    let b = LinkVxlan::new(&p.name, p.vni)
        .port(p.port)
        .learning(false)
        .proxy(true);
    let b = match p.local {
        IpAddr::V4(ip) => b.local(ip),
        IpAddr::V6(ip) => b.local6(ip),
    };
    b.mtu(p.mtu)
        .setns_by_fd(target)
        .controller(controller)
        .up()
        .build()
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
pub(crate) fn veth_msg(p: &VethParams) -> LinkMessage {
    // `LinkVeth::peer` sets only the peer's name; its MTU, MAC and namespace go in a peer
    // message of their own, built the same way.
    let peer = LinkUnspec::new_with_name(&p.peer_name)
        .mtu(p.mtu)
        .address(p.peer_mac.0.to_vec())
        .setns_by_fd(p.peer_ns)
        .build();
    LinkVeth::new(&p.host_name, &p.peer_name)
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .mtu(p.mtu)
        .controller(p.bridge)
        .up()
        .build()
}

/// Adds (or keeps) `addr` on link `index`. IPv6 skips duplicate address detection: the overlay
/// IPAM already guarantees uniqueness, and DAD would hold the address unusable for seconds.
pub(crate) async fn add_address(conn: &NlConn, index: u32, addr: IpNet) -> Result<()> {
    let mut req = conn
        .handle()
        .address()
        .add(index, addr.addr(), addr.prefix_len())
        .replace();
    if addr.addr().is_ipv6() {
        // The request has no setter for IFA_FLAGS.
        req.message_mut()
            .attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    req.execute().await.map_err(|e| {
        nl_failure(
            e.into(),
            "add address",
            format!("{addr} on link {index}"),
            conn.label(),
        )
    })
}

/// Every address of the namespace as (ifindex, address, prefix length).
pub(crate) async fn dump_addresses(conn: &NlConn) -> Result<Vec<(u32, IpAddr, u8)>> {
    let replies = NlConn::collect(conn.handle().address().get().execute())
        .await
        .map_err(|e| nl_failure(e, "list addresses", "dump addresses".into(), conn.label()))?;
    let mut out = Vec::new();
    for a in &replies {
        {
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
