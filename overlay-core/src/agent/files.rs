//! The files the agent keeps for local containers (hosts files and `resolv.conf`s), written by
//! a task of their own, off the connect path.
//!
//! A connect on a host with a thousand containers on its network changes a thousand hosts
//! files (each gains the new names). Written on the connect path, every connect cost more than
//! the last. Here a change only marks what changed; the writer's next pass renders each
//! changed network's names once, gives each file a copy, and writes only files whose inputs
//! changed. Changes that arrive while a pass runs (or while the writer rests) are coalesced
//! into the next pass.
//!
//! The writer rests after each pass twice as long as the pass took, so that it takes at most
//! a third of a core from connects however fast they come. A file is replaced at most once a
//! second ([`hosts::write_atomic`] reuses the file it swapped out, once that has rested, so
//! rewriting makes and frees no inodes); a change that comes sooner waits for the next pass
//! after that second. Names reach the resolver at once, from the views.
//!
//! Nothing of a file's text is kept: each file's record is a fingerprint of what it was made
//! from (8 bytes), enough to skip an unchanged one.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::Shared;
use super::hosts::{self, Block, HostsEntry};
use crate::model::{EndpointId, Network, NetworkId};

/// What changed since the writer's last pass, and what it wrote.
#[derive(Debug, Default)]
pub(super) struct Files {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    /// Each written file's fingerprint. Held while a pass writes, so a file removed with its
    /// container ([`Files::remove`]) is never written again after.
    written: Mutex<HashMap<PathBuf, u64>>,
}

#[derive(Debug, Default)]
struct Pending {
    /// Networks whose names may have changed: every local container on them.
    networks: BTreeSet<NetworkId>,
    /// Containers whose own networks changed.
    containers: BTreeSet<String>,
}

impl Files {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn written(&self) -> MutexGuard<'_, HashMap<PathBuf, u64>> {
        self.written
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The names of network `id` may have changed.
    pub(super) fn network_changed(&self, id: NetworkId) {
        self.pending().networks.insert(id);
        self.wake.notify_one();
    }

    /// The networks of local container `container` changed.
    pub(super) fn container_changed(&self, container: &str) {
        self.pending().containers.insert(container.to_string());
        self.wake.notify_one();
    }

    /// Removes `path` (and its spare), if this agent wrote it, and forgets it; returns
    /// whether it did.
    pub(super) fn remove(&self, path: &std::path::Path) -> std::io::Result<bool> {
        let mut written = self.written();
        if written.remove(path).is_none() {
            return Ok(false);
        }
        hosts::remove(path).map(|()| true)
    }
}

/// The writer task: a pass each time something changed, resting between passes.
pub(super) async fn run(shared: Arc<Shared>) {
    loop {
        shared.files.wake.notified().await;
        let started = Instant::now();
        let mut rest = Duration::ZERO;
        if let Some(again) = pass(&shared).await {
            // Files replaced too recently wait (their containers are pending again).
            rest = rest.max(again);
            shared.files.wake.notify_one();
        }
        rest = rest.max(started.elapsed() * 2);
        tokio::time::sleep(rest).await;
    }
}

/// One file to write: its path, what it is made from, and the endpoints that name it (it is
/// written only while one of them is still this host's).
struct Job {
    container: String,
    path: PathBuf,
    key: u64,
    owners: Vec<EndpointId>,
    render: Render,
}

enum Render {
    Hosts {
        own: Vec<(IpAddr, String)>,
        blocks: Vec<(NetworkId, Vec<IpAddr>)>,
    },
    Text(String),
}

/// A local container's part in one network.
struct Membership {
    network: NetworkId,
    endpoint: EndpointId,
    addresses: Vec<IpAddr>,
}

/// Writes what changed since the last pass; returns when to try again the files that were
/// replaced too recently to be replaced now, if any.
async fn pass(shared: &Arc<Shared>) -> Option<Duration> {
    let pending = std::mem::take(&mut *shared.files.pending());
    let (jobs, blocks) = plan(shared, &pending);
    if jobs.is_empty() {
        return None;
    }
    let shared = shared.clone();
    // The writes block: off the async workers.
    match tokio::task::spawn_blocking(move || write(&shared, jobs, &blocks)).await {
        Ok(again) => again,
        Err(e) => {
            tracing::warn!(error = %e, "the hosts file writer failed");
            None
        }
    }
}

