//! Reclaiming what dead hosts, dead containers and dead processes left: endpoints of hosts
//! whose record has been gone longer than the grace (libnetwork never did this: a crashed
//! host's endpoints and addresses stayed forever), this host's containers whose namespace went
//! away without a disconnect (a container that died, a runtime that crashed before its DEL),
//! and addresses allocated by a process that died before publishing its endpoint (the IPAM's
//! collector).
//!
//! Every agent sweeps; removals are conditional on the version read, so agents racing to
//! reclaim the same endpoint cannot do harm.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use super::local::LocalEndpoint;
use crate::error::ErrorKind;
use crate::model::{Endpoint, EndpointId, HostId, Record, keys};

/// How often this host's containers are checked for a namespace that went away: each check is
/// a `stat` per container, so it runs more often than the sweep.
const CONTAINER_CHECK: Duration = Duration::from_secs(2);

/// How often a sweep runs, at most and at least.
fn period(grace: Duration) -> Duration {
    (grace / 2).clamp(Duration::from_millis(200), Duration::from_secs(30))
}

pub(super) async fn run(shared: Arc<Shared>) {
    let grace = shared.cfg.reclaim_grace;
    let mut dead_since: BTreeMap<HostId, Instant> = BTreeMap::new();
    let mut trouble = super::health::Trouble::new(shared.board.clone(), "sweep");
    let tick = period(grace).min(CONTAINER_CHECK);
    let mut suspects = BTreeSet::new();
    let mut next_sweep = Instant::now() + period(grace);
    loop {
        tokio::time::sleep(tick).await;
        collect_dead_containers(&shared, &mut suspects).await;
        if Instant::now() < next_sweep {
            continue;
        }
        next_sweep = Instant::now() + period(grace);
        match sweep(&shared, grace, &mut dead_since).await {
            Ok(()) => {
                trouble.ok();
                shared.board.swept();
            }
            // The sweep's own period spaces the retries; the backoff adds nothing to wait.
            Err(e) => {
                trouble.backoff.reset();
                trouble.failed("the sweep", &e).await;
            }
        }
        super::heal::all(&shared).await;
    }
}

/// This host's containers whose namespace is gone (or is no longer the one connected): seen
/// gone on one check, collected on the next if still gone (a namespace being replaced is not
/// a death). `suspects` carries the first sightings from check to check.
async fn collect_dead_containers(shared: &Shared, suspects: &mut BTreeSet<EndpointId>) {
    let dead: Vec<LocalEndpoint> = shared
        .local
        .all()
        .into_iter()
        .filter(|e| !e.namespace_alive())
        .collect();
    let now: BTreeSet<EndpointId> = dead.iter().map(|e| e.endpoint).collect();
    suspects.retain(|id| now.contains(id));
    for entry in dead {
        if suspects.insert(entry.endpoint) {
            continue;
        }
        if collect_container(shared, &entry).await {
            suspects.remove(&entry.endpoint);
        }
    }
}

