//! Container hosts files, in the seed's layout: the container's own lines, the standard
//! localhost lines, then the names of every network it joined.
//!
//! Each network's names are rendered once per change into a [`Block`] that every local
//! container's file copies from; when a block changes, a file that was made from the previous
//! block is rewritten only from the first byte that differs ([`render_tail`]), on its own inode
//! ([`rewrite`](super::rewrite)): Docker 1.9 truncated `/etc/hosts` and wrote it again, so a
//! reader racing it saw an empty file.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::Path;


/// The fixed lines every container's hosts file carries after its own entry.
const STANDARD_LINES: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// One name a container can reach another by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostsEntry {
    /// The address.
    pub ip: IpAddr,
    /// The name (`zookeeper1`, `zookeeper1.my-net`, or an alias).
    pub name: String,
}

impl HostsEntry {
    /// The names of a container named `name` with `aliases` on network `network` at `ip`:
    /// `name`, `name.network`, and each alias with and without the suffix.
    pub fn for_container(ip: IpAddr, name: &str, aliases: &[String], network: &str) -> Vec<Self> {
        std::iter::once(name)
            .chain(aliases.iter().map(String::as_str))
            .flat_map(|n| [n.to_string(), format!("{n}.{network}")])
            .map(|name| HostsEntry { ip, name })
            .collect()
    }
}

/// One network's names as hosts-file lines, sorted by address and name, each once: made once
/// per update of the network and shared by the file of every local container on it, so a
/// pass over a full host costs one render per network and a copy per file, not one render of
/// every name per file.
#[derive(Debug, Clone, Default)]
pub struct Block {
    /// Every line, concatenated.
    text: String,
    /// Each line's address and where it starts in `text` (sorted as the lines are).
    lines: Vec<(IpAddr, usize)>,
    /// A fingerprint of `text`.
    fingerprint: u64,
}

impl Block {
    /// The lines of `entries`.
    pub fn new(entries: &BTreeSet<HostsEntry>) -> Block {
        let mut text = String::new();
        let mut lines = Vec::with_capacity(entries.len());
        for e in entries {
            lines.push((e.ip, text.len()));
            let _ = writeln!(text, "{}\t{}", e.ip, e.name);
        }
        let fingerprint = fingerprint(text.as_bytes());
        Block {
            text,
            lines,
            fingerprint,
        }
    }

    /// A fingerprint of the lines: equal blocks have equal fingerprints.
    pub fn fingerprint(&self) -> u64 {
        self.fingerprint
    }

    /// The byte range of the lines with address `ip` (empty if none). The lines are sorted by
    /// address, so they are one run.
    fn run_of(&self, ip: IpAddr) -> std::ops::Range<usize> {
        let first = self.lines.partition_point(|(a, _)| *a < ip);
        let end = first + self.lines[first..].partition_point(|(a, _)| *a == ip);
        self.offset(first)..self.offset(end)
    }

    fn offset(&self, line: usize) -> usize {
        self.lines.get(line).map_or(self.text.len(), |(_, at)| *at)
    }

    /// The byte ranges of the lines with an address of `skip`, sorted.
    fn skipped_runs(&self, skip: &[IpAddr]) -> Vec<std::ops::Range<usize>> {
        let mut runs: Vec<_> = skip.iter().map(|ip| self.run_of(*ip)).collect();
        runs.sort_by_key(|r| r.start);
        runs
    }

    /// Appends the lines whose address is not one of `skip`: a copy of the text around each
    /// skipped run.
    fn push_except(&self, out: &mut String, skip: &[IpAddr]) {
        self.push_except_from(out, &self.skipped_runs(skip), 0);
    }

    /// Appends the text from byte `from` on, but for the (sorted) `runs`.
    fn push_except_from(&self, out: &mut String, runs: &[std::ops::Range<usize>], from: usize) {
        let mut at = from;
        for r in runs.iter().filter(|r| r.end > from) {
            if r.start >= at {
                out.push_str(&self.text[at..r.start]);
            }
            at = at.max(r.end);
        }
        out.push_str(&self.text[at..]);
    }

    /// The lines whose address is not one of `skip`, with their addresses.
    fn lines_except<'a>(&'a self, skip: &'a [IpAddr]) -> impl Iterator<Item = (IpAddr, &'a str)> {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, (ip, _))| !skip.contains(ip))
            .map(move |(i, (ip, at))| (*ip, &self.text[*at..self.offset(i + 1)]))
    }
}

/// A fingerprint of `bytes`, to tell without keeping a file's text whether it would change.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The part of a one-network hosts file that differs between the file rendered from `old`
/// and from `new` (same `own` lines, same `skip`): where it starts in the file, and the new
/// text from there. `None` when nothing differs. The start is moved back to a line's start,
/// so whole lines are written.
pub fn render_tail(
    own: &[(IpAddr, String)],
    old: &Block,
    new: &Block,
    skip: &[IpAddr],
) -> Option<(usize, String)> {
    let (a, b) = (old.text.as_bytes(), new.text.as_bytes());
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    if same == a.len() && same == b.len() {
        return None;
    }
    // Back to the start of the line, and out of a skipped run (the runs before are the same
    // in both blocks, as everything before `same` is).
    let mut from = new.text[..same].rfind('\n').map_or(0, |i| i + 1);
    let runs = new.skipped_runs(skip);
    if let Some(r) = runs.iter().find(|r| r.start < from && from < r.end) {
        from = r.start;
    }
    let dropped: usize = runs
        .iter()
        .filter(|r| r.end <= from)
        .map(|r| r.end - r.start)
        .sum();
    let header = header_len(own);
    let mut tail = String::with_capacity(new.text.len() - from);
    new.push_except_from(&mut tail, &runs, from);
    Some((header + from - dropped, tail))
}

