//! Damage to a sandbox done behind the agent's back, as the kernel reports it, and the cheap
//! comparison that finds what a report was missed for.

use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use tokio::sync::broadcast;

use super::conn::Notifications;
use super::own::{Deleted, OwnDeletions};
use super::peer::{attr_ip, attr_mac};
use super::sandbox::Sandbox;
use crate::model::NetworkId;

/// Reports buffered per receiver before the slowest one is told it lagged (it then checks
/// everything).
pub(crate) const BACKLOG: usize = 1024;

/// What of a sandbox the kernel reported deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Damaged {
    /// A device: the bridge, the vxlan device, or a container's interface.
    Links,
    /// A peer's neighbour or FDB entry.
    Peers,
}

/// One report: network `network`'s sandbox lost `what`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Damage {
    /// The network whose sandbox it is.
    pub network: NetworkId,
    /// What went.
    pub what: Damaged,
}

/// What [`Dataplane::check_sandbox`](super::Dataplane::check_sandbox) found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCheck {
    /// Whether the sandbox and its own devices are there as they were made; when not, it
    /// must be ensured again (and every container re-attached, every peer replayed).
    pub intact: bool,
    /// Indexes (into the `attached` asked about) of the containers whose interface is gone.
    pub detached: Vec<usize>,
}

/// What a notification from a sandbox's namespace means, if anything: the deletion of a link,
/// or of a permanent entry on the vxlan device (`vxlan`), that this dataplane did not make
/// itself (`own`). Additions and the kernel's own neighbour cache churn on the bridge are not
/// damage.
fn damaged(msg: &RouteNetlinkMessage, vxlan: u32, own: &OwnDeletions) -> Option<Damaged> {
    match msg {
        // A bridge port's deletion is reported twice, the second time in the bridge family:
        // one report per link is enough.
        RouteNetlinkMessage::DelLink(l) if l.header.interface_family == AddressFamily::Bridge => {
            None
        }
        RouteNetlinkMessage::DelLink(l) => {
            (!own.take(Deleted::Link(l.header.index))).then_some(Damaged::Links)
        }
        RouteNetlinkMessage::DelNeighbour(n) if n.header.ifindex == vxlan => {
            let entry = if n.header.family == AddressFamily::Bridge {
                if !n.header.flags.contains(NeighbourFlags::Own) {
                    return None;
                }
                attr_mac(n).map(Deleted::Fdb)
            } else {
                if n.header.state != NeighbourState::Permanent {
                    return None;
                }
                attr_ip(n).map(Deleted::Neighbour)
            };
            match entry {
                Some(d) if own.take(d) => None,
                _ => Some(Damaged::Peers),
            }
        }
        _ => None,
    }
}

/// Turns the notifications of `network`'s sandbox `sb` into [`Damage`] reports until the
/// sandbox's connection closes.
pub(crate) fn forward(
    mut notes: Notifications,
    network: NetworkId,
    sb: &Sandbox,
    reports: broadcast::Sender<Damage>,
) {
    let (vxlan, own, flag) = (sb.vxlan, sb.own.clone(), sb.damaged.clone());
    tokio::spawn(async move {
        while let Some((msg, _)) = notes.next().await {
            let what: &[Damaged] = match &msg.payload {
                NetlinkPayload::InnerMessage(inner) => match damaged(inner, vxlan, &own) {
                    Some(Damaged::Links) => &[Damaged::Links],
                    Some(Damaged::Peers) => &[Damaged::Peers],
                    None => &[],
                },
                // The socket's buffer overflowed: reports were lost, so anything may be gone.
                NetlinkPayload::Overrun(_) => &[Damaged::Links, Damaged::Peers],
                _ => &[],
            };
            if what.contains(&Damaged::Links) {
                flag.store(true, std::sync::atomic::Ordering::Release);
            }
            for &what in what {
                // Nobody listening is not an error.
                let _ = reports.send(Damage { network, what });
            }
        }
    });
}
