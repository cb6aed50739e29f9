//! The files the agent keeps for local containers (hosts files and `resolv.conf`s).
//!
//! A connect on a host with a thousand containers on its network changes a thousand hosts
//! files (each gains the new names). Written on the connect path, every connect cost more than
//! the last. So a connect writes its own container's files only ([`write_now`]: a runtime can
//! bind-mount them as soon as it returns), and every other change only marks what changed: the
//! changed containers, and the networks whose names changed. The writer's next pass updates
//! each changed network's [`Layout`] once and brings every file on it up to date with the
//! writes that update made: a container joining a network of a thousand costs each other
//! container's file two small writes (its names, commented out, then made live at once), not
//! its whole text. Files are written on their own inodes, so a bind mount of one sees every
//! update (see [`hosts`] for what a racing reader sees).
//!
//! A pass costs little more than those writes. What each container's files are made from is
//! kept from pass to pass (its networks, its own lines, the length of its header, a
//! fingerprint of what its file holds) and recomputed only for the containers that changed,
//! and each hosts file stays open between passes while descriptors are to spare (a quarter of
//! the soft `RLIMIT_NOFILE`), so bringing a file up to date is an `fstat` and its writes. A
//! kept descriptor follows the file a bind mount holds; one whose file lost its name is
//! dropped and the file made again at its path.
//!
//! The writer rests after each pass twice as long as the pass took, so that it takes at most
//! a third of a core from connects however fast they come; changes that arrive while a pass
//! runs or the writer rests are coalesced into the next pass (milliseconds). Its passes run on
//! a thread of their own at a lower priority. Names reach the resolver at once, from the views.

mod kept;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::hosts::{self, HostsEntry, Layout};
use super::{Shared, State};
use crate::model::{EndpointId, HostId, Network, NetworkId};
use kept::{HostsFile, Kept, ResolvFile, descriptor_budget, own_hash, write_kept};

/// What changed since the writer's last pass, and what it wrote.
#[derive(Debug, Default)]
pub(super) struct Files {
    pending: Mutex<Pending>,
    wake: tokio::sync::Notify,
    /// Numbers the looks at the agent's state, so that names seen earlier never replace
    /// names seen later (a pass and a connect's [`write_now`] can race).
    looks: AtomicU64,
    /// What the files hold. Held while a pass writes, so a file removed with its container
    /// ([`Files::remove`]) is never written again after.
    written: Mutex<Written>,
}

#[derive(Debug, Default)]
struct Written {
    /// Each local container's files, by container id.
    containers: HashMap<String, Kept>,
    /// Each network's names as the files lay them out, and the look they were taken at.
    layouts: BTreeMap<NetworkId, (Layout, u64)>,
    /// Hosts files kept open.
    open: usize,
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
        crate::sync::lock(&self.pending)
    }

    fn written(&self) -> MutexGuard<'_, Written> {
        crate::sync::lock(&self.written)
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

    /// Removes `path` (a collected container's file, from this host's own entry) and forgets
    /// it. Done under the writer's lock, so no pass writes it again after.
    pub(super) fn remove(&self, path: &Path) -> std::io::Result<()> {
        let mut guard = self.written();
        let written = &mut *guard;
        for kept in written.containers.values_mut() {
            if kept.hosts.as_ref().is_some_and(|h| h.path == path)
                && let Some(h) = kept.hosts.take()
            {
                written.open -= usize::from(h.file.is_some());
            }
            if kept.resolv.as_ref().is_some_and(|r| r.path == path) {
                kept.resolv = None;
            }
        }
        hosts::remove(path)
    }
}

/// The writer task: a pass each time something changed, resting between passes. The passes
/// write on a thread of their own at a lower scheduling priority: the files are background
/// work, and a connect or a peer's programming must not wait for the cores they take.
pub(super) async fn run(shared: Arc<Shared>) {
    let (jobs, passes) = std::sync::mpsc::channel::<(Plan, tokio::sync::oneshot::Sender<()>)>();
    let writer = shared.clone();
    let spawned = std::thread::Builder::new()
        .name("overlay-files".into())
        .spawn(move || {
            lower_priority();
            // Ends when the task (the sender) goes.
            while let Ok((plan, done)) = passes.recv() {
                write(&writer, plan);
                let _ = done.send(());
            }
        });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start the hosts file writer thread; files are not kept");
        return;
    }
    loop {
        shared.files.wake.notified().await;
        let started = Instant::now();
        let pending = std::mem::take(&mut *shared.files.pending());
        let plan = plan(&shared, &pending);
        if plan.is_empty() {
            continue;
        }
        let (done, finished) = tokio::sync::oneshot::channel();
        if jobs.send((plan, done)).is_err() || finished.await.is_err() {
            tracing::error!("the hosts file writer thread ended; files are not kept");
            return;
        }
        // Resting twice as long as the pass took keeps the writer under a third of a core in a
        // burst (shorter rests cost a full host's connects more than a tenth, measured), and
        // coalesces what came meanwhile into one pass.
        tokio::time::sleep(started.elapsed() * 2).await;
    }
}

