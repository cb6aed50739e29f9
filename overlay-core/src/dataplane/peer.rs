//! Peers: a permanent neighbour entry (IP → MAC) and a vxlan FDB entry (MAC → remote VTEP) per
//! remote endpoint, both on the sandbox's vxlan device.
//!
//! Entries are added through rtnetlink's `NeighbourAddRequest` (CREATE|EXCL, or CREATE|REPLACE
//! with `replace()`). Deletes and single-entry gets are messages built here: rtnetlink's
//! `NeighbourDelRequest` takes a ready message, and its `NeighbourGetRequest` only dumps.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};

use futures::stream::{FuturesUnordered, StreamExt};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::Peer;
use super::conn::NlConn;
use super::errors::{Failures, NlError, nl_failure};
use super::own::Deleted;
use super::sandbox::Sandbox;
use crate::error::{Error, Result};
use crate::model::MacAddr;

/// Requests in flight at once when programming many peers: enough to keep the kernel busy
/// without overrunning the socket's receive buffer with acks.
const PIPELINE: usize = 64;

/// The neighbour entry of `ip` (no MAC: the key of a delete or get).
fn neigh_key(vxlan: u32, ip: IpAddr) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = vxlan;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::from(ip)));
    m
}

/// The vxlan FDB entry of `mac`, towards `vtep` when given (the key of a delete or get).
fn fdb_key(vxlan: u32, mac: MacAddr, vtep: Option<IpAddr>) -> NeighbourMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Bridge;
    m.header.ifindex = vxlan;
    m.header.flags = NeighbourFlags::Own;
    m.attributes
        .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
    if let Some(vtep) = vtep {
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::from(
                vtep,
            )));
    }
    m
}

/// Adds (`replace` false: fails if present) or replaces the permanent neighbour entry
/// `ip` → `mac`.
async fn neigh_add(
    conn: &NlConn,
    vxlan: u32,
    ip: IpAddr,
    mac: MacAddr,
    replace: bool,
) -> Result<(), NlError> {
    let req = conn
        .handle()
        .neighbours()
        .add(vxlan, ip)
        .link_layer_address(&mac.0);
    let req = if replace { req.replace() } else { req };
    Ok(req.execute().await?)
}

fn failure(e: NlError, op: &'static str, peer: &Peer, conn: &NlConn) -> Error {
    nl_failure(
        e,
        op,
        format!("peer {} ({} via {})", peer.ip, peer.mac, peer.vtep),
        conn.label(),
    )
}

fn parse_mac(bytes: &[u8]) -> Option<MacAddr> {
    <[u8; 6]>::try_from(bytes).ok().map(MacAddr)
}

pub(super) fn attr_ip(m: &NeighbourMessage) -> Option<IpAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        // Bridge-family (FDB) messages carry the VTEP as raw bytes.
        NeighbourAttribute::Destination(NeighbourAddress::Other(b)) => match b.len() {
            4 => <[u8; 4]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            16 => <[u8; 16]>::try_from(b.as_slice()).ok().map(IpAddr::from),
            _ => None,
        },
        _ => None,
    })
}

pub(super) fn attr_mac(m: &NeighbourMessage) -> Option<MacAddr> {
    m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(b) => parse_mac(b),
        _ => None,
    })
}

/// The neighbour entry of `ip` on the vxlan device: its MAC and whether it is permanent.
async fn neigh_get(
    conn: &NlConn,
    vxlan: u32,
    ip: IpAddr,
) -> Result<Option<(MacAddr, bool)>, NlError> {
    match conn
        .query(
            RouteNetlinkMessage::GetNeighbour(neigh_key(vxlan, ip)),
            false,
        )
        .await
    {
        Ok(replies) => Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewNeighbour(n) => {
                attr_mac(n).map(|mac| (mac, n.header.state == NeighbourState::Permanent))
            }
            _ => None,
        })),
        Err(e) if e.is_missing() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Programs one peer. The FDB entry is created or its VTEP replaced; the neighbour entry is
