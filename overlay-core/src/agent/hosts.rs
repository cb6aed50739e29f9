//! Container hosts files, in the seed's layout: the container's own lines, the standard
//! localhost lines, then the names of every network it joined.
//!
//! The files are rewritten on their own inodes (a runtime's bind mount of one then sees every
//! update), and in a way that a reader racing the writer only ever sees whole lines. Each
//! network's names have one [`Layout`], shared by the hosts file of every local container on
//! it (after each file's own header): its lines keep their place from update to update. A name
//! that goes is commented out where it stands (its first byte made `#`, which no reader can
//! see half done); names that come are appended into the padding at the end, written commented
//! out, then made live by writing their first bytes (one write from the first new line to the
//! last one's first byte, whose other bytes are what the file holds already: whichever of its
//! bytes a racing reader sees, each line is whole, live or commented out). Lines that go
//! together are commented out by one write the same way. So between any two writes the file is
//! whole lines of names, comments and blanks, and a reader sees every name either absent or
//! whole. The file grows only by comment lines appended at its end (a chunk of padding that
//! later names fill), so a reader that read it to its end and then reads on sees whole lines
//! too (and one that races the append itself may see the file end inside that comment line:
//! the kernel extends a file a page at a time). A container's own names are commented out in
//! its own file (the seed lists the other containers). When the dead lines outweigh the live ones (and 32 KiB) the layout is
//! laid out afresh, sorted, and every file written whole: the `rewrite` module's
//! protections hold then, not these (a read that overlaps that write's copy can see a mix).
//! Docker 1.9 truncated `/etc/hosts` and wrote it again, so a reader racing it saw an empty
//! file.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::Path;

use super::rewrite::padding;

/// The fixed lines every container's hosts file carries after its own entry.
const STANDARD_LINES: &str = "127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
ff00::0\tip6-mcastprefix\n\
ff02::1\tip6-allnodes\n\
ff02::2\tip6-allrouters\n";

/// One name a container can reach another by.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct HostsEntry {
    /// The address.
    pub(crate) ip: IpAddr,
    /// The name (`zookeeper1`, `zookeeper1.my-net`, or an alias).
    pub(crate) name: String,
}

impl HostsEntry {
    /// The names of a container named `name` with `aliases` on network `network` at `ip`:
    /// `name`, `name.network`, and each alias with and without the suffix.
    pub(crate) fn for_container(
        ip: IpAddr,
        name: &str,
        aliases: &[String],
        network: &str,
    ) -> Vec<Self> {
        std::iter::once(name)
            .chain(aliases.iter().map(String::as_str))
            .flat_map(|n| [n.to_string(), format!("{n}.{network}")])
            .map(|name| HostsEntry { ip, name })
            .collect()
    }
}

/// One network's names as they are laid out in the hosts file of every local container on
/// it, after the file's header: lines that keep their place, then one padding line.
#[derive(Debug)]
pub(crate) struct Layout {
    /// The lines and the padding, as the file of a container with none of these addresses
    /// holds them.
    text: Vec<u8>,
    /// Each live line (without its newline), where it starts and its address.
    live: HashMap<String, (usize, IpAddr)>,
    /// Where the padding starts.
    end: usize,
    /// Bytes of the lines commented out.
    dead: usize,
    /// Bumped by every update that changed something.
    generation: u64,
    /// What the last update did, to bring a file of the generation before up to date; `None`
    /// when it laid the lines out afresh.
    delta: Option<Delta>,
    /// Dead bytes allowed beyond the live ones before the layout is laid out afresh.
    compact_at: usize,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            text: Vec::new(),
            live: HashMap::new(),
            end: 0,
            dead: 0,
            // A layout made afresh for a network (left and joined again, or dropped by a pass
            // and made by a connect) never reuses an earlier one's generations: a file's
            // fingerprint names the generation it holds.
            generation: u64::from(rand::random::<u32>()) << 32,
            delta: None,
            compact_at: COMPACT_AT,
        }
    }
}

/// What one update of a [`Layout`] changed, as writes relative to the layout's start, in the
/// order they are made.
#[derive(Debug, Clone)]
pub(crate) struct Delta {
    /// The layout's length before the update.
    pub(crate) before: usize,
    /// The writes.
    pub(crate) ops: Vec<LayoutOp>,
}