/// The length of the lines before the names: the container's own and the standard ones.
fn header_len(own: &[(IpAddr, String)]) -> usize {
    let mut n = STANDARD_LINES.len();
    for (ip, hostname) in own {
        n += format!("{ip}\t{hostname}\n").len();
    }
    n
}

/// Renders a hosts file: the container's own addresses and hostname, the standard localhost
/// lines, then the names of every network it joined, each network's `block` without the lines
/// of the container's own addresses on it (`skip`), sorted by address and name, each once.
pub fn render(own: &[(IpAddr, String)], blocks: &[(&Block, Vec<IpAddr>)]) -> String {
    let mut out = String::new();
    for (ip, hostname) in own {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    out.push_str(STANDARD_LINES);
    match blocks {
        [] => {}
        [(block, skip)] => {
            out.reserve(block.text.len());
            block.push_except(&mut out, skip);
        }
        // A container on several networks: their lines merged (rare, so not precomputed).
        _ => {
            let mut lines: Vec<(IpAddr, &str)> = blocks
                .iter()
                .flat_map(|(b, skip)| b.lines_except(skip))
                .collect();
            lines.sort_unstable();
            lines.dedup();
            for (_, line) in lines {
                out.push_str(line);
            }
        }
    }
    out
}

/// Removes hosts file `path`; a file already gone is not an error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_layout() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut peers = BTreeSet::new();
        for (addr, name) in [
            ("10.0.0.5", "zookeeper4"),
            ("10.0.0.2", "zookeeper1"),
            ("10.0.0.4", "zookeeper3"),
        ] {
            peers.extend(HostsEntry::for_container(ip(addr), name, &[], "my-net"));
        }
        let block = Block::new(&peers);
        let text = render(
            &[(ip("10.0.0.3"), "3cfba8da9b6f".into())],
            &[(&block, vec![])],
        );
        let want = "10.0.0.3\t3cfba8da9b6f\n\
127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n\
10.0.0.2\tzookeeper1\n\
10.0.0.2\tzookeeper1.my-net\n\
10.0.0.4\tzookeeper3\n\
10.0.0.4\tzookeeper3.my-net\n\
10.0.0.5\tzookeeper4\n\
10.0.0.5\tzookeeper4.my-net\n";
        assert_eq!(text, want);
        // The container's own lines, were they in the block, are left out.
        peers.extend(HostsEntry::for_container(
            ip("10.0.0.3"),
            "me",
            &[],
            "my-net",
        ));
        let block = Block::new(&peers);
        let own = [(ip("10.0.0.3"), "3cfba8da9b6f".into())];
        assert_eq!(render(&own, &[(&block, vec![ip("10.0.0.3")])]), want);
    }

    #[test]
    fn several_networks_merge_sorted_and_once() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let block = |entries: &[(&str, &str, &str)]| {
            let mut set = BTreeSet::new();
            for (addr, name, net) in entries {
                set.extend(HostsEntry::for_container(ip(addr), name, &[], net));
            }
            Block::new(&set)
        };
        let a = block(&[("10.0.0.2", "x", "a"), ("10.0.0.9", "me", "a")]);
        let b = block(&[
            ("10.0.1.2", "y", "b"),
            ("10.0.1.7", "me", "b"),
            ("10.0.0.2", "x", "a"),
        ]);
        let own = [(ip("10.0.0.9"), "c".into()), (ip("10.0.1.7"), "c".into())];
        let text = render(
            &own,
            &[(&a, vec![ip("10.0.0.9")]), (&b, vec![ip("10.0.1.7")])],
        );
        let peers: Vec<&str> = text.lines().skip(own.len() + 6).collect();
        assert_eq!(
            peers,
            [
                "10.0.0.2\tx",
                "10.0.0.2\tx.a",
                "10.0.1.2\ty",
                "10.0.1.2\ty.b"
            ]
        );
        assert_ne!(a.fingerprint(), b.fingerprint());
        assert_eq!(
            a.fingerprint(),
            block(&[("10.0.0.2", "x", "a"), ("10.0.0.9", "me", "a")]).fingerprint()
        );
    }

    #[test]
    fn aliases_get_both_forms() {
        let e =
            HostsEntry::for_container("10.0.0.2".parse().unwrap(), "web", &["www".into()], "app");
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["web", "web.app", "www", "www.app"]);
    }

    #[test]
    fn a_tail_rendered_from_the_first_change_completes_the_old_file() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let block = |n: usize| {
            let mut set = BTreeSet::new();
            for i in 0..n {
                let addr = ip(&format!("10.0.0.{}", i + 2));
                set.extend(HostsEntry::for_container(addr, &format!("c{i}"), &[], "net"));
            }
            Block::new(&set)
        };
        let me = ip("10.0.0.4");
        let own = [(me, "c2".to_string())];
        // Joins after the container (the common case), before it, and leaves.
        for (old_n, new_n) in [(5, 6), (2, 5), (6, 3), (6, 1), (1, 6)] {
            let (old, new) = (block(old_n), block(new_n));
            let before = render(&own, &[(&old, vec![me])]);
            let after = render(&own, &[(&new, vec![me])]);
            let (at, tail) = render_tail(&own, &old, &new, &[me]).unwrap();
            assert_eq!(before[..at], after[..at], "{old_n} to {new_n}: the kept part");
            assert_eq!(tail, after[at..], "{old_n} to {new_n}: the tail");
            assert!(at == 0 || after.as_bytes()[at - 1] == b'\n', "starts a line");
        }
        assert_eq!(render_tail(&own, &block(4), &block(4), &[me]), None);
    }

}