/// created, kept when identical, or replaced (dropping the old MAC's FDB entry when nothing
/// else uses it).
pub(crate) async fn add(sb: &Sandbox, peer: &Peer) -> Result<()> {
    let (conn, vxlan) = (&sb.conn, sb.vxlan);
    if peer.ip.is_unspecified() || peer.vtep.is_unspecified() || peer.ip.is_multicast() {
        return Err(Error::invalid(
            "add peer",
            format!(
                "peer {} via {} is not a unicast endpoint",
                peer.ip, peer.vtep
            ),
        )
        .with_hint("give the remote endpoint's unicast IP and its host's VTEP address"));
    }
    if peer.mac.0[0] & 1 == 1 || peer.mac.0 == [0; 6] {
        return Err(Error::invalid(
            "add peer",
            format!("MAC {} is not a unicast address", peer.mac),
        )
        .with_hint("use the endpoint's unicast MAC"));
    }
    conn.handle()
        .neighbours()
        .add_bridge(vxlan, &peer.mac.0)
        .flags(NeighbourFlags::Own)
        .destination(peer.vtep)
        .replace()
        .execute()
        .await
        .map_err(|e| failure(e.into(), "add peer FDB entry", peer, conn))?;
    match neigh_add(conn, vxlan, peer.ip, peer.mac, false).await {
        Ok(()) => return Ok(()),
        Err(e) if e.is_exists() => {}
        Err(e) => return Err(failure(e, "add peer neighbour entry", peer, conn)),
    }
    let current = neigh_get(conn, vxlan, peer.ip)
        .await
        .map_err(|e| failure(e, "add peer", peer, conn))?;
    if current == Some((peer.mac, true)) {
        return Ok(());
    }
    neigh_add(conn, vxlan, peer.ip, peer.mac, true)
        .await
        .map_err(|e| failure(e, "replace peer neighbour entry", peer, conn))?;
    if let Some((old_mac, _)) = current
        && old_mac != peer.mac
    {
        let still_used = dump_neighbours(conn, vxlan)
            .await?
            .iter()
            .any(|(_, mac)| *mac == old_mac);
        if !still_used {
            let delete = neigh_del(conn, fdb_key(vxlan, old_mac, None));
            match sb.own.deleting(Deleted::Fdb(old_mac), delete).await {
                Ok(()) => {}
                Err(e) if e.is_missing() => {}
                Err(e) => return Err(failure(e, "remove replaced peer FDB entry", peer, conn)),
            }
        }
    }
    Ok(())
}

/// Programs many peers with up to [`PIPELINE`] requests in flight; reports every failure.
pub(crate) async fn add_many(sb: &Sandbox, peers: &[Peer]) -> Result<()> {
    let mut failures = Failures::default();
    let mut pending = FuturesUnordered::new();
    let mut todo = peers.iter();
    loop {
        while pending.len() < PIPELINE {
            let Some(p) = todo.next() else { break };
            pending.push(add(sb, p));
        }
        match pending.next().await {
            Some(r) => failures.record(r),
            None => break,
        }
    }
    failures.finish("add peers")
}

/// Removes a peer: its FDB entry towards its VTEP, and its neighbour entry unless the MAC is
/// still forwarded elsewhere (the endpoint moved and was re-added before this removal).
pub(crate) async fn remove(sb: &Sandbox, peer: &Peer) -> Result<()> {
    let (conn, vxlan) = (&sb.conn, sb.vxlan);
    // The kernel acks a delete naming a VTEP the entry no longer has without deleting
    // anything, so whether the MAC is still forwarded is asked afterwards.
    let delete = neigh_del(conn, fdb_key(vxlan, peer.mac, Some(peer.vtep)));
    match sb.own.deleting(Deleted::Fdb(peer.mac), delete).await {
        Ok(()) => {}
        Err(e) if e.is_missing() => {}
        Err(e) => return Err(failure(e, "remove peer FDB entry", peer, conn)),
    }
    if fdb_get(conn, vxlan, peer.mac).await?.is_some() {
        // Still forwarded: that delete deleted nothing, and no report of it will come.
        sb.own.withdraw(Deleted::Fdb(peer.mac));
        return Ok(());
    }
    if peer.ip.is_unspecified() {
        return Ok(());
    }
    match neigh_get(conn, vxlan, peer.ip).await {
        Ok(Some((mac, _))) if mac == peer.mac => {}
        Ok(_) => return Ok(()),
        Err(e) => return Err(failure(e, "remove peer", peer, conn)),
    }
    let delete = neigh_del(conn, neigh_key(vxlan, peer.ip));
    match sb.own.deleting(Deleted::Neighbour(peer.ip), delete).await {
        Ok(()) => Ok(()),
        Err(e) if e.is_missing() => Ok(()),
        Err(e) => Err(failure(e, "remove peer neighbour entry", peer, conn)),
    }
}

