//! The files the agent keeps for local containers (hosts files and `resolv.conf`s), written by
//! a task of their own, off the connect path.
//!
//! A connect on a host with a thousand containers on its network changes a thousand hosts
//! files (each gains the new names). Written on the connect path, every connect cost more than
//! the last. Here a change only marks what changed; the writer's next pass updates each
//! changed network's [`Layout`] once and brings every file on it up to date with the writes
//! that update made: a container joining a network of a thousand costs each other container's
//! file three small writes (its two names, commented out, then each made live), not its whole
//! text. Files are written on their own inodes, so a bind mount of one sees every update (see
//! [`hosts`] for what a racing reader sees). Changes that arrive while a pass runs (or while
//! the writer rests) are coalesced into the next pass.
//!
//! The writer rests after each pass twice as long as the pass took, so that it takes at most
//! a third of a core from connects however fast they come; a burst is coalesced by that rest,
//! milliseconds, not more. Its passes run on a thread of their own at a lower priority. Names reach the resolver at once, from the views.
//!
//! Nothing of a file's text is kept: each file's record is a fingerprint of what it was made
//! from (8 bytes), enough to skip an unchanged one and to know which generation of its
//! network's layout it holds; each network's layout is kept once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::Shared;
use super::hosts::{self, HostsEntry, Layout, LayoutOp};
use super::rewrite;
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
    /// Each network's names as the files lay them out.
    layouts: BTreeMap<NetworkId, Layout>,
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

    /// Removes `path`, if this agent wrote it, and forgets it; returns whether it did.
    pub(super) fn remove(&self, path: &std::path::Path) -> std::io::Result<bool> {
        let mut written = self.written();
        if written.files.remove(path).is_none() {
            return Ok(false);
        }
        hosts::remove(path).map(|()| true)
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
        if plan.jobs.is_empty() {
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

/// One file to write: its path, what it is made from, and the endpoints that name it (it is
/// written only while one of them is still this host's).
struct Job {
    path: PathBuf,
    owners: Vec<EndpointId>,
    render: Render,
}

enum Render {
    /// A hosts file: the container's own lines, and the names of its networks.
    Hosts {
        own: Vec<(IpAddr, String)>,
        networks: Vec<NetworkId>,
    },
    /// A `resolv.conf`, and its fingerprint.
    Text(String, u64),
}

/// A local container's part in one network.
struct Membership {
    network: NetworkId,
    endpoint: EndpointId,
    addresses: Vec<IpAddr>,
}

/// What a pass writes: the files, and the names of each network they show.
struct Plan {
    jobs: Vec<Job>,
    names: BTreeMap<NetworkId, BTreeSet<HostsEntry>>,
    /// Every network this host has, so the layouts of networks it left go.
    joined: BTreeSet<NetworkId>,
}

/// The fingerprint of a hosts file made from `own` lines and the layouts of `networks` at
/// their generations.
fn hosts_key(own: &[(IpAddr, String)], networks: impl Iterator<Item = (NetworkId, u64)>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    own.hash(&mut h);
    for (net, generation) in networks {
        net.hash(&mut h);
        generation.hash(&mut h);
    }
    h.finish()
}

/// What the pass must write, from one look at the agent's state: the changed containers'
/// files, and the names of every network they joined.
fn plan(shared: &Shared, pending: &Pending) -> Plan {
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
    let mut names = BTreeMap::new();
    for (_, joined) in &members {
        for m in joined {
            names.entry(m.network).or_insert_with(|| {
                let mut entries = BTreeSet::new();
                if let Some(ns) = st.nets.get(&m.network) {
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
            jobs.push(Job {
                path,
                owners: owners.clone(),
                render: Render::Hosts {
                    own,
                    networks: joined.iter().map(|m| m.network).collect(),
                },
            });
        }
        if let Some(path) = entries.iter().find_map(|e| e.resolv_conf.clone()) {
            let nets: Vec<&Network> = joined
                .iter()
                .filter_map(|m| st.nets.get(&m.network).map(|ns| &ns.network))
                .collect();
            if let Some(text) = super::dns::resolv_conf_for(shared, &nets) {
                let key = hosts::fingerprint(text.as_bytes());
                jobs.push(Job {
                    path,
                    owners,
                    render: Render::Text(text, key),
                });
            }
        }
    }
    Plan {
        jobs,
        names,
        joined: st.nets.keys().copied().collect(),
    }
}

/// Updates the layouts, then writes each job whose file changed, if its container is still
/// this host's.
fn write(shared: &Shared, plan: Plan) {
    let mut guard = shared.files.written();
    let written = &mut *guard;
    written.layouts.retain(|net, _| plan.joined.contains(net));
    for (net, names) in &plan.names {
        written.layouts.entry(*net).or_default().update(names);
    }
    for job in plan.jobs {
        if !job.owners.iter().any(|e| shared.local.contains(e)) {
            continue;
        }
        let (done, key) = match &job.render {
            Render::Text(text, key) => {
                if written.files.get(&job.path) == Some(key) {
                    continue;
                }
                (rewrite::rewrite_whole(&job.path, text), *key)
            }
            Render::Hosts { own, networks } => {
                let layouts: Vec<(NetworkId, &Layout)> = networks
                    .iter()
                    .filter_map(|n| written.layouts.get(n).map(|l| (*n, l)))
                    .collect();
                let key = hosts_key(own, layouts.iter().map(|(n, l)| (*n, l.generation())));
                if written.files.get(&job.path) == Some(&key) {
                    continue;
                }
                let had = written.files.get(&job.path).copied();
                (write_hosts(&job.path, own, &layouts, had), key)
            }
        };
        match done {
            Ok(()) => {
                written.files.insert(job.path, key);
            }
            Err(e) => {
                // Forgotten, so the next pass writes it whole.
                written.files.remove(&job.path);
                tracing::warn!(file = %job.path.display(), error = %e, "a container's file was not updated");
            }
        }
    }
}

/// Writes one hosts file: the last update of its network's layout when it holds the one
/// before (the file of a container on one network, written last pass: the common case), whole
/// otherwise. `had` is the fingerprint of what it held.
fn write_hosts(
    path: &std::path::Path,
    own: &[(IpAddr, String)],
    layouts: &[(NetworkId, &Layout)],
    had: Option<u64>,
) -> std::io::Result<()> {
    if let [(net, layout)] = layouts
        && let Some(delta) = layout.delta()
        && had
            == Some(hosts_key(
                own,
                [(*net, layout.generation() - 1)].into_iter(),
            ))
    {
        let header = hosts::header(own).len() as u64;
        let ips: Vec<IpAddr> = own.iter().map(|(ip, _)| *ip).collect();
        if apply(path, header, delta, &ips)? {
            return Ok(());
        }
    }
    let layouts: Vec<&Layout> = layouts.iter().map(|(_, l)| *l).collect();
    rewrite::rewrite_exact(path, &hosts::render(own, &layouts))
}

/// Applies `delta` to the hosts file at `path`, whose layout starts after `header` bytes, as
/// the file of a container with addresses `own`. `false`, with nothing written, when the file
/// does not have the length the layout had (it is not what this writer left).
fn apply(
    path: &std::path::Path,
    header: u64,
    delta: &hosts::Delta,
    own: &[IpAddr],
) -> std::io::Result<bool> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    let f = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() || meta.len() != header + delta.before as u64 {
        return Ok(false);
    }
    for op in &delta.ops {
        match op {
            LayoutOp::Write { at, bytes } => f.write_all_at(bytes, header + *at as u64)?,
            LayoutOp::Activate { at, byte, ip } if !own.contains(ip) => {
                f.write_all_at(&[*byte], header + *at as u64)?;
            }
            LayoutOp::Activate { .. } => {}
            LayoutOp::Kill { at } => f.write_all_at(b"#", header + *at as u64)?,
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Whether `text` is a whole hosts file: not empty, every line an address with names, a
    /// comment or blank, and ending with a newline unless its last line is a comment (padding
    /// being appended at the end, the kernel copying it a page at a time).
    fn well_formed(text: &str) -> bool {
        let last = text.rsplit('\n').next().unwrap_or_default();
        !text.is_empty()
            && (last.is_empty() || last.starts_with('#'))
            && text.lines().all(|l| {
                let mut words = l.split_whitespace();
                match words.next() {
                    None => true,
                    Some(w) if w.starts_with('#') => true,
                    Some(ip) => ip.parse::<IpAddr>().is_ok() && words.next().is_some(),
                }
            })
    }

    /// The names of containers `members` (`c<n>` at 10.0.<n/250>.<n%250+2>).
    fn names(members: &BTreeSet<u32>) -> BTreeSet<HostsEntry> {
        let mut set = BTreeSet::new();
        for n in members {
            let ip: IpAddr = format!("10.0.{}.{}", n / 250, n % 250 + 2).parse().unwrap();
            set.extend(HostsEntry::for_container(ip, &format!("c{n}"), &[], "net"));
        }
        set
    }

    /// The live lines of a hosts file, sorted.
    fn live(text: &str) -> Vec<&str> {
        let mut v: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn a_reader_during_a_burst_of_updates_never_sees_an_empty_or_malformed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let net: NetworkId = "a".repeat(64).parse().unwrap();
        let me: IpAddr = "10.0.0.2".parse().unwrap();
        let own = vec![(me, "c0".to_string())];
        let mut members: BTreeSet<u32> = [0].into();
        let mut layout = Layout::default();
        let mut had = None;
        let mut update = |members: &BTreeSet<u32>, layout: &mut Layout| {
            layout.update(&names(members));
            write_hosts(&path, &own, &[(net, &*layout)], had).unwrap();
            had = Some(hosts_key(&own, [(net, layout.generation())].into_iter()));
        };
        update(&members, &mut layout);
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
        // and leave, enough for the layout to grow and to be laid out afresh.
        for i in 1..=200u32 {
            match i % 5 {
                0 | 3 => {
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
            update(&members, &mut layout);
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0, "the reader read nothing");
        let text = std::fs::read_to_string(&path).unwrap();
        let whole = String::from_utf8(hosts::render(&own, &[&layout])).unwrap();
        assert_eq!(text, whole, "after the burst the file is the layout");
        let mut others = members.clone();
        others.remove(&0);
        let mut want: Vec<String> = names(&others)
            .iter()
            .map(|e| format!("{}\t{}", e.ip, e.name))
            .collect();
        want.extend(hosts::header(&own).lines().map(str::to_string));
        want.sort_unstable();
        assert_eq!(live(&text), want, "its names are the members' but its own");
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()),
            ino,
            "on the same inode"
        );
    }
}
