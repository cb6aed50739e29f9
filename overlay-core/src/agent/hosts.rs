//! Container hosts files, in the seed's layout, replaced atomically.
//!
//! Docker 1.9 rewrote `/etc/hosts` in place, so a reader racing the writer could see an empty or
//! half-written file. Here a file is written beside the target, flushed to disk, and renamed over
//! it: a reader sees the old file or the new one, never a mix.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::Path;

use crate::error::{Error, Result};

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

    /// Appends the lines whose address is not one of `skip`: a copy of the text around each
    /// skipped run.
    fn push_except(&self, out: &mut String, skip: &[IpAddr]) {
        let mut runs: Vec<_> = skip.iter().map(|ip| self.run_of(*ip)).collect();
        runs.sort_by_key(|r| r.start);
        let mut at = 0;
        for r in runs {
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

/// Replaces `path` with `content` atomically: a reader sees the old file or the new one. The
/// file is left world-readable, as `/etc/hosts` is.
///
/// The new text goes into the file's spare (`.NAME.spare` beside it), which is then swapped
/// with the file in one `rename(RENAME_EXCHANGE)`, so the old file becomes the next spare. A
/// file rewritten a thousand times costs two inodes, not a thousand made and freed: on ext4
/// without a journal (this project's CI machine) every later file creation steps over each
/// inode freed in the last minutes, so a writer replacing a full host's files slowed every
/// connect. A spare swapped out less than [`SPARE_MIN_AGE`] ago may still be open in a slow
/// reader, so it is not written: the call returns [`Written::NotYet`] and changes nothing. A
/// file is thus replaced at most once per [`SPARE_MIN_AGE`] (its first two writes aside).
///
/// No fsync: a reader needs only the rename's atomicity, and after a crash the agent writes
/// every file again from the store when it starts. An fsync per file made every connect on a
/// full host wait for a thousand disk flushes.
pub fn write_atomic(path: &Path, content: &str) -> Result<Written> {
    replace(path, content, SPARE_MIN_AGE)
}

/// What [`write_atomic`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The file holds the new content.
    Done,
    /// The file was replaced too recently; nothing changed. Try again after this long.
    NotYet(std::time::Duration),
}

/// How long a file swapped out must rest as the spare before it is written again.
pub const SPARE_MIN_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// The spare of hosts file `path`.
pub fn spare_of(path: &Path) -> Option<std::path::PathBuf> {
    let name = path.file_name()?;
    Some(path.with_file_name(format!(".{}.spare", name.to_string_lossy())))
}

fn replace(path: &Path, content: &str, min_age: std::time::Duration) -> Result<Written> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let op = "write hosts file";
    let fail = |e: std::io::Error| {
        Error::io(op, format!("cannot replace {}", path.display()), e)
            .with_hint("check that the directory exists and is writable")
    };
    let spare = spare_of(path).ok_or_else(|| {
        Error::invalid(
            op,
            format!("hosts file path {} names no file", path.display()),
        )
        .with_hint("give a file path such as /etc/netns/NAME/hosts")
    })?;
    let exists = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_file());
    if exists {
        // The spare, if it has rested long enough (its ctime is when it was swapped out), or
        // a new one: written, then swapped in. Something else at its name is left alone.
        let usable = match std::fs::symlink_metadata(&spare) {
            Ok(m) if m.file_type().is_file() => {
                let ctime = std::time::UNIX_EPOCH
                    + std::time::Duration::new(m.ctime().max(0) as u64, m.ctime_nsec() as u32);
                let age = std::time::SystemTime::now()
                    .duration_since(ctime)
                    .unwrap_or_default();
                if age < min_age {
                    return Ok(Written::NotYet(min_age - age));
                }
                true
            }
            Ok(_) => false,
            Err(e) => e.kind() == std::io::ErrorKind::NotFound,
        };
        if usable {
            let wrote = (|| {
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o644)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&spare)?;
                f.write_all(content.as_bytes())?;
                f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
                exchange(&spare, path)
            })();
            match wrote {
                Ok(()) => return Ok(Written::Done),
                // A file system without the exchange: the plain rename below.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                Err(e) => return Err(fail(e)),
            }
        }
    }
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.tmp-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    })();
    result.map(|()| Written::Done).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        fail(e)
    })
}

/// Swaps the files at `a` and `b` in one step.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: both paths are valid NUL-terminated strings for the duration of the call.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Removes hosts file `path` and its spare; a file already gone is not an error.
pub fn remove(path: &Path) -> std::io::Result<()> {
    for p in std::iter::once(path.to_path_buf()).chain(spare_of(path)) {
        match std::fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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
    fn atomic_replace_never_shows_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        // Spares rest 50 ms here, not a second, to keep the test short.
        let rest = std::time::Duration::from_millis(50);
        let write = |content: &str| loop {
            match replace(&path, content, rest).unwrap() {
                Written::Done => break,
                Written::NotYet(d) => std::thread::sleep(d),
            }
        };
        write("old\n");
        let big = "x".repeat(1 << 20);
        let reader = {
            let path = path.clone();
            let big = big.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    let text = std::fs::read_to_string(&path).unwrap();
                    assert!(
                        text == "old\n" || text == big,
                        "saw a partial file of {} bytes",
                        text.len()
                    );
                }
            })
        };
        for i in 0..20 {
            write(if i % 2 == 0 { &big } else { "old\n" });
        }
        reader.join().unwrap();
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".hosts.spare", "hosts"],
            "temporary files were left behind"
        );
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let e = write_atomic(&dir.path().join("missing/hosts"), "x").unwrap_err();
        assert_eq!(
            write_atomic(&path, "n\n").unwrap(),
            Written::Done,
            "no spare yet"
        );
        assert!(e.to_string().contains("missing/hosts"), "{e}");
    }

    #[test]
    fn a_rested_spare_is_reused_so_no_inode_is_freed() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
        replace(&path, "1\n", std::time::Duration::ZERO).unwrap();
        replace(&path, "2\n", std::time::Duration::ZERO).unwrap();
        let (live, spare) = (ino(&path), ino(&spare_of(&path).unwrap()));
        for i in 3..10 {
            replace(&path, &format!("{i}\n"), std::time::Duration::ZERO).unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{i}\n"));
            let now = (ino(&path), ino(&spare_of(&path).unwrap()));
            assert!(
                now == (live, spare) || now == (spare, live),
                "a new inode: {now:?}"
            );
        }
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // A spare swapped out just now is left alone, and so is the file.
        let r = replace(&path, "x\n", std::time::Duration::from_secs(60)).unwrap();
        assert!(
            matches!(r, Written::NotYet(d) if d > std::time::Duration::from_secs(50)),
            "{r:?}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "9\n");
    }
}
