//! `resolv.conf`: the host's, read for its upstream resolvers, and the containers', written
//! to point at the networks' resolvers.

use std::net::{IpAddr, SocketAddr};

/// The nameservers of a `resolv.conf` text, port 53, in order. A scoped (link-local) one,
/// `fe80::1%eth0`, is skipped: its scope names an interface, which a forwarder that moves
/// between namespaces would have to resolve at each query.
pub(crate) fn nameservers(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next()? == "nameserver").then_some(())?;
            words.next()?.parse::<IpAddr>().ok()
        })
        .map(|ip| SocketAddr::new(ip, super::PORT))
        .collect()
}

/// A container's `resolv.conf`: the resolvers of its networks (`servers`, in the order it
/// joined them) and their names as search domains.
pub(crate) fn render(servers: &[IpAddr], search: &[String]) -> String {
    let mut out =
        String::from("# Written by overlay: the resolvers of this container's networks.\n");
    for s in servers {
        out.push_str(&format!("nameserver {s}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_in_order_and_nothing_else() {
        let text = "# comment\nsearch example.org\nnameserver 192.0.2.53\n\
                    nameserver fe80::1%eth0\nnameserver not-an-address\noptions ndots:2\n\
                    nameserver 2001:db8::53\n";
        let got: Vec<String> = nameservers(text).iter().map(ToString::to_string).collect();
        assert_eq!(got, ["192.0.2.53:53", "[2001:db8::53]:53"]);
        assert!(nameservers("").is_empty());
    }

    #[test]
    fn a_container_file() {
        let text = render(
            &["10.0.0.1".parse().unwrap(), "10.0.1.1".parse().unwrap()],
            &["my-net".into(), "back".into()],
        );
        assert!(
            text.ends_with("nameserver 10.0.0.1\nnameserver 10.0.1.1\nsearch my-net back\n"),
            "{text}"
        );
    }
}