/// Does what a disconnect would have done for a container that went away: its endpoint record
/// goes (every host drops its peer and names), its addresses go back (a sticky one stays
/// reserved for its name), the files made for it go. Returns whether it is done; a failure
/// is retried on the next check.
async fn collect_container(shared: &Shared, entry: &LocalEndpoint) -> bool {
    let _network = shared.lock_network(&entry.network).await;
    // A disconnect may have handled it while this check waited for the lock.
    if !shared.local.contains(&entry.endpoint) {
        return true;
    }
    let key = keys::endpoint(&entry.network, &entry.endpoint);
    let record = match shared.store.get(&key).await {
        Ok(kv) => kv,
        Err(e) => {
            tracing::warn!(container = %entry.container_id, error = %e, "cannot read the endpoint of a container that went away; retrying");
            return false;
        }
    };
    if let Some(kv) = record {
        let ep = match Endpoint::decode(&kv.key, &kv.value) {
            Ok(ep) => ep,
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "the endpoint of a container that went away does not decode; leaving it");
                return true;
            }
        };
        let removed = match super::endpoint_removal(shared.store.as_ref(), &ep, kv.version).await {
            Ok(ops) => shared.store.txn(&ops).await,
            Err(e) => Err(e),
        };
        match removed {
            Ok(_) => {}
            // Rewritten meanwhile: the next check looks again.
            Err(e) if e.kind() == ErrorKind::Conflict => return false,
            Err(e) => {
                tracing::warn!(container = %ep.name, error = %e, "cannot remove the endpoint of a container that went away; retrying");
                return false;
            }
        }
        for ip in ep.addresses() {
            if let Err(e) = shared
                .ipam
                .release(&ep.network, ip, &ep.id.to_string())
                .await
            {
                tracing::warn!(%ip, error = %e, "could not release an address; the collector will");
            }
        }
        tracing::info!(container = %ep.name, network = %ep.network.short(), "collected the endpoint of a container that went away");
    }
    shared.leave(&entry.network, &entry.endpoint).await;
    // The entry goes first: the file writer writes only for containers this host still has,
    // so once it is gone no pass brings the files back after they are removed.
    if let Err(e) = shared.local.remove(&entry.endpoint) {
        tracing::warn!(container = %entry.container_id, error = %e, "could not remove the host state of a collected container");
    }
    remove_files(shared, entry);
    let _gateway = shared.gateway_lock.clone().lock_owned().await;
    super::gateway::release(shared, entry).await;
    true
}

/// Removes the hosts file and `resolv.conf` the agent wrote for a collected container, and
/// their directories if connect made them. Another endpoint of the same container keeps them.
fn remove_files(shared: &Shared, entry: &LocalEndpoint) {
    let others = shared.local.all();
    let others: Vec<&LocalEndpoint> = others
        .iter()
        .filter(|o| o.endpoint != entry.endpoint)
        .collect();
    let files = [
        (&entry.hosts_file, entry.hosts_dir_made, false),
        (&entry.resolv_conf, entry.resolv_dir_made, true),
    ];
    let mut dirs = Vec::new();
    for (path, dir_made, resolv) in files {
        let Some(path) = path else { continue };
        let of = |o: &LocalEndpoint| {
            if resolv {
                o.resolv_conf.clone()
            } else {
                o.hosts_file.clone()
            }
        };
        if others.iter().any(|o| of(o).as_ref() == Some(path)) {
            continue;
        }
        if let Err(e) = shared.files.remove(path) {
            tracing::warn!(file = %path.display(), error = %e, "could not remove a collected container's file");
        }
        if dir_made && let Some(dir) = path.parent() {
            dirs.push(dir.to_path_buf());
        }
    }
    for dir in dirs {
        // Only if empty: anything else in it is not ours.
        let _ = std::fs::remove_dir(dir);
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
        Err(e) => tracing::warn!(error = %e, "the IPAM collector failed; the next sweep retries"),
    }
    Ok(())
}

/// Removes a dead host's endpoint and gives its addresses back (a sticky one stays reserved
/// for its name).
async fn reclaim(shared: &Shared, ep: &Endpoint, version: crate::store::Version) {
    let ops = match super::endpoint_removal(shared.store.as_ref(), ep, version).await {
        Ok(ops) => ops,
        Err(e) => {
            tracing::warn!(container = %ep.name, error = %e, "cannot read a dead host's endpoint keys; the next sweep retries");
            return;
        }
    };
    match shared.store.txn(&ops).await {
        Ok(_) => {}
        // Another agent reclaimed it first, or the host came back and rewrote it.
        Err(e) if e.kind() == ErrorKind::Conflict => return,
        Err(e) => {
            tracing::warn!(container = %ep.name, error = %e, "reclaiming a dead host's endpoint failed; the next sweep retries");
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