/// One write of a [`Delta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayoutOp {
    /// Write `bytes` at `at`, the same in every container's file: padding appended at the end,
    /// new lines (commented out) with the padding's new start, or lines commented out (the
    /// first byte of each becoming `#`, the bytes between the same as before: lines already
    /// commented out in every file).
    Write {
        /// Offset in the layout.
        at: usize,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Make new lines live, in one write: `bytes` at `at` are the layout's text from the first
    /// line's start to the last line's first byte, which differs from what the file holds only
    /// in those lines' first bytes (each `#` before). The file of a container whose address
    /// one of these lines has keeps that line commented out.
    Activate {
        /// Offset in the layout.
        at: usize,
        /// The bytes.
        bytes: Vec<u8>,
        /// Each line made live: where it starts (from `at`) and its address.
        lines: Vec<(usize, IpAddr)>,
    },
}

impl LayoutOp {
    /// The op as the file of a container with addresses `own` makes it: where, and what.
    pub(crate) fn for_container(&self, own: &[IpAddr]) -> (usize, std::borrow::Cow<'_, [u8]>) {
        match self {
            LayoutOp::Write { at, bytes } => (*at, bytes.as_slice().into()),
            LayoutOp::Activate { at, bytes, lines } => {
                if !lines.iter().any(|(_, ip)| own.contains(ip)) {
                    return (*at, bytes.as_slice().into());
                }
                let mut mine = bytes.clone();
                for (start, ip) in lines {
                    if own.contains(ip) {
                        mine[*start] = b'#';
                    }
                }
                (*at, mine.into())
            }
        }
    }
}

/// Lines commented out in one update with at most this many bytes between them (all of them
/// commented out already) are commented out by one write: a system call costs more than
/// copying that much.
const KILL_SPAN: usize = 1024;

/// Granularity of a layout's length.
const STEP: usize = 256;

/// Dead bytes (names gone, padding left behind) a layout may hold, or as many as its live
/// lines if more, before it is laid out afresh.
const COMPACT_AT: usize = 32 * 1024;

/// A layout's length for `used` bytes of lines: a quarter more, and a step.
fn capacity(used: usize) -> usize {
    (used + used / 4 + STEP).div_ceil(STEP) * STEP
}

fn line_of(e: &HostsEntry) -> String {
    format!("{}\t{}", e.ip, e.name)
}

impl Layout {
    /// Makes the layout hold exactly the names of `entries`; returns whether anything changed.
    pub(crate) fn update(&mut self, entries: &BTreeSet<HostsEntry>) -> bool {
        let wanted: HashMap<String, IpAddr> = entries.iter().map(|e| (line_of(e), e.ip)).collect();
        let gone: Vec<String> = self
            .live
            .keys()
            .filter(|l| !wanted.contains_key(*l))
            .cloned()
            .collect();
        let mut new: Vec<(&String, IpAddr)> = wanted
            .iter()
            .filter(|(l, _)| !self.live.contains_key(*l))
            .map(|(l, ip)| (l, *ip))
            .collect();
        if gone.is_empty() && new.is_empty() && !self.text.is_empty() {
            return false;
        }
        new.sort();
        self.generation += 1;
        let added: usize = new.iter().map(|(l, _)| l.len() + 1).sum();
        let dead = self.dead + gone.iter().map(|l| l.len() + 1).sum::<usize>();
        if self.text.is_empty() || dead > (self.end - dead).max(self.compact_at) {
            self.lay_out(entries);
            return true;
        }
        let before = self.text.len();
        let mut kills: Vec<usize> = gone
            .iter()
            .filter_map(|l| self.live.remove(l))
            .map(|(at, _)| at)
            .collect();
        kills.sort_unstable();
        for at in &kills {
            self.text[*at] = b'#';
        }
        let mut ops = self.kill_writes(&kills);
        self.dead = dead;
        // The lines go into the padding of the last chunk, leaving two bytes of it at least
        // (`#`, newline). When they do not fit, that padding stays a comment line to the
        // chunk's end, and a new chunk is appended for them: so the file's length only ever
        // changes at the end of a line that stays where it is, and a reader that read the
        // file up to its end and reads on later sees whole lines after it.
        if self.end + added + 2 > self.text.len() {
            self.dead += self.text.len() - self.end;
            let start = self.text.len();
            let chunk = padding((added + 2).max(start / 4).div_ceil(STEP) * STEP);
            ops.push(LayoutOp::Write {
                at: start,
                bytes: chunk.clone(),
            });
            self.text.extend_from_slice(&chunk);
            self.end = start;
        }
        let mut bytes = Vec::with_capacity(added + 1);
        let mut activate = Vec::new();
        for (l, ip) in new {
            let at = self.end + bytes.len();
            activate.push((at, l.as_bytes()[0], ip));
            self.live.insert(l.clone(), (at, ip));
            bytes.push(b'#');
            bytes.extend_from_slice(&l.as_bytes()[1..]);
            bytes.push(b'\n');
        }
        // The padding's new start (its end is the old padding's newline, still in place).
        bytes.push(b'#');
        let at = self.end;
        self.text[at..at + bytes.len()].copy_from_slice(&bytes);
        self.end += added;
        // The first byte is the old padding's `#` already.
        if bytes.len() > 1 {
            ops.push(LayoutOp::Write {
                at: at + 1,
                bytes: bytes[1..].to_vec(),
            });
        }
        for (at, byte, _) in &activate {
            self.text[*at] = *byte;
        }
        // The new lines are one block: one write makes them all live.
        if let (Some((first, ..)), Some((last, ..))) = (activate.first(), activate.last()) {
            ops.push(LayoutOp::Activate {
                at: *first,
                bytes: self.text[*first..=*last].to_vec(),
                lines: activate
                    .iter()
                    .map(|(at, _, ip)| (at - first, *ip))
                    .collect(),
            });
        }
        self.delta = Some(Delta { before, ops });
        true
    }

