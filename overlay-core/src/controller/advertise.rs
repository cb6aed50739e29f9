//! Docker's `--cluster-advertise`: an IP address, or an interface name standing for its first
//! IPv4 address, optionally followed by `:PORT` (Docker's API port; VXLAN does not use it).

use std::net::IpAddr;

use crate::dataplane::Netns;
use crate::error::{Error, ErrorKind, Result};

const OP: &str = "resolve advertise address";

/// Splits off an optional `:PORT`, accepting `[v6]:port` and bare IPv6 addresses.
fn strip_port(s: &str) -> Result<&str> {
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest
            .split_once(']')
            .ok_or_else(|| Error::invalid(OP, format!("advertise {s:?} has an unclosed '['")))?;
        if !after.is_empty()
            && after
                .strip_prefix(':')
                .is_none_or(|p| p.parse::<u16>().is_err())
        {
            return Err(Error::invalid(
                OP,
                format!("advertise {s:?} has a bad port"),
            ));
        }
        return Ok(addr);
    }
    if s.parse::<IpAddr>().is_ok() {
        return Ok(s);
    }
    match s.rsplit_once(':') {
        Some((head, port)) if !head.contains(':') => {
            port.parse::<u16>().map_err(|_| {
                Error::invalid(OP, format!("advertise {s:?} has a bad port {port:?}"))
            })?;
            Ok(head)
        }
        _ => Ok(s),
    }
}

/// Resolves the advertise setting in the host namespace `ns`, without blocking the async
/// worker that awaits it.
pub(super) async fn resolve(advertise: &str, ns: &Netns) -> Result<IpAddr> {
    let hint = "give an IP address of this host, or an interface name such as eth0";
    if advertise.is_empty() {
        return Err(Error::invalid(OP, "no advertise address is given").with_hint(hint));
    }
    let target = strip_port(advertise)?;
    if let Ok(ip) = target.parse::<IpAddr>() {
        if ip.is_unspecified() || ip.is_multicast() {
            return Err(
                Error::invalid(OP, format!("{ip} is not a unicast address")).with_hint(hint)
            );
        }
        return Ok(ip);
    }
    if target.is_empty() || target.len() > 15 || target.contains('/') {
        return Err(Error::invalid(
            OP,
            format!("{target:?} is neither an IP nor an interface name"),
        )
        .with_hint(hint));
    }
    // getifaddrs answers for the calling thread's namespace: ask from a thread of its own that
    // enters the host namespace (never a tokio worker, nor a pooled blocking thread that would
    // keep the namespace), and await its answer.
    let ns = ns.try_clone()?;
    let name = target.to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("advertise-lookup".into())
        .spawn(move || {
            let lookup = || -> Result<Option<IpAddr>> {
                ns.enter()?;
                let addrs = nix::ifaddrs::getifaddrs().map_err(|e| {
                    Error::new(ErrorKind::Kernel, OP, "cannot list interface addresses")
                        .with_errno(e as i32)
                })?;
                Ok(addrs
                    .filter(|a| a.interface_name == name)
                    .find_map(|a| a.address?.as_sockaddr_in().map(|s| IpAddr::V4(s.ip()))))
            };
            let _ = tx.send(lookup());
        })
        .map_err(|e| Error::io(OP, "cannot start the address lookup thread", e))?;
    let found = rx
        .await
        .map_err(|_| Error::internal(OP, "the address lookup thread panicked"))??;
    found.ok_or_else(|| {
        Error::new(
            ErrorKind::NotFound,
            OP,
            format!("interface {target:?} has no IPv4 address in the host namespace"),
        )
        .with_hint(hint)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("eth0:2376").unwrap(), "eth0");
        assert_eq!(strip_port("10.211.55.13:2376").unwrap(), "10.211.55.13");
        assert_eq!(strip_port("[fd00::1]:2376").unwrap(), "fd00::1");
        assert_eq!(strip_port("fd00::1").unwrap(), "fd00::1");
        assert!(strip_port("eth0:port").is_err());
    }

    // One worker: a lookup that blocked it would never let the test's own future run.
    #[tokio::test(flavor = "current_thread")]
    async fn literal_addresses_need_no_namespace_lookup() {
        let ns = Netns::current().unwrap();
        assert_eq!(
            resolve("192.0.2.7:2376", &ns).await.unwrap(),
            "192.0.2.7".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            resolve("0.0.0.0", &ns).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        assert_eq!(
            resolve("", &ns).await.unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
        let e = resolve("nosuchif0", &ns).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
        assert_eq!(
            resolve("lo", &ns).await.unwrap(),
            "127.0.0.1".parse::<IpAddr>().unwrap()
        );
    }
}
