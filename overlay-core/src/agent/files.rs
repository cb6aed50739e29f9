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
//! a third of a core from connects however fast they come; a burst is coalesced by that rest,
//! milliseconds, not more. Files are rewritten on their own inodes, so a bind mount of one
//! sees every update ([`rewrite`](super::rewrite)), and a file made from a network's previous
//! block is rewritten only from the first byte that changed: a container joining a network of
//! a thousand costs each other container's file a line or two written, not its whole text.
//! Names reach the resolver at once, from the views.
//!
//! Nothing of a file's text is kept: each file's record is a fingerprint of what it was made
//! from (8 bytes), enough to skip an unchanged one and to know which block it holds; each
//! network's last block is kept once, for the next pass's difference.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Shared;
use super::hosts::{self, Block, HostsEntry};
use super::rewrite::{self, Change};
use crate::model::{EndpointId, Network, NetworkId};

/// What changed since the writer's last pass, and what it wrote.
#[derive(Debug, Default)]
pub(super) struct Files {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    /// What the files hold. Held while a pass writes, so a file removed with its container
    /// ([`Files::remove`]) is never written again after.
    written: Mutex<Written>,
}

#[derive(Debug, Default)]
struct Written {
    /// Each written file's fingerprint: of what it was made from.
    files: HashMap<PathBuf, u64>,
    /// Each network's block as the last pass wrote it.
    blocks: BTreeMap<NetworkId, Block>,
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

    fn written(&self) -> MutexGuard<'_, Written> {
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

