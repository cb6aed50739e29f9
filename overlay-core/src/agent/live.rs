//! Which hosts are alive (their ephemeral records), and which networks exist, followed by
//! watching the store. Both loops survive store outages: on an error they back off, re-list
//! and watch again; nothing is torn down while the store is away.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Shared;
use super::health::Trouble;
use crate::error::Result;
use crate::model::{Host, HostId, Network, NetworkId, Record, keys};
use crate::report::ControllerEvent;
use crate::store::{KvStore, Listing, WatchEvent};

fn host_of_key(key: &str) -> Option<HostId> {
    key.strip_prefix(keys::HOSTS)?
        .strip_prefix('/')?
        .parse()
        .ok()
}

/// The hosts whose records exist now.
pub(super) async fn list_hosts(store: &dyn KvStore) -> Result<BTreeSet<HostId>> {
    let listing = store.list(keys::HOSTS).await?;
    Ok(listing
        .kvs
        .iter()
        .filter(|kv| Host::decode(&kv.key, &kv.value).is_ok())
        .filter_map(|kv| host_of_key(&kv.key))
        .collect())
}

/// Keeps `shared.live` equal to the set of host records.
pub(super) async fn watch_hosts(shared: Arc<Shared>) {
    let mut trouble = Trouble::new(shared.board.clone(), "hosts");
    loop {
        let listing = match shared.store.list(keys::HOSTS).await {
            Ok(l) => l,
            Err(e) => {
                trouble.failed("listing hosts", &e).await;
                continue;
            }
        };
        let now: BTreeSet<HostId> = listing
            .kvs
            .iter()
            .filter(|kv| Host::decode(&kv.key, &kv.value).is_ok())
            .filter_map(|kv| host_of_key(&kv.key))
            .collect();
        shared
            .live
            .send_if_modified(|live| std::mem::replace(live, now.clone()) != now);
        let mut watch = match shared
            .store
            .watch(keys::HOSTS, Some(listing.revision))
            .await
        {
            Ok(w) => w,
            Err(e) => {
                trouble.failed("watching hosts", &e).await;
                continue;
            }
        };
        trouble.ok();
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Put(kv))) => {
                    let Some(id) = host_of_key(&kv.key) else {
                        continue;
                    };
                    if let Err(e) = Host::decode(&kv.key, &kv.value) {
                        tracing::warn!(key = %kv.key, error = %e, "skipping a host record");
                        continue;
                    }
                    shared.live.send_if_modified(|live| live.insert(id));
                }
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    let Some(id) = host_of_key(&key) else {
                        continue;
                    };
                    tracing::info!(host = %id, "host left the cluster");
                    shared.live.send_if_modified(|live| live.remove(&id));
                }
                Some(Ok(WatchEvent::Resync { reason })) => {
                    tracing::info!(%reason, "host watch lost events; re-listing");
                    break;
                }
                Some(Err(e)) => {
                    trouble.failed("the host watch", &e).await;
                    break;
                }
                None => return,
            }
        }
    }
}

/// Reports networks created and removed anywhere, as [`ControllerEvent`]s, from the
/// networks of `initial` (listed before the agent's start returned, so that a network created
/// right after the start is reported: the watch follows from that listing's revision); a
/// restarted task lists again.
pub(super) async fn watch_networks(shared: Arc<Shared>, mut initial: Option<Listing>) {
    let mut known: BTreeMap<NetworkId, String> = BTreeMap::new();
    let mut first = true;
    let mut trouble = Trouble::new(shared.board.clone(), "networks");
    loop {
        let listing = match initial.take() {
            Some(l) => l,
            None => match shared.store.list(keys::NETWORKS).await {
                Ok(l) => l,
                Err(e) => {
                    trouble.failed("listing networks", &e).await;
                    continue;
                }
            },
        };
        let now: BTreeMap<NetworkId, String> = listing
            .kvs
            .iter()
            .filter_map(|kv| Network::decode(&kv.key, &kv.value).ok())
            .map(|n| (n.id, n.name))
            .collect();
        if !first {
            for (id, name) in now.iter().filter(|(id, _)| !known.contains_key(id)) {
                shared.emit(ControllerEvent::NetworkCreated {
                    id: id.to_string(),
                    name: name.clone(),
                });
            }
            for (id, name) in known.iter().filter(|(id, _)| !now.contains_key(id)) {
                shared.emit(ControllerEvent::NetworkRemoved {
                    id: id.to_string(),
                    name: name.clone(),
                });
            }
        }
        first = false;
        known = now;
        let mut watch = match shared
            .store
            .watch(keys::NETWORKS, Some(listing.revision))
            .await
        {
            Ok(w) => w,
            Err(e) => {
                trouble.failed("watching networks", &e).await;
                continue;
            }
        };
        trouble.ok();
        loop {
            match watch.next().await {
                Some(Ok(WatchEvent::Put(kv))) => match Network::decode(&kv.key, &kv.value) {
                    Ok(n) if !known.contains_key(&n.id) => {
                        shared.emit(ControllerEvent::NetworkCreated {
                            id: n.id.to_string(),
                            name: n.name.clone(),
                        });
                        known.insert(n.id, n.name);
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(key = %kv.key, error = %e, "skipping a network record")
                    }
                },
                Some(Ok(WatchEvent::Delete { key, .. })) => {
                    let id = key
                        .strip_prefix(keys::NETWORKS)
                        .and_then(|rest| rest.strip_prefix('/'))
                        .and_then(|s| s.parse::<NetworkId>().ok());
                    if let Some((id, name)) = id.and_then(|id| known.remove_entry(&id)) {
                        shared.emit(ControllerEvent::NetworkRemoved {
                            id: id.to_string(),
                            name,
                        });
                    }
                }
                Some(Ok(WatchEvent::Resync { reason })) => {
                    tracing::info!(%reason, "network watch lost events; re-listing");
                    break;
                }
                Some(Err(e)) => {
                    trouble.failed("the network watch", &e).await;
                    break;
                }
                None => return,
            }
        }
    }
}
