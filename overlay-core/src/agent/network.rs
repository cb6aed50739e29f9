//! One network with containers on this host: follow its endpoints (list, then watch deltas),
//! program the difference into the sandbox, and tell the file writer which names changed.

use std::sync::Arc;

use super::Shared;
use super::health::Trouble;
use super::view::Change;
use crate::dataplane::Peer;
use crate::model::{NetworkId, keys};
use crate::report::ControllerEvent;
use crate::store::{Listing, WatchEvent};

/// Reports `change`, and marks the files of the local containers it concerns.
pub(super) fn emit_changes(shared: &Shared, change: &Change) {
    for ep in &change.up {
        shared.emit(ControllerEvent::up(ep));
    }
    for ep in &change.down {
        shared.emit(ControllerEvent::down(ep));
    }
    for ep in change.up.iter().chain(&change.down) {
        if ep.host == *shared.me() {
            shared.files.container_changed(&ep.container_id);
        }
    }
}

/// The name of network `id`'s task on the health board.
pub(super) fn task_name(shared: &Shared, id: &NetworkId) -> String {
    let name = shared
        .state()
        .nets
        .get(id)
        .map(|ns| ns.network.name.clone())
        .unwrap_or_else(|| id.short());
    format!("network {name}")
}

/// The network's watch loop, from the endpoints of `initial` (listed by [`Agent::join`]) or
/// from a listing of its own; ends when the store closes or the task is aborted.
///
/// [`Agent::join`]: super::Agent::join
pub(super) async fn run(shared: Arc<Shared>, id: NetworkId, mut initial: Option<Listing>) {
    let prefix = keys::endpoints(&id);
    let mut live = shared.live.subscribe();
    let mut trouble = Trouble::new(shared.board.clone(), task_name(&shared, &id));
    loop {
        let listing = match initial.take() {
            Some(l) => l,
            None => match shared.store.list(&prefix).await {
                Ok(l) => l,
                Err(e) => {
                    trouble.failed("listing endpoints", &e).await;
                    continue;
                }
            },
        };
        let change = {
            let mut st = shared.state();
            let Some(ns) = st.nets.get_mut(&id) else {
                return;
            };
            ns.dirty = true;
            ns.view.replace(&id, &listing.kvs)
        };
        emit_changes(&shared, &change);
        reconcile(&shared, &id, true).await;
        let mut watch = match shared.store.watch(&prefix, Some(listing.revision)).await {
            Ok(w) => w,
            Err(e) => {
                trouble.failed("watching endpoints", &e).await;
                continue;
            }
        };
        trouble.ok();
        loop {
            tokio::select! {
                ev = watch.next() => match ev {
                    Some(Ok(ev)) => {
                        let change = {
                            let mut st = shared.state();
                            let Some(ns) = st.nets.get_mut(&id) else { return };
                            ns.view.apply(&id, &ev)
                        };
                        if change.resync {
                            if let WatchEvent::Resync { reason } = &ev {
                                tracing::info!(%reason, "endpoint watch lost events; resyncing");
                            }
                            break;
                        }
                        if change.changed() {
                            emit_changes(&shared, &change);
                            reconcile(&shared, &id, false).await;
                        }
                    }
                    Some(Err(e)) => {
                        trouble.failed("the endpoint watch", &e).await;
                        break;
                    }
                    None => return,
                },
                changed = live.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    reconcile(&shared, &id, false).await;
                }
            }
        }
    }
}

/// Brings the sandbox's peers in line with the view, and rewrites affected hosts files.
///
/// Incremental runs diff against what this agent programmed last; a `full` run (after a
/// (re)listing, or when an earlier step failed) diffs against what the kernel holds, so
/// leftovers are removed and nothing present is added twice.
pub(super) async fn reconcile(shared: &Shared, id: &NetworkId, full: bool) {
    let lock = match shared.state().nets.get(id) {
        Some(ns) => ns.reconciling.clone(),
        None => return,
    };
    let _serial = lock.lock().await;
    let (desired, programmed, dirty) = {
        let st = shared.state();
        let Some(ns) = st.nets.get(id) else { return };
        let live = shared.live.borrow();
        (
            ns.view.remote_peers(shared.me(), &live),
            ns.programmed.clone(),
            ns.dirty,
        )
    };
    let actual = if full || dirty {
        match shared.dataplane.list_peers(id).await {
            Ok(peers) => peers.into_iter().collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the sandbox's peers");
                programmed
            }
        }
    } else {
        programmed
    };
    let remove: Vec<Peer> = actual.difference(&desired).copied().collect();
    let add: Vec<Peer> = desired.difference(&actual).copied().collect();
    let mut ok = true;
    for p in &remove {
        if let Err(e) = shared.dataplane.remove_peer(id, p).await {
            tracing::warn!(peer = %p.ip, error = %e, "removing a peer failed");
            ok = false;
        }
    }
    if !add.is_empty()
        && let Err(e) = shared.dataplane.add_peers(id, &add).await
    {
        tracing::warn!(error = %e, "adding peers failed");
        ok = false;
    }
    {
        let mut st = shared.state();
        if let Some(ns) = st.nets.get_mut(id) {
            ns.programmed = desired;
            ns.dirty = !ok;
        }
        super::dns::refresh(shared, &st, id);
    }
    shared.files.network_changed(*id);
}