    /// Removes `path`, if this agent wrote it, and forgets it; returns whether it did.
    pub(super) fn remove(&self, path: &std::path::Path) -> std::io::Result<bool> {
        let mut written = self.written();
        if written.files.remove(path).is_none() {
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
        pass(&shared).await;
        tokio::time::sleep(started.elapsed() * 2).await;
    }
}

/// One file to write: its path, what it is made from, and the endpoints that name it (it is
/// written only while one of them is still this host's).
struct Job {
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

/// Writes what changed since the last pass.
async fn pass(shared: &Arc<Shared>) {
    let pending = std::mem::take(&mut *shared.files.pending());
    let (jobs, blocks) = plan(shared, &pending);
    if jobs.is_empty() {
        return;
    }
    // The blocks of networks this host left are no longer needed.
    let joined: BTreeSet<NetworkId> = shared.state().nets.keys().copied().collect();
    shared
        .files
        .written()
        .blocks
        .retain(|net, _| joined.contains(net));
    let shared = shared.clone();
    // The writes block: off the async workers.
    if let Err(e) = tokio::task::spawn_blocking(move || write(&shared, jobs, blocks)).await {
        tracing::warn!(error = %e, "the hosts file writer failed");
    }
}

/// The fingerprint of a hosts file made from `own` lines and the blocks of `parts`
/// (network, block fingerprint).
fn hosts_key(own: &[(IpAddr, String)], parts: impl Iterator<Item = (NetworkId, u64)>) -> u64 {
    let mut key = format!("{own:?}");
    for (net, f) in parts {
        key.push_str(&format!(" {net}:{f:x}"));
    }
    hosts::fingerprint(key.as_bytes())
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
            let key = hosts_key(
                &own,
                parts
                    .iter()
                    .map(|(net, _)| (*net, blocks.get(net).map_or(0, Block::fingerprint))),
            );
            jobs.push(Job {
                path,
                key,
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

/// Writes each job whose file changed, if its container is still this host's, then keeps
/// this pass's blocks for the next one's differences.
fn write(shared: &Shared, jobs: Vec<Job>, blocks: BTreeMap<NetworkId, Block>) {
    let mut guard = shared.files.written();
    let written = &mut *guard;
    for job in jobs {
        if written.files.get(&job.path) == Some(&job.key)
            || !job.owners.iter().any(|e| shared.local.contains(e))
        {
            continue;
        }
        let done = match &job.render {
            Render::Text(t) => rewrite::rewrite_whole(&job.path, t),
            Render::Hosts { own, blocks: parts } => {
                write_hosts(&job.path, own, parts, &blocks, written)
            }
        };
        match done {
            Ok(()) => {
                written.files.insert(job.path, job.key);
            }
            Err(e) => {
                // Forgotten, so the next pass writes it whole.
                written.files.remove(&job.path);
                tracing::warn!(file = %job.path.display(), error = %e, "a container's file was not updated");
            }
        }
    }
    written.blocks.extend(blocks);
}

/// Writes one hosts file: from the first changed byte when it holds what it was made from
/// the network's previous block (the file of a container on one network), whole otherwise.
fn write_hosts(
    path: &std::path::Path,
    own: &[(IpAddr, String)],
    parts: &[(NetworkId, Vec<IpAddr>)],
    blocks: &BTreeMap<NetworkId, Block>,
    written: &Written,
) -> std::io::Result<()> {
    if let [(net, skip)] = parts
        && let (Some(old), Some(new)) = (written.blocks.get(net), blocks.get(net))
        && written.files.get(path) == Some(&hosts_key(own, [(*net, old.fingerprint())].into_iter()))
    {
        let Some((from, tail)) = hosts::render_tail(own, old, new, skip) else {
            return Ok(());
        };
        let change = Change {
            from: from as u64,
            tail: tail.as_bytes(),
        };
        if rewrite::rewrite(path, change)? {
            return Ok(());
        }
    }
    let parts: Vec<(&Block, Vec<IpAddr>)> = parts
        .iter()
        .filter_map(|(net, skip)| blocks.get(net).map(|b| (b, skip.clone())))
        .collect();
    rewrite::rewrite_whole(path, &hosts::render(own, &parts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Whether `text` is a whole hosts file: not empty, ending with a newline, every line an
    /// address with names, a comment or blank.
    fn well_formed(text: &str) -> bool {
        !text.is_empty()
            && text.ends_with('\n')
            && text.lines().all(|l| {
                let mut words = l.split_whitespace();
                match words.next() {
                    None => true,
                    Some(w) if w.starts_with('#') => true,
                    Some(ip) => ip.parse::<IpAddr>().is_ok() && words.next().is_some(),
                }
            })
    }

    /// The network's block with containers `members` (numbers: `c<n>` at 10.0.<n/250>.<n%250+2>).
    fn block(members: &BTreeSet<u32>) -> Block {
        let mut set = BTreeSet::new();
        for n in members {
            let ip: IpAddr = format!("10.0.{}.{}", n / 250, n % 250 + 2).parse().unwrap();
            set.extend(HostsEntry::for_container(ip, &format!("c{n}"), &[], "net"));
        }
        Block::new(&set)
    }

    #[test]
    fn a_reader_during_a_burst_of_updates_never_sees_an_empty_or_malformed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let net: NetworkId = "a".repeat(64).parse().unwrap();
        let me: IpAddr = "10.0.0.2".parse().unwrap();
        let own = vec![(me, "c0".to_string())];
        let mut members: BTreeSet<u32> = [0].into();
        let mut written = Written::default();
        let mut update = |members: &BTreeSet<u32>, written: &mut Written| {
            let blocks: BTreeMap<NetworkId, Block> = [(net, block(members))].into();
            let parts = vec![(net, vec![me])];
            write_hosts(&path, &own, &parts, &blocks, written).unwrap();
            let key = hosts_key(&own, [(net, blocks[&net].fingerprint())].into_iter());
            written.files.insert(path.clone(), key);
            written.blocks.extend(blocks);
        };
        update(&members, &mut written);
        let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (path, stop) = (path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(well_formed(&text), "read {reads}: {text:?}");
                    reads += 1;
                }
                reads
            })
        };
        // 200 updates: containers join (at the end, as new addresses do, and in the middle),
        // and leave.
        for i in 1..=200u32 {
            match i % 5 {
                0 => {
                    let gone = *members.iter().nth(members.len() / 2).unwrap();
                    if gone != 0 {
                        members.remove(&gone);
                    }
                }
                1 => {
                    members.insert(1000 - i);
                }
                _ => {
                    members.insert(i);
                }
            }
            update(&members, &mut written);
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0, "the reader read nothing");
        let text = std::fs::read_to_string(&path).unwrap();
        let whole = hosts::render(&own, &[(&block(&members), vec![me])]);
        assert_eq!(text, whole, "after the burst the file is exactly the last text");
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()),
            ino,
            "on the same inode"
        );
    }
}
