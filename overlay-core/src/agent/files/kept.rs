//! One local container's files as the writer keeps them between passes, and the writes that
//! bring one up to date.

use std::collections::BTreeMap;
use std::fs::File;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use super::super::hosts::{self, Layout};
use super::super::rewrite;
use crate::model::{EndpointId, NetworkId};

/// What one local container's files are made from, and what they hold.
#[derive(Debug)]
pub(super) struct Kept {
    /// The look at the agent's state this record is from.
    pub(super) look: u64,
    /// The container's endpoints on this host: its files are written only while one of them is
    /// still this host's.
    pub(super) owners: Vec<EndpointId>,
    /// Its networks, in the order its hosts file lays out their names.
    pub(super) networks: Vec<NetworkId>,
    /// Its own lines (address and hostname), their addresses, and their hash.
    pub(super) own: Vec<(IpAddr, String)>,
    pub(super) own_ips: Vec<IpAddr>,
    pub(super) own_hash: u64,
    /// The length of its hosts file's header: its own lines and the standard ones.
    pub(super) header: u64,
    pub(super) hosts: Option<HostsFile>,
    pub(super) resolv: Option<ResolvFile>,
}

#[derive(Debug)]
pub(super) struct HostsFile {
    pub(super) path: PathBuf,
    /// A fingerprint of what the file was made from ([`hosts_key`]); `None` when unknown, so
    /// that it is written whole.
    pub(super) key: Option<u64>,
    /// The file, open between passes while descriptors are to spare.
    pub(super) file: Option<File>,
}

#[derive(Debug)]
pub(super) struct ResolvFile {
    pub(super) path: PathBuf,
    /// What it must hold, and the fingerprint of what it holds.
    pub(super) text: String,
    pub(super) written: Option<u64>,
}

/// The hash of a container's own lines.
pub(super) fn own_hash(own: &[(IpAddr, String)]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    own.hash(&mut h);
    h.finish()
}

/// The fingerprint of a hosts file made from own lines of hash `own_hash` and the layouts of
/// `networks` at their generations.
fn hosts_key(own_hash: u64, networks: impl Iterator<Item = (NetworkId, u64)>) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    own_hash.hash(&mut h);
    for (net, generation) in networks {
        net.hash(&mut h);
        generation.hash(&mut h);
    }
    h.finish()
}

/// How many hosts files may stay open: a quarter of the soft limit on descriptors, so that
/// an embedder's own files never run short because of them.
pub(super) fn descriptor_budget() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return 0;
    }
    usize::try_from(limit.rlim_cur / 4).unwrap_or(usize::MAX)
}

/// What a hosts file is made from (a [`Kept`]'s parts).
struct Source<'a> {
    own: &'a [(IpAddr, String)],
    own_ips: &'a [IpAddr],
    own_hash: u64,
    header: u64,
    networks: &'a [NetworkId],
}

/// Brings `kept`'s files up to date with `layouts`.
pub(super) fn write_kept(
    kept: &mut Kept,
    layouts: &BTreeMap<NetworkId, (Layout, u64)>,
    open: &mut usize,
    budget: usize,
) {
    let Kept {
        networks,
        own,
        own_ips,
        own_hash,
        header,
        hosts,
        resolv,
        ..
    } = kept;
    if let Some(h) = hosts {
        let source = Source {
            own,
            own_ips,
            own_hash: *own_hash,
            header: *header,
            networks,
        };
        let generations = networks
            .iter()
            .filter_map(|n| layouts.get(n).map(|(l, _)| (*n, l.generation())));
        let key = hosts_key(*own_hash, generations);
        if h.key != Some(key) {
            match write_hosts(h, &source, layouts, open, budget) {
                Ok(()) => h.key = Some(key),
                Err(e) => {
                    // Unknown now, so the next write is whole.
                    h.key = None;
                    *open -= usize::from(h.file.take().is_some());
                    tracing::warn!(file = %h.path.display(), error = %e, "a container's hosts file was not updated");
                }
            }
        }
    }
    if let Some(r) = resolv {
        let key = hosts::fingerprint(r.text.as_bytes());
        if r.written != Some(key) {
            match rewrite::rewrite_whole(&r.path, &r.text) {
                Ok(()) => r.written = Some(key),
                Err(e) => {
                    r.written = None;
                    tracing::warn!(file = %r.path.display(), error = %e, "a container's resolv.conf was not updated");
                }
            }
        }
    }
}

/// Writes one hosts file: the last update of its network's layout when it holds the one
/// before (the file of a container on one network, written last pass: the common case), whole
/// otherwise. Keeps the file open for the next time while `open` is under `budget`.
fn write_hosts(
    h: &mut HostsFile,
    from: &Source<'_>,
    layouts: &BTreeMap<NetworkId, (Layout, u64)>,
    open: &mut usize,
    budget: usize,
) -> std::io::Result<()> {
    if let [net] = from.networks
        && let Some((layout, _)) = layouts.get(net)
        && let Some(delta) = layout.delta()
        && h.key
            == Some(hosts_key(
                from.own_hash,
                [(*net, layout.generation() - 1)].into_iter(),
            ))
    {
        if h.file.is_none() && *open < budget {
            h.file = open_hosts(&h.path)?;
            *open += usize::from(h.file.is_some());
        }
        let applied = match &h.file {
            Some(f) => apply(f, from.header, delta, from.own_ips)?,
            None => match open_hosts(&h.path)? {
                Some(f) => apply(&f, from.header, delta, from.own_ips)?,
                None => false,
            },
        };
        if applied {
            return Ok(());
        }
    }
    // Written whole at its path, and opened again: a kept descriptor may be of a file that
    // is no longer there.
    *open -= usize::from(h.file.take().is_some());
    let layouts: Vec<&Layout> = from
        .networks
        .iter()
        .filter_map(|n| layouts.get(n).map(|(l, _)| l))
        .collect();
    rewrite::rewrite_exact(&h.path, &hosts::render(from.own, &layouts))?;
    if *open < budget {
        h.file = open_hosts(&h.path)?;
        *open += usize::from(h.file.is_some());
    }
    Ok(())
}