/// Lowers the calling thread's scheduling priority (nice 10); best effort.
fn lower_priority() {
    // SAFETY: gettid has no preconditions; setpriority on one's own thread id only lowers it.
    let r = unsafe {
        libc::setpriority(
            libc::PRIO_PROCESS,
            u32::try_from(libc::gettid()).unwrap_or(0),
            10,
        )
    };
    if r != 0 {
        tracing::debug!(error = %std::io::Error::last_os_error(), "the hosts file writer keeps its priority");
    }
}

/// What one local container's files are made from, as the agent's state has it.
struct Member {
    owners: Vec<EndpointId>,
    networks: Vec<NetworkId>,
    own: Vec<(IpAddr, String)>,
    hosts: Option<PathBuf>,
    resolv: Option<(PathBuf, String)>,
}

/// What a pass writes, from one look at the agent's state.
struct Plan {
    /// The changed containers: what their files are made from, `None` for one that has no
    /// network here any more.
    containers: Vec<(String, Option<Member>)>,
    /// The names of the changed networks, and of the changed containers' networks.
    names: BTreeMap<NetworkId, BTreeSet<HostsEntry>>,
    /// Which look at the state the names are from.
    look: u64,
    /// Every network this host has, so the layouts of networks it left go.
    joined: BTreeSet<NetworkId>,
}

impl Plan {
    fn is_empty(&self) -> bool {
        self.containers.is_empty() && self.names.is_empty()
    }
}

/// The names of network `id` as the files show them: every endpoint of a live host.
fn names_of(st: &State, live: &BTreeSet<HostId>, id: &NetworkId) -> BTreeSet<HostsEntry> {
    let mut entries = BTreeSet::new();
    if let Some(ns) = st.nets.get(id) {
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
    }
    entries
}

/// What the files of `containers` are made from: one walk over this host's entries, each
/// checked against its network's view (an entry whose endpoint left the view is no longer
/// the container's).
fn members(
    shared: &Shared,
    st: &State,
    containers: &BTreeSet<String>,
) -> Vec<(String, Option<Member>)> {
    struct Found {
        network: NetworkId,
        endpoint: EndpointId,
        addresses: Vec<IpAddr>,
        hosts: Option<PathBuf>,
        resolv: Option<PathBuf>,
    }
    let mut found: BTreeMap<String, Vec<Found>> = BTreeMap::new();
    shared.local.scan(|entries| {
        for e in entries.filter(|e| containers.contains(&e.container_id)) {
            let Some(ep) = st
                .nets
                .get(&e.network)
                .and_then(|ns| ns.view.get(&e.endpoint))
                .filter(|ep| ep.host == *shared.me())
            else {
                continue;
            };
            found
                .entry(e.container_id.clone())
                .or_default()
                .push(Found {
                    network: e.network,
                    endpoint: e.endpoint,
                    addresses: ep.addresses().collect(),
                    hosts: e.hosts_file.clone(),
                    resolv: e.resolv_conf.clone(),
                });
        }
    });
    containers
        .iter()
        .map(|c| {
            let Some(mut joined) = found.remove(c) else {
                return (c.clone(), None);
            };
            joined.sort_by_key(|f| f.network);
            let hostname: String = c.chars().take(12).collect();
            let own = joined
                .iter()
                .flat_map(|f| f.addresses.iter().map(|ip| (*ip, hostname.clone())))
                .collect();
            let resolv = joined
                .iter()
                .find_map(|f| f.resolv.clone())
                .and_then(|path| {
                    let nets: Vec<&Network> = joined
                        .iter()
                        .filter_map(|f| st.nets.get(&f.network).map(|ns| &ns.network))
                        .collect();
                    super::dns::resolv_conf_for(shared, &nets).map(|text| (path, text))
                });
            let member = Member {
                owners: joined.iter().map(|f| f.endpoint).collect(),
                networks: joined.iter().map(|f| f.network).collect(),
                own,
                hosts: joined.iter().find_map(|f| f.hosts.clone()),
                resolv,
            };
            (c.clone(), Some(member))
        })
        .collect()
}

/// What the pass must write, from one look at the agent's state: the changed containers,
/// and the names of the changed networks and of those containers' networks.
fn plan(shared: &Shared, pending: &Pending) -> Plan {
    let st = shared.state();
    let live = shared.live.borrow();
    let look = shared.files.looks.fetch_add(1, Ordering::Relaxed) + 1;
    let containers = members(shared, &st, &pending.containers);
    let mut nets: BTreeSet<NetworkId> = pending.networks.clone();
    for (_, m) in &containers {
        nets.extend(m.iter().flat_map(|m| m.networks.iter().copied()));
    }
    let names = nets
        .iter()
        .filter(|id| st.nets.contains_key(id))
        .map(|id| (*id, names_of(&st, &live, id)))
        .collect();
    Plan {
        containers,
        names,
        look,
        joined: st.nets.keys().copied().collect(),
    }
}