/// The VTEP the vxlan device forwards `mac` to, if it has an entry for it.
async fn fdb_get(conn: &NlConn, vxlan: u32, mac: MacAddr) -> Result<Option<IpAddr>> {
    match conn
        .query(
            RouteNetlinkMessage::GetNeighbour(fdb_key(vxlan, mac, None)),
            false,
        )
        .await
    {
        Ok(replies) => Ok(replies.iter().find_map(|r| match r {
            RouteNetlinkMessage::NewNeighbour(n) => attr_ip(n),
            _ => None,
        })),
        Err(e) if e.is_missing() => Ok(None),
        // Kernels before 5.0 have no single-entry FDB get.
        Err(e) if matches!(e.errno(), Some(libc::EOPNOTSUPP | libc::EINVAL)) => {
            Ok(dump_fdb(conn, vxlan).await?.get(&mac).copied())
        }
        Err(e) => Err(nl_failure(
            e,
            "remove peer",
            format!("FDB entry of {mac}"),
            conn.label(),
        )),
    }
}

/// The entries of `family` on device `ifindex` (the kernel filters: strict checking is on).
async fn dump(
    conn: &NlConn,
    family: AddressFamily,
    ifindex: u32,
) -> Result<Vec<NeighbourMessage>, NlError> {
    let mut get = conn.handle().neighbours().get().set_address_family(family);
    // The request has no setter for the device filter (NDA_IFINDEX).
    get.message_mut()
        .attributes
        .push(NeighbourAttribute::IfIndex(ifindex));
    NlConn::collect(get.execute()).await
}

/// Deletes the entry `key` names.
async fn neigh_del(conn: &NlConn, key: NeighbourMessage) -> Result<(), NlError> {
    NlConn::done(conn.handle().neighbours().del(key).execute()).await
}

/// Permanent neighbour entries (IPv4 and IPv6) of the vxlan device.
async fn dump_neighbours(conn: &NlConn, vxlan: u32) -> Result<Vec<(IpAddr, MacAddr)>> {
    let mut out = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let replies = dump(conn, family, vxlan)
            .await
            .map_err(|e| nl_failure(e, "list peers", "neighbour entries".into(), conn.label()))?;
        for n in &replies {
            if n.header.ifindex == vxlan
                && n.header.state == NeighbourState::Permanent
                && let (Some(ip), Some(mac)) = (attr_ip(n), attr_mac(n))
            {
                out.push((ip, mac));
            }
        }
    }
    Ok(out)
}

/// The vxlan device's own FDB entries with a remote: MAC → VTEP.
async fn dump_fdb(conn: &NlConn, vxlan: u32) -> Result<HashMap<MacAddr, IpAddr>> {
    let replies = dump(conn, AddressFamily::Bridge, vxlan)
        .await
        .map_err(|e| nl_failure(e, "list peers", "FDB entries".into(), conn.label()))?;
    let mut out = HashMap::with_capacity(replies.len());
    for n in &replies {
        if n.header.ifindex == vxlan
            && n.header.flags.contains(NeighbourFlags::Own)
            && let (Some(vtep), Some(mac)) = (attr_ip(n), attr_mac(n))
            && mac.0 != [0; 6]
        {
            out.insert(mac, vtep);
        }
    }
    Ok(out)
}

/// What the kernel holds, joined into peers; half entries come back with an unspecified VTEP
/// (neighbour only) or IP (FDB only) so a diff replaces them.
pub(crate) async fn list(conn: &NlConn, vxlan: u32) -> Result<Vec<Peer>> {
    let (neighbours, fdb) = tokio::join!(dump_neighbours(conn, vxlan), dump_fdb(conn, vxlan));
    let (neighbours, mut fdb) = (neighbours?, fdb?);
    let mut used = std::collections::HashSet::with_capacity(neighbours.len());
    let mut peers: Vec<Peer> = neighbours
        .into_iter()
        .map(|(ip, mac)| {
            used.insert(mac);
            let vtep = fdb
                .get(&mac)
                .copied()
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            Peer { ip, mac, vtep }
        })
        .collect();
    fdb.retain(|mac, _| !used.contains(mac));
    peers.extend(fdb.into_iter().map(|(mac, vtep)| Peer {
        ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        mac,
        vtep,
    }));
    peers.sort();
    Ok(peers)
}
