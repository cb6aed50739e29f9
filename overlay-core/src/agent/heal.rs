//! Putting back kernel state removed behind the agent's back (flannel never replayed its
//! entries after its vxlan device was recreated).
//!
//! The kernel reports each deletion in a sandbox ([`Dataplane::damage`]); the network it hit is
//! healed at once. Each sweep also checks every network, for reports that were lost (a
//! receiver that lagged, a dataplane that cannot report). A check is cheap: one link dump over
//! the sandbox's open connection, one neighbour dump for the peers; only what is missing is
//! redone.
//!
//! [`Dataplane::damage`]: crate::dataplane::Dataplane::damage

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;

use super::Shared;
use crate::dataplane::{Damaged, NetnsId};
use crate::model::{Endpoint, NetworkId};

/// How long reports are gathered after the first before healing: a device deleted takes its
/// entries with it, and one heal repairs all of it.
const GATHER: Duration = Duration::from_millis(5);

/// What to look at in one network.
#[derive(Debug, Clone, Copy, Default)]
struct Scope {
    links: bool,
    peers: bool,
}

const EVERYTHING: Scope = Scope {
    links: true,
    peers: true,
};

/// The task that heals networks as the kernel reports damage; idles when the dataplane cannot
/// report any.
pub(super) async fn run(shared: Arc<Shared>) {
    let Some(mut reports) = shared.dataplane.damage() else {
        return std::future::pending().await;
    };
    loop {
        let mut todo: BTreeMap<NetworkId, Scope> = BTreeMap::new();
        let mut everything = false;
        match reports.recv().await {
            Ok(d) => note(&mut todo, d),
            Err(RecvError::Lagged(_)) => everything = true,
            Err(RecvError::Closed) => return,
        }
        let until = tokio::time::Instant::now() + GATHER;
        loop {
            match tokio::time::timeout_at(until, reports.recv()).await {
                Ok(Ok(d)) => note(&mut todo, d),
                Ok(Err(RecvError::Lagged(_))) => everything = true,
                Ok(Err(RecvError::Closed)) | Err(_) => break,
            }
        }
        if everything {
            all(&shared).await;
            continue;
        }
        for (id, scope) in todo {
            network(&shared, &id, scope).await;
        }
    }
}

fn note(todo: &mut BTreeMap<NetworkId, Scope>, d: crate::dataplane::Damage) {
    let scope = todo.entry(d.network).or_default();
    match d.what {
        Damaged::Links => scope.links = true,
        Damaged::Peers => scope.peers = true,
    }
}

/// Checks and heals every network with containers on this host.
pub(super) async fn all(shared: &Shared) {
    let ids: Vec<NetworkId> = shared.state().nets.keys().copied().collect();
    for id in ids {
        network(shared, &id, EVERYTHING).await;
    }
    gateway(shared).await;
}

/// Puts back what is missing of the gateway (one link dump finds it) and makes the firewall
/// table again (one transaction), when an endpoint uses them.
async fn gateway(shared: &Shared) {
    let _gateway = shared.gateway_lock.clone().lock_owned().await;
    super::gateway::heal(shared).await;
}

/// Heals one network: its sandbox and containers' interfaces when `scope.links` (only what is
/// missing; everything when the sandbox itself was lost), its peers when `scope.peers` or the
/// sandbox was rebuilt.
async fn network(shared: &Shared, id: &NetworkId, scope: Scope) {
    let Some(lock) = shared.state().nets.get(id).map(|ns| ns.reconciling.clone()) else {
        return;
    };
    // Connects and disconnects of this network wait meanwhile, so that a heal never
    // restores an interface a disconnect is removing, nor misses one a connect just made.
    let _network = shared.lock_network(id).await;
    let mut peers = scope.peers;
    if scope.links {
        let serial = lock.lock().await;
        // Read under the network's lock: a `leave` that removed the network meanwhile must
        // not see its sandbox come back.
        let Some((net, local)) = shared.state().nets.get(id).map(|ns| {
            let local: Vec<Endpoint> = ns
                .view
                .endpoints()
                .filter(|e| shared.is_local(e))
                .cloned()
                .collect();
            (ns.network.clone(), local)
        }) else {
            return;
        };
        // The namespace to enter comes from this host's own state, and only while it is
        // still the namespace that was connected (never from the record).
        let entries: Vec<_> = local
            .iter()
            .filter_map(|ep| {
                let entry = shared.local.get(&ep.id).filter(|l| l.namespace_alive())?;
                Some((ep, entry))
            })
            .collect();
        let attached: Vec<(NetnsId, String)> = entries
            .iter()
            .map(|(ep, entry)| {
                let ns = NetnsId {
                    dev: entry.netns_identity.dev,
                    ino: entry.netns_identity.ino,
                };
                (ns, ep.ifname.clone())
            })
            .collect();
        let dp = &shared.dataplane;
        let detached = match dp.check_sandbox(id, &attached).await {
            Ok(check) if check.intact => check.detached,
            outcome => {
                if let Err(e) = outcome {
                    tracing::warn!(network = %net.name, error = %e, "cannot check the sandbox; rebuilding it");
                }
                super::dns::release(shared, id).await;
                if let Err(e) = dp.ensure_sandbox(&shared.cfg.sandbox_spec(&net)).await {
                    tracing::warn!(network = %net.name, error = %e, "cannot restore the sandbox");
                    return;
                }
                tracing::info!(network = %net.name, "sandbox restored");
                peers = true;
                (0..entries.len()).collect()
            }
        };
        for i in detached {
            let (ep, entry) = &entries[i];
            if entry.handoff {
                // Its runtime moved the interface into the container: with the port gone, the
                // container's end went too, and only the runtime can give it a new one.
                tracing::warn!(container = %ep.name, network = %net.name, "a handed-off interface is gone; its runtime must reconnect the container");
                continue;
            }
            match dp.attach(id, &entry.attach_spec(ep)).await {
                Ok(_) => {
                    tracing::info!(container = %ep.name, network = %net.name, "interface restored")
                }
                Err(e) => {
                    tracing::warn!(container = %ep.name, error = %e, "cannot restore the interface")
                }
            }
        }
        drop(serial);
        // A sandbox rebuilt in a new namespace needs its resolver started there.
        super::dns::ensure(shared, &net).await;
    }
    if peers {
        super::network::reconcile(shared, id, true).await;
    }
}