/// Writes the hosts file and `resolv.conf` of local container `container` now, from the
/// layouts the last pass left (or, for a network no pass has laid out yet, from its names
/// now): a connect calls it before it returns, so its runtime can bind-mount them at once.
/// The other containers' files follow at the writer's next pass.
pub(super) fn write_now(shared: &Shared, container: &str) {
    let set = BTreeSet::from([container.to_string()]);
    let (member, look) = {
        let st = shared.state();
        let look = shared.files.looks.fetch_add(1, Ordering::Relaxed) + 1;
        (members(shared, &st, &set).pop(), look)
    };
    let Some((container, Some(member))) = member else {
        return;
    };
    let mut guard = shared.files.written();
    let written = &mut *guard;
    let missing: Vec<NetworkId> = member
        .networks
        .iter()
        .filter(|n| !written.layouts.contains_key(n))
        .copied()
        .collect();
    if !missing.is_empty() {
        let st = shared.state();
        let live = shared.live.borrow();
        for id in missing {
            let mut layout = Layout::default();
            layout.update(&names_of(&st, &live, &id));
            written.layouts.insert(id, (layout, look));
        }
    }
    let budget = descriptor_budget();
    let Written {
        containers,
        layouts,
        open,
    } = written;
    let kept = keep(containers, open, container, member, look);
    if kept.owners.iter().any(|e| shared.local.contains(e)) {
        write_kept(kept, layouts, open, budget);
    }
}

/// Updates the layouts, then writes every changed container's files and every file on a
/// network whose layout changed, if its container is still this host's.
fn write(shared: &Shared, plan: Plan) {
    let mut guard = shared.files.written();
    let Written {
        containers,
        layouts,
        open,
    } = &mut *guard;
    // A layout a connect made after this plan's look stays, whatever the plan saw.
    layouts.retain(|net, (_, look)| plan.joined.contains(net) || *look > plan.look);
    let mut changed = HashSet::new();
    for (net, names) in &plan.names {
        let (layout, look) = layouts
            .entry(*net)
            .or_insert_with(|| (Layout::default(), 0));
        // Names older than what a connect laid out since are left for the next pass.
        if *look <= plan.look {
            *look = plan.look;
            if layout.update(names) {
                changed.insert(*net);
            }
        }
    }
    let mut touched = HashSet::new();
    for (container, member) in plan.containers {
        match member {
            Some(m) => {
                keep(containers, open, container.clone(), m, plan.look);
                touched.insert(container);
            }
            None => {
                if containers
                    .get(&container)
                    .is_some_and(|k| k.look <= plan.look)
                    && let Some(gone) = containers.remove(&container)
                {
                    *open -= usize::from(gone.hosts.is_some_and(|h| h.file.is_some()));
                }
            }
        }
    }
    let budget = descriptor_budget();
    for (container, kept) in containers.iter_mut() {
        let due = touched.contains(container) || kept.networks.iter().any(|n| changed.contains(n));
        if due && kept.owners.iter().any(|e| shared.local.contains(e)) {
            write_kept(kept, layouts, open, budget);
        }
    }
}

/// Records what `container`'s files are made from, as look `look` at the agent's state saw
/// it (unless a later look was recorded already); a file whose path stays keeps what is known
/// of it.
fn keep<'a>(
    containers: &'a mut HashMap<String, Kept>,
    open: &mut usize,
    container: String,
    m: Member,
    look: u64,
) -> &'a mut Kept {
    if containers.get(&container).is_some_and(|k| k.look > look) {
        // A connect recorded a later look already: `m` is older than what is kept.
        return containers
            .entry(container)
            .or_insert_with(|| unreachable!());
    }
    let own_hash = own_hash(&m.own);
    let header = hosts::header(&m.own).len() as u64;
    let own_ips = m.own.iter().map(|(ip, _)| *ip).collect();
    let (old_hosts, old_resolv) = match containers.remove(&container) {
        Some(k) => (k.hosts, k.resolv),
        None => (None, None),
    };
    let hosts = match (m.hosts, old_hosts) {
        (Some(path), Some(h)) if h.path == path => Some(h),
        (path, old) => {
            // A file the container no longer has (or has at another path) is closed.
            *open -= usize::from(old.is_some_and(|h| h.file.is_some()));
            path.map(|path| HostsFile {
                path,
                key: None,
                file: None,
            })
        }
    };
    let resolv = m.resolv.map(|(path, text)| ResolvFile {
        written: old_resolv
            .filter(|r| r.path == path)
            .and_then(|r| r.written),
        path,
        text,
    });
    containers.entry(container).or_insert(Kept {
        look,
        owners: m.owners,
        networks: m.networks,
        own: m.own,
        own_ips,
        own_hash,
        header,
        hosts,
        resolv,
    })
}
