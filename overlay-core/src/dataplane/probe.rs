//! What a namespace holds, read back through netlink for callers that verify an attachment
//! against what they were told it got (a CNI plugin's CHECK): its interfaces with their MACs
//! and addresses, and the routes of its main table.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use ipnet::IpNet;
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use serde::{Deserialize, Serialize};

use super::conn::NlConn;
use super::errors::nl_failure;
use super::link::{dump_addresses, dump_links};
use super::netns::Netns;
use crate::error::Result;

/// One interface of a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterfaceState {
    /// Its name.
    pub name: String,
    /// Its MAC, `aa:bb:cc:dd:ee:ff`, when it has one.
    pub mac: Option<String>,
    /// Whether it is administratively up.
    pub up: bool,
    /// Its addresses with their prefixes.
    pub addresses: Vec<IpNet>,
}

/// One unicast route of a namespace's main table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteState {
    /// Where it leads (`0.0.0.0/0` for the default route).
    pub destination: IpNet,
    /// Its next hop, when it has one.
    pub gateway: Option<IpAddr>,
    /// The interface it leaves through.
    pub interface: Option<String>,
}

/// A namespace's interfaces and routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceState {
    /// Every interface, loopback included.
    pub interfaces: Vec<InterfaceState>,
    /// The unicast routes of the main table, IPv4 and IPv6.
    pub routes: Vec<RouteState>,
}

impl NamespaceState {
    /// The interface named `name`.
    pub fn interface(&self, name: &str) -> Option<&InterfaceState> {
        self.interfaces.iter().find(|i| i.name == name)
    }
}

/// Reads the interfaces and routes of the namespace at `path` (a file such as
/// `/run/netns/NAME` or `/proc/PID/ns/net`). Only reads: nothing in it changes.
pub async fn inspect_namespace(path: &Path) -> Result<NamespaceState> {
    let ns = Netns::open_path(path)?;
    let label = path.display().to_string();
    let conn = NlConn::open(Some(&ns), &label).await?;
    let links = dump_links(&conn).await?;
    let addresses = dump_addresses(&conn).await?;
    let name_of = |index: u32| {
        links
            .iter()
            .find(|l| l.index == index)
            .map(|l| l.name.clone())
    };
    let interfaces = links
        .iter()
        .map(|l| InterfaceState {
            name: l.name.clone(),
            mac: l.mac.as_deref().filter(|m| m.len() == 6).map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }),
            up: l.up,
            addresses: addresses
                .iter()
                .filter(|(i, _, _)| *i == l.index)
                .filter_map(|(_, ip, prefix)| IpNet::new(*ip, *prefix).ok())
                .collect(),
        })
        .collect();
    let mut routes = Vec::new();
    let v4 = rtnetlink::RouteMessageBuilder::<Ipv4Addr>::new().build();
    let v6 = rtnetlink::RouteMessageBuilder::<Ipv6Addr>::new().build();
    for (query, unspecified) in [
        (v4, IpAddr::from(Ipv4Addr::UNSPECIFIED)),
        (v6, IpAddr::from(Ipv6Addr::UNSPECIFIED)),
    ] {
        let replies = NlConn::collect(conn.handle().route().get(query).execute())
            .await
            .map_err(|e| nl_failure(e, "list routes", "dump routes".into(), &label))?;
        for r in replies {
            if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
                continue;
            }
            let mut destination = unspecified;
            let mut gateway = None;
            let mut interface = None;
            for a in &r.attributes {
                match a {
                    RouteAttribute::Destination(d) => {
                        if let Some(ip) = route_ip(d) {
                            destination = ip;
                        }
                    }
                    RouteAttribute::Gateway(g) => gateway = route_ip(g),
                    RouteAttribute::Oif(i) => interface = name_of(*i),
                    _ => {}
                }
            }
            if let Ok(destination) = IpNet::new(destination, r.header.destination_prefix_length) {
                routes.push(RouteState {
                    destination,
                    gateway,
                    interface,
                });
            }
        }
    }
    Ok(NamespaceState { interfaces, routes })
}

fn route_ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(ip) => Some(IpAddr::V4(*ip)),
        RouteAddress::Inet6(ip) => Some(IpAddr::V6(*ip)),
        _ => None,
    }
}
