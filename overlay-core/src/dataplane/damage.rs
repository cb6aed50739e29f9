//! Damage to a sandbox done behind the agent's back, as the kernel reports it, and the cheap
//! comparison that finds what a report was missed for.

use futures::StreamExt;
use netlink_packet_core::NetlinkPayload;
use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::neighbour::{NeighbourFlags, NeighbourState};
use tokio::sync::broadcast;

use super::conn::Notifications;
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
/// or of a permanent entry on the vxlan device (`vxlan`). Additions and the kernel's own
/// neighbour cache churn on the bridge are not damage.
fn damaged(msg: &RouteNetlinkMessage, vxlan: u32) -> Option<Damaged> {
    match msg {
        RouteNetlinkMessage::DelLink(_) => Some(Damaged::Links),
        RouteNetlinkMessage::DelNeighbour(n) if n.header.ifindex == vxlan => {
            let fdb = n.header.family == AddressFamily::Bridge
                && n.header.flags.contains(NeighbourFlags::Own);
            let permanent = n.header.state == NeighbourState::Permanent;
            (fdb || permanent).then_some(Damaged::Peers)
        }
        _ => None,
    }
}

/// Turns the notifications of `network`'s sandbox into [`Damage`] reports until the sandbox's
/// connection closes.
pub(crate) fn forward(
    mut notes: Notifications,
    network: NetworkId,
    vxlan: u32,
    reports: broadcast::Sender<Damage>,
) {
    tokio::spawn(async move {
        while let Some((msg, _)) = notes.next().await {
            let what: &[Damaged] = match &msg.payload {
                NetlinkPayload::InnerMessage(inner) => match damaged(inner, vxlan) {
                    Some(Damaged::Links) => &[Damaged::Links],
                    Some(Damaged::Peers) => &[Damaged::Peers],
                    None => &[],
                },
                // The socket's buffer overflowed: reports were lost, so anything may be gone.
                NetlinkPayload::Overrun(_) => &[Damaged::Links, Damaged::Peers],
                _ => &[],
            };
            for &what in what {
                // Nobody listening is not an error.
                let _ = reports.send(Damage { network, what });
            }
        }
    });
}
