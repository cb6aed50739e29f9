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

/// Renders a hosts file: the container's own address and hostname, the standard localhost
/// lines, then every peer name sorted by address and name, each once.
pub fn render(own: &[(IpAddr, String)], peers: &BTreeSet<HostsEntry>) -> String {
    let mut out = String::new();
    for (ip, hostname) in own {
        let _ = writeln!(out, "{ip}\t{hostname}");
    }
    out.push_str(STANDARD_LINES);
    for e in peers {
        let _ = writeln!(out, "{}\t{}", e.ip, e.name);
    }
    out
}

/// Replaces `path` with `content` atomically (temporary file in the same directory, fsync,
/// rename). The file is left world-readable, as `/etc/hosts` is.
pub fn write_atomic(path: &Path, content: &str) -> Result<()> {
    let op = "write hosts file";
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        Error::invalid(
            op,
            format!("hosts file path {} names no file", path.display()),
        )
        .with_hint("give a file path such as /etc/netns/NAME/hosts")
    })?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{:08x}",
        name.to_string_lossy(),
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content.as_bytes())?;
        f.sync_all()?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        std::fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(op, format!("cannot replace {}", path.display()), e)
            .with_hint("check that the directory exists and is writable")
    })
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
        let text = render(&[(ip("10.0.0.3"), "3cfba8da9b6f".into())], &peers);
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
        write_atomic(&path, "old\n").unwrap();
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
            write_atomic(&path, if i % 2 == 0 { &big } else { "old\n" }).unwrap();
        }
        reader.join().unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "temporary files were left behind");
        let e = write_atomic(&dir.path().join("missing/hosts"), "x").unwrap_err();
        assert!(e.to_string().contains("missing/hosts"), "{e}");
    }
}