    /// The writes that comment out the lines starting at `kills` (sorted, each already `#` in
    /// the text): one for each run of them with nothing but commented-out lines between.
    fn kill_writes(&self, kills: &[usize]) -> Vec<LayoutOp> {
        let mut ops = Vec::new();
        let mut i = 0;
        while i < kills.len() {
            let first = kills[i];
            let mut last = first;
            while let Some(&next) = kills.get(i + 1)
                && next - last <= KILL_SPAN
                && self.commented_between(last, next)
            {
                last = next;
                i += 1;
            }
            ops.push(LayoutOp::Write {
                at: first,
                bytes: self.text[first..=last].to_vec(),
            });
            i += 1;
        }
        ops
    }

    /// Whether every line starting after `from` and before `to` is commented out (in the
    /// layout, and so in every file).
    fn commented_between(&self, from: usize, to: usize) -> bool {
        self.text[from..to]
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .map(|(i, _)| from + i + 1)
            .all(|start| start >= to || self.text[start] == b'#')
    }

    /// Lays the lines out afresh, sorted, with room to grow.
    fn lay_out(&mut self, entries: &BTreeSet<HostsEntry>) {
        let mut text = Vec::new();
        let mut live = HashMap::with_capacity(entries.len());
        for e in entries {
            let l = line_of(e);
            live.insert(l.clone(), (text.len(), e.ip));
            text.extend_from_slice(l.as_bytes());
            text.push(b'\n');
        }
        let end = text.len();
        text.extend_from_slice(&padding(capacity(end) - end));
        *self = Layout {
            text,
            live,
            end,
            dead: 0,
            generation: self.generation,
            delta: None,
            compact_at: self.compact_at,
        };
    }

    /// This layout, laid out afresh at `n` dead bytes (a test's short burst gets there).
    #[cfg(test)]
    fn compacting_at(mut self, n: usize) -> Layout {
        self.compact_at = n;
        self
    }

    /// The generation the layout is at.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// What the last update did, unless it laid the lines out afresh.
    pub(crate) fn delta(&self) -> Option<&Delta> {
        self.delta.as_ref()
    }

    /// The layout as the file of a container with addresses `own` holds it: its own lines
    /// commented out.
    pub(crate) fn for_container(&self, own: &[IpAddr]) -> Vec<u8> {
        let mut text = self.text.clone();
        for (at, ip) in self.live.values() {
            if own.contains(ip) {
                text[*at] = b'#';
            }
        }
        text
    }
}

/// The lines before the names: the container's own addresses with its hostname, then the
/// standard localhost lines.
pub(crate) fn header(own: &[(IpAddr, String)]) -> String {
    let mut out = String::new();
    for (ip, hostname) in own {
        out.push_str(&format!("{ip}\t{hostname}\n"));
    }
    out.push_str(STANDARD_LINES);
    out
}

/// A whole hosts file: the header of `own`, then each layout as that container's file holds
/// it.
pub(crate) fn render(own: &[(IpAddr, String)], layouts: &[&Layout]) -> Vec<u8> {
    let ips: Vec<IpAddr> = own.iter().map(|(ip, _)| *ip).collect();
    let mut out = header(own).into_bytes();
    for l in layouts {
        out.extend_from_slice(&l.for_container(&ips));
    }
    out
}

