//! Reading a hosts file as a resolver would, for checks that a name came or went.

use std::net::IpAddr;
use std::path::Path;

/// The address `name` has in a hosts file; `None` also while the file is not written yet (a
/// wait for a name to come). For "the name is gone", [`lacks`], which needs the file there.
pub fn lookup(hosts_file: &Path, name: &str) -> Option<IpAddr> {
    let text = match std::fs::read_to_string(hosts_file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => panic!("read {}: {e}", hosts_file.display()),
    };
    find_name(&text, name)
}

/// Whether the hosts file, which must be there, lacks `name`.
pub fn lacks(hosts_file: &Path, name: &str) -> bool {
    let text = std::fs::read_to_string(hosts_file)
        .unwrap_or_else(|e| panic!("read {}: {e}", hosts_file.display()));
    find_name(&text, name).is_none()
}

/// The address of the first live line naming `name` (a commented-out line is no name).
fn find_name(text: &str, name: &str) -> Option<IpAddr> {
    text.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let ip = words.next()?.parse().ok()?;
        words.any(|w| w == name).then_some(ip)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_lines_only() {
        let text = "10.0.0.2\tzk1 zk1.my-net\n#10.0.0.3\tzk3\n";
        assert_eq!(
            find_name(text, "zk1.my-net"),
            Some("10.0.0.2".parse().unwrap())
        );
        assert_eq!(find_name(text, "zk3"), None);
        assert_eq!(find_name(text, "zk"), None);
    }
}