/// What the pass must write, from one look at the agent's state: the changed containers'
/// files, with a block of names per network they joined.
fn plan(shared: &Shared, pending: &Pending) -> (Vec<Job>, BTreeMap<NetworkId, Block>) {
    let st = shared.state();
    let live = shared.live.borrow();
    // One walk over the views: every local container's memberships, then the changed ones.
    let mut all: HashMap<&str, Vec<Membership>> = HashMap::new();
    for (id, ns) in &st.nets {
        for ep in ns.view.endpoints().filter(|e| shared.is_local(e)) {
            all.entry(ep.container_id.as_str())
                .or_default()
                .push(Membership {
                    network: *id,
                    endpoint: ep.id,
                    addresses: ep.addresses().collect(),
                });
        }
    }
    let members: Vec<(&str, Vec<Membership>)> = all
        .into_iter()
        .filter(|(c, joined)| {
            pending.containers.contains(*c)
                || joined.iter().any(|m| pending.networks.contains(&m.network))
        })
        .collect();
    let mut blocks = BTreeMap::new();
    for (_, joined) in &members {
        for m in joined {
            blocks.entry(m.network).or_insert_with(|| {
                let Some(ns) = st.nets.get(&m.network) else {
                    return Block::default();
                };
                let mut entries = BTreeSet::new();
                for ep in ns.view.endpoints().filter(|e| live.contains(&e.host)) {
                    for ip in ep.addresses() {
                        entries.extend(HostsEntry::for_container(
                            ip,
                            &ep.name,
                            &ep.aliases,
                            &ns.network.name,
                        ));
                    }
                }
                Block::new(&entries)
            });
        }
    }
    let mut jobs = Vec::new();
    for (container, joined) in members {
        let entries: Vec<_> = joined
            .iter()
            .filter_map(|m| shared.local.get(&m.endpoint))
            .collect();
        let owners: Vec<EndpointId> = entries.iter().map(|e| e.endpoint).collect();
        if let Some(path) = entries.iter().find_map(|e| e.hosts_file.clone()) {
            let hostname: String = container.chars().take(12).collect();
            let own: Vec<(IpAddr, String)> = joined
                .iter()
                .flat_map(|m| m.addresses.iter().map(|ip| (*ip, hostname.clone())))
                .collect();
            let parts: Vec<(NetworkId, Vec<IpAddr>)> = joined
                .iter()
                .map(|m| (m.network, m.addresses.clone()))
                .collect();
            let mut key = format!("{own:?}");
            for (net, _) in &parts {
                let f = blocks.get(net).map_or(0, Block::fingerprint);
                key.push_str(&format!(" {net}:{f:x}"));
            }
            jobs.push(Job {
                container: container.to_string(),
                path,
                key: hosts::fingerprint(key.as_bytes()),
                owners: owners.clone(),
                render: Render::Hosts { own, blocks: parts },
            });
        }
        if let Some(path) = entries.iter().find_map(|e| e.resolv_conf.clone()) {
            let nets: Vec<&Network> = joined
                .iter()
                .filter_map(|m| st.nets.get(&m.network).map(|ns| &ns.network))
                .collect();
            if let Some(text) = super::dns::resolv_conf_for(shared, &nets) {
                jobs.push(Job {
                    container: container.to_string(),
                    path,
                    key: hosts::fingerprint(text.as_bytes()),
                    owners,
                    render: Render::Text(text),
                });
            }
        }
    }
    (jobs, blocks)
}

/// Writes each job whose file changed, if its container is still this host's. A file replaced
/// too recently is left for later: its container is pending again, and the least wait is
/// returned.
fn write(shared: &Shared, jobs: Vec<Job>, blocks: &BTreeMap<NetworkId, Block>) -> Option<Duration> {
    let mut written = shared.files.written();
    let mut again: Option<Duration> = None;
    for job in jobs {
        if written.get(&job.path) == Some(&job.key)
            || !job.owners.iter().any(|e| shared.local.contains(e))
        {
            continue;
        }
        let text = match job.render {
            Render::Text(t) => t,
            Render::Hosts { own, blocks: parts } => {
                let parts: Vec<(&Block, Vec<IpAddr>)> = parts
                    .into_iter()
                    .filter_map(|(net, skip)| blocks.get(&net).map(|b| (b, skip)))
                    .collect();
                hosts::render(&own, &parts)
            }
        };
        match hosts::write_atomic(&job.path, &text) {
            Ok(hosts::Written::Done) => {
                written.insert(job.path, job.key);
            }
            Ok(hosts::Written::NotYet(wait)) => {
                shared.files.pending().containers.insert(job.container);
                again = Some(again.map_or(wait, |a| a.min(wait)));
            }
            Err(e) => tracing::warn!(error = %e, "hosts file not updated"),
        }
    }
    again
}
