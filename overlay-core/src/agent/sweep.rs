//! Reclaiming what dead hosts and dead processes left: endpoints of hosts whose record has
//! been gone longer than the grace (libnetwork never did this: a crashed host's endpoints and
//! addresses stayed forever), and addresses allocated by a process that died before
//! publishing its endpoint (the IPAM's collector).
//!
//! Every agent sweeps; removals are conditional on the version read, so agents racing to
//! reclaim the same endpoint cannot do harm.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::error::ErrorKind;
use crate::model::{Endpoint, HostId, Record, keys};

/// How often a sweep runs, at most and at least.
fn period(grace: Duration) -> Duration {
    (grace / 2).clamp(Duration::from_millis(200), Duration::from_secs(30))
}

pub(super) async fn run(shared: Arc<Shared>) {
    let grace = shared.cfg.reclaim_grace;
    let mut dead_since: BTreeMap<HostId, Instant> = BTreeMap::new();
    loop {
        tokio::time::sleep(period(grace)).await;
        if let Err(e) = sweep(&shared, grace, &mut dead_since).await {
            tracing::debug!(error = %e, "sweep failed; will retry");
        }
        heal(&shared).await;
    }
}

/// Puts back kernel state that was removed behind the agent's back (flannel never replayed
/// its entries after its vxlan device was recreated): every sandbox is ensured again, every
/// local container re-attached (both idempotent), and peers diffed against the kernel.
async fn heal(shared: &Shared) {
    let ids: Vec<crate::model::NetworkId> = shared.state().nets.keys().copied().collect();
    for id in ids {
        let Some(lock) = shared
            .state()
            .nets
            .get(&id)
            .map(|ns| ns.reconciling.clone())
        else {
            continue;
        };
        let serial = lock.lock().await;
        // Read under the network's lock: a `leave` that removed the network meanwhile must
        // not see its sandbox come back.
        let Some((net, local)) = shared.state().nets.get(&id).map(|ns| {
            let local: Vec<Endpoint> = ns
                .view
                .endpoints()
                .filter(|e| shared.is_local(e))
                .cloned()
                .collect();
            (ns.network.clone(), local)
        }) else {
            continue;
        };
        let dp = &shared.dataplane;
        if let Err(e) = dp.ensure_sandbox(&shared.cfg.sandbox_spec(&net)).await {
            tracing::warn!(network = %net.name, error = %e, "cannot restore the sandbox");
            continue;
        }
        for ep in local {
            // The namespace to enter comes from this host's own state, and only while it is
            // still the namespace that was connected (never from the record).
            let Some(entry) = shared.local.get(&ep.id).filter(|l| l.namespace_alive()) else {
                continue;
            };
            let spec = crate::dataplane::AttachSpec {
                netns: entry.netns,
                ifname: ep.ifname.clone(),
                ipv4: ep.ipv4,
                ipv6: ep.ipv6,
                mac: Some(ep.mac),
                mtu: None,
            };
            if let Err(e) = dp.attach(&net.id, &spec).await {
                tracing::warn!(container = %ep.name, error = %e, "cannot restore the interface");
            }
        }
        drop(serial);
        super::network::reconcile(shared, &net.id, true).await;
    }
}

async fn sweep(
    shared: &Shared,
    grace: Duration,
    dead_since: &mut BTreeMap<HostId, Instant>,
) -> crate::Result<()> {
    let listing = shared.store.list(keys::ENDPOINTS).await?;
    let live = shared.live.borrow().clone();
    let now = Instant::now();
    dead_since.retain(|h, _| !live.contains(h));
    let mut owners = HashSet::new();
    for kv in &listing.kvs {
        let ep = match Endpoint::decode(&kv.key, &kv.value) {
            Ok(ep) => ep,
            Err(_) => continue,
        };
        owners.insert(ep.id.to_string());
        if live.contains(&ep.host) {
            continue;
        }
        let since = *dead_since.entry(ep.host.clone()).or_insert(now);
        if now.duration_since(since) < grace {
            continue;
        }
        reclaim(shared, &ep, kv.version).await;
        owners.remove(&ep.id.to_string());
    }
    match shared.ipam.collect(&owners).await {
        Ok(report) if report.reclaimed + report.expired + report.orphans > 0 => {
            tracing::info!(?report, "IPAM collector freed addresses");
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %e, "IPAM collector failed"),
    }
    Ok(())
}

/// Removes a dead host's endpoint and gives its addresses back (a sticky one stays reserved
/// for its name).
async fn reclaim(shared: &Shared, ep: &Endpoint, version: crate::store::Version) {
    let ops = match super::endpoint_removal(shared.store.as_ref(), ep, version).await {
        Ok(ops) => ops,
        Err(e) => {
            tracing::debug!(error = %e, "cannot read an endpoint's keys");
            return;
        }
    };
    match shared.store.txn(&ops).await {
        Ok(_) => {}
        // Another agent reclaimed it first, or the host came back and rewrote it.
        Err(e) if e.kind() == ErrorKind::Conflict => return,
        Err(e) => {
            tracing::debug!(error = %e, "reclaiming an endpoint failed");
            return;
        }
    }
    tracing::info!(container = %ep.name, host = %ep.host, "reclaimed the endpoint of a dead host");
    for ip in ep.addresses() {
        if let Err(e) = shared
            .ipam
            .release(&ep.network, ip, &ep.id.to_string())
            .await
        {
            tracing::debug!(%ip, error = %e, "releasing a reclaimed address failed; the collector will");
        }
    }
}