/// Opens the hosts file at `path` for writing; `None` when it is missing.
fn open_hosts(path: &Path) -> std::io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .write(true)
        // The path is this host's own (never from the store); a link placed at it is refused
        // rather than followed.
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => Ok(Some(f)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies `delta` to hosts file `f`, whose layout starts after `header` bytes, as the file
/// of a container with addresses `own`. `false`, with nothing written, when the file does not
/// have the length the layout had, or has lost its name (it is not what this writer left).
fn apply(f: &File, header: u64, delta: &hosts::Delta, own: &[IpAddr]) -> std::io::Result<bool> {
    use std::os::unix::fs::{FileExt, MetadataExt};
    let meta = f.metadata()?;
    if !meta.is_file() || meta.nlink() == 0 || meta.len() != header + delta.before as u64 {
        return Ok(false);
    }
    for op in &delta.ops {
        let (at, bytes) = op.for_container(own);
        f.write_all_at(&bytes, header + at as u64)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::hosts::HostsEntry;
    use std::collections::BTreeSet;
    use std::sync::Arc;
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

    /// One container's hosts file on network `net`, written as a pass writes it.
    struct Fixture {
        file: HostsFile,
        own: Vec<(IpAddr, String)>,
        own_ips: Vec<IpAddr>,
        net: NetworkId,
        layouts: BTreeMap<NetworkId, (Layout, u64)>,
        open: usize,
        budget: usize,
    }

    impl Fixture {
        fn new(path: &Path, budget: usize) -> Fixture {
            let net: NetworkId = "a".repeat(64).parse().unwrap();
            let me: IpAddr = "10.0.0.2".parse().unwrap();
            Fixture {
                file: HostsFile {
                    path: path.to_path_buf(),
                    key: None,
                    file: None,
                },
                own: vec![(me, "c0".to_string())],
                own_ips: vec![me],
                net,
                layouts: BTreeMap::from([(net, (Layout::default(), 0))]),
                open: 0,
                budget,
            }
        }

        /// The layout made to hold `members`' names, and the file brought up to date.
        fn update(&mut self, members: &BTreeSet<u32>) {
            let (layout, _) = self.layouts.get_mut(&self.net).unwrap();
            layout.update(&names(members));
            let generation = layout.generation();
            let hash = own_hash(&self.own);
            let source = Source {
                own: &self.own,
                own_ips: &self.own_ips,
                own_hash: hash,
                header: hosts::header(&self.own).len() as u64,
                networks: std::slice::from_ref(&self.net),
            };
            write_hosts(
                &mut self.file,
                &source,
                &self.layouts,
                &mut self.open,
                self.budget,
            )
            .unwrap();
            self.file.key = Some(hosts_key(hash, [(self.net, generation)].into_iter()));
            assert!(self.open <= self.budget);
        }

        fn layout(&self) -> &Layout {
            &self.layouts[&self.net].0
        }
    }

    #[test]
    fn a_reader_during_a_burst_of_updates_never_sees_an_empty_or_malformed_file() {
        // With the file kept open between updates, and opened for each.
        for budget in [1, 0] {
            burst(budget);
        }
    }

    fn burst(budget: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let mut fx = Fixture::new(&path, budget);
        let mut members: BTreeSet<u32> = [0].into();
        fx.update(&members);
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
            fx.update(&members);
        }
        stop.store(true, Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(reads > 0, "the reader read nothing");
        let text = std::fs::read_to_string(&path).unwrap();
        let whole = String::from_utf8(hosts::render(&fx.own, &[fx.layout()])).unwrap();
        assert_eq!(text, whole, "after the burst the file is the layout");
        let mut others = members.clone();
        others.remove(&0);
        let mut want: Vec<String> = names(&others)
            .iter()
            .map(|e| format!("{}\t{}", e.ip, e.name))
            .collect();
        want.extend(hosts::header(&fx.own).lines().map(str::to_string));
        want.sort_unstable();
        assert_eq!(live(&text), want, "its names are the members' but its own");
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&path).unwrap()),
            ino,
            "on the same inode"
        );
    }

    #[test]
    fn a_file_that_lost_its_name_is_made_again_at_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let mut fx = Fixture::new(&path, 1);
        fx.update(&[0, 1].into());
        assert!(fx.file.file.is_some(), "kept open");
        std::fs::remove_file(&path).unwrap();
        fx.update(&[0, 1, 2].into());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\tc2.net\n"), "{text}");
        assert!(text.contains("\tc1.net\n"), "{text}");
        // And one changed behind its back (not the length this writer left) is made whole.
        std::fs::write(&path, "junk\n").unwrap();
        fx.update(&[0, 2].into());
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            String::from_utf8(hosts::render(&fx.own, &[fx.layout()])).unwrap()
        );
    }
}