/// A fingerprint of `bytes`, to tell without keeping a file's text whether it would change.
pub(crate) fn fingerprint(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// Removes hosts file `path`; a file already gone is not an error.
pub(crate) fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn entries(members: &[u32]) -> BTreeSet<HostsEntry> {
        let mut set = BTreeSet::new();
        for n in members {
            let addr = ip(&format!(
                "10.{}.{}.{}",
                n / 62_500,
                n / 250 % 250,
                n % 250 + 2
            ));
            set.extend(HostsEntry::for_container(
                addr,
                &format!("c{n}"),
                &[],
                "net",
            ));
        }
        set
    }

    /// The live names of a hosts file, sorted.
    fn names(file: &[u8]) -> Vec<String> {
        let text = std::str::from_utf8(file).unwrap();
        let mut v: Vec<String> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect();
        v.sort();
        v
    }

    /// Whether every line of `file` is one of `allowed`, a comment or blank.
    fn whole(file: &[u8], allowed: &BTreeSet<String>) -> bool {
        let Ok(text) = std::str::from_utf8(file) else {
            return false;
        };
        text.ends_with('\n')
            && text
                .lines()
                .all(|l| l.trim().is_empty() || l.starts_with('#') || allowed.contains(l))
    }

    #[test]
    fn seed_layout() {
        let mut l = Layout::default();
        let mut set = BTreeSet::new();
        for (addr, name) in [
            ("10.0.0.5", "zookeeper4"),
            ("10.0.0.2", "zookeeper1"),
            ("10.0.0.4", "zookeeper3"),
            ("10.0.0.3", "me"),
        ] {
            set.extend(HostsEntry::for_container(ip(addr), name, &[], "my-net"));
        }
        assert!(l.update(&set));
        let text = render(&[(ip("10.0.0.3"), "3cfba8da9b6f".into())], &[&l]);
        let text = String::from_utf8(text).unwrap();
        let live: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
            .collect();
        assert_eq!(
            live,
            [
                "10.0.0.3\t3cfba8da9b6f",
                "127.0.0.1\tlocalhost",
                "::1\tlocalhost ip6-localhost ip6-loopback",
                "fe00::0\tip6-localnet",
                "ff00::0\tip6-mcastprefix",
                "ff02::1\tip6-allnodes",
                "ff02::2\tip6-allrouters",
                "10.0.0.2\tzookeeper1",
                "10.0.0.2\tzookeeper1.my-net",
                "10.0.0.4\tzookeeper3",
                "10.0.0.4\tzookeeper3.my-net",
                "10.0.0.5\tzookeeper4",
                "10.0.0.5\tzookeeper4.my-net",
            ]
        );
        assert!(!l.update(&set), "the same names change nothing");
    }

    /// Every delta, applied write by write to the file of the generation before, leaves whole
    /// lines after every write, and ends as the new layout; so does what a reader sees that
    /// read the file to its end at one moment and read on at a later one (across a few
    /// updates).
    #[test]
    fn every_write_of_every_update_leaves_whole_lines() {
        let me = ip("10.0.0.4");
        let own = [me];
        let mut layout = Layout::default().compacting_at(2048);
        let mut members: Vec<u32> = vec![2];
        layout.update(&entries(&members));
        let mut file = layout.for_container(&own);
        let mut afresh = 0;
        // The file after each write of the last few updates, and the lines live in them.
        let mut recent: std::collections::VecDeque<Vec<u8>> = [file.clone()].into();
        let mut allowed: BTreeSet<String> = entries(&members).iter().map(line_of).collect();
        for i in 1..600u32 {
            match i % 5 {
                0 | 3 => {
                    let gone = members.remove(members.len() / 2);
                    if gone == 2 {
                        members.push(2);
                    }
                }
                1 => members.push(100_000 - i),
                _ => members.push(i + 2),
            }
            let after = entries(&members);
            allowed.extend(after.iter().map(line_of));
            assert!(layout.update(&after));
            let Some(delta) = layout.delta().cloned() else {
                afresh += 1;
                file = layout.for_container(&own);
                recent.clear();
                recent.push_back(file.clone());
                continue;
            };
            assert_eq!(delta.before, file.len());
            for op in &delta.ops {
                let (at, bytes) = op.for_container(&own);
                // A reader racing the write may see any mix of its old and new bytes (the
                // appends aside, whose reader sees a prefix): where it changes bytes within
                // the file, it changes first bytes of lines only, each making a whole line
                // live or commented; every byte changed alone, in order and the other way
                // round, leaves whole lines.
                let old = file.get(at..).unwrap_or_default().to_vec();
                let within = old.len().min(bytes.len());
                let changed: Vec<usize> = (0..within).filter(|j| old[*j] != bytes[*j]).collect();
                if within == bytes.len() && matches!(op, LayoutOp::Activate { .. }) {
                    for order in [changed.clone(), changed.iter().rev().copied().collect()] {
                        let mut seen = file.clone();
                        for j in order {
                            seen[at + j] = bytes[j];
                            assert!(whole(&seen, &allowed), "update {i}: a read during {op:?}");
                        }
                    }
                }
                for j in &changed {
                    let starts_line = at + j == 0 || file[at + j - 1] == b'\n';
                    assert!(
                        starts_line || old[*j] == b' ' || old[*j] == b'\n',
                        "update {i}: {op:?} changes byte {} inside a line",
                        at + j
                    );
                }
                if file.len() < at + bytes.len() {
                    file.resize(at + bytes.len(), 0);
                }
                file[at..at + bytes.len()].copy_from_slice(&bytes);
                assert!(whole(&file, &allowed), "update {i}, after {op:?}");
                for earlier in &recent {
                    let mut seen = earlier.clone();
                    seen.extend_from_slice(file.get(earlier.len()..).unwrap_or_default());
                    assert!(whole(&seen, &allowed), "update {i}: a read across {op:?}");
                }
                recent.push_back(file.clone());
                if recent.len() > 12 {
                    recent.pop_front();
                }
            }
            assert_eq!(file, layout.for_container(&own), "update {i}");
            let mine: BTreeSet<String> = after.iter().filter(|e| e.ip != me).map(line_of).collect();
            assert_eq!(
                names(&file),
                mine.into_iter().collect::<Vec<_>>(),
                "update {i}"
            );
        }
        assert!(afresh > 0 && afresh < 10, "laid out afresh {afresh} times");
    }

    /// Names that go together are commented out by one write, but never one spanning a line
    /// that is live: the file of the container that line is its own has it commented out, and
    /// a write of the layout's bytes would make it live there.
    #[test]
    fn kills_share_a_write_only_across_commented_lines() {
        // Member n is at 10.0.0.(n + 2): this is 3's file.
        let own = [ip("10.0.0.5")];
        let apply = |file: &mut Vec<u8>, delta: &Delta, own: &[IpAddr]| {
            for op in &delta.ops {
                let (at, bytes) = op.for_container(own);
                file[at..at + bytes.len()].copy_from_slice(&bytes);
            }
        };
        let mut l = Layout::default();
        l.update(&entries(&[1, 2, 3, 4, 5]));
        let mut file = l.for_container(&own);
        // 2 and 4 go, 3 stays between them: two writes, and 3 (own's) stays commented.
        l.update(&entries(&[1, 3, 5]));
        let delta = l.delta().unwrap().clone();
        assert_eq!(delta.ops.len(), 2, "{delta:?}");
        apply(&mut file, &delta, &own);
        assert_eq!(file, l.for_container(&own));
        // 1 and 3 go, nothing live between them (2 went before): one write.
        l.update(&entries(&[5]));
        let delta = l.delta().unwrap().clone();
        assert_eq!(delta.ops.len(), 1, "{delta:?}");
        apply(&mut file, &delta, &own);
        assert_eq!(file, l.for_container(&own));
        // 6's lines and 7's come in one update: one write makes them live, and in 7's own
        // file its lines stay commented.
        let seven = [ip("10.0.0.9")];
        let mut file = l.for_container(&seven);
        l.update(&entries(&[5, 6, 7]));
        let delta = l.delta().unwrap().clone();
        assert!(
            matches!(delta.ops.last(), Some(LayoutOp::Activate { lines, .. }) if lines.len() == 4),
            "{delta:?}"
        );
        apply(&mut file, &delta, &seven);
        assert_eq!(file, l.for_container(&seven));
    }

    #[test]
    fn aliases_get_both_forms() {
        let e =
            HostsEntry::for_container("10.0.0.2".parse().unwrap(), "web", &["www".into()], "app");
        let names: Vec<_> = e.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["web", "web.app", "www", "www.app"]);
    }
}
