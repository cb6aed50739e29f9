//! Published ports: what `-p [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp]` asks for.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A transport protocol a port is published for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum PortProto {
    /// TCP (the default, as Docker's).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl PortProto {
    /// The protocol's IP number.
    pub fn number(self) -> u8 {
        match self {
            PortProto::Tcp => 6,
            PortProto::Udp => 17,
        }
    }

    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            PortProto::Tcp => "tcp",
            PortProto::Udp => "udp",
        }
    }
}

/// A port a container publishes on its host: traffic to `host_ip:host_port` (any address of
/// the host when `host_ip` is `None`) goes to the container's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PortMapping {
    /// The host address it is published on; `None`: every address of the host.
    pub host_ip: Option<Ipv4Addr>,
    /// The host's port.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// The protocol.
    pub proto: PortProto,
}

impl PortMapping {
    /// Whether `self` and `other` would take the same host port: the same protocol and port,
    /// on the same address or where either takes every address.
    pub fn clashes_with(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && (self.host_ip.is_none() || other.host_ip.is_none() || self.host_ip == other.host_ip)
    }
}

fn bad(text: &str, what: &str) -> Error {
    Error::invalid("publish port", format!("{text:?}: {what}"))
        .with_hint("write [HOST_IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], as -p 2181:2181")
}

fn port(text: &str, part: &str) -> Result<u16> {
    match part.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(bad(
            text,
            &format!("{part:?} is not a port from 1 to 65535"),
        )),
    }
}

impl FromStr for PortMapping {
    type Err = Error;

    fn from_str(text: &str) -> Result<PortMapping> {
        let (ports, proto) = match text.rsplit_once('/') {
            Some((p, "tcp")) => (p, PortProto::Tcp),
            Some((p, "udp")) => (p, PortProto::Udp),
            Some((_, other)) => return Err(bad(text, &format!("unknown protocol {other:?}"))),
            None => (text, PortProto::Tcp),
        };
        let parts: Vec<&str> = ports.split(':').collect();
        let (host_ip, host_port, container_port) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => {
                let ip = ip
                    .parse::<Ipv4Addr>()
                    .map_err(|_| bad(text, &format!("{ip:?} is not an IPv4 address")))?;
                if ip.is_unspecified() {
                    (None, *h, *c)
                } else {
                    (Some(ip), *h, *c)
                }
            }
            _ => return Err(bad(text, "expected HOST_PORT:CONTAINER_PORT")),
        };
        Ok(PortMapping {
            host_ip,
            host_port: port(text, host_port)?,
            container_port: port(text, container_port)?,
            proto,
        })
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.container_port,
            self.proto.as_str()
        )
    }
}

impl TryFrom<String> for PortMapping {
    type Error = Error;

    fn try_from(s: String) -> Result<PortMapping> {
        s.parse()
    }
}

impl From<PortMapping> for String {
    fn from(p: PortMapping) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    #[test]
    fn docker_forms_parse_and_print_canonically() {
        let p: PortMapping = "2181:2181".parse().unwrap();
        assert_eq!(
            p,
            PortMapping {
                host_ip: None,
                host_port: 2181,
                container_port: 2181,
                proto: PortProto::Tcp
            }
        );
        assert_eq!(p.to_string(), "2181:2181/tcp");
        let p: PortMapping = "192.0.2.1:8080:80/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(
            (p.host_port, p.container_port, p.proto),
            (8080, 80, PortProto::Udp)
        );
        assert_eq!(p.to_string().parse::<PortMapping>().unwrap(), p);
        let any: PortMapping = "0.0.0.0:53:53/udp".parse().unwrap();
        assert_eq!(any.host_ip, None, "0.0.0.0 is every address");
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, "\"192.0.2.1:8080:80/udp\"");
        assert_eq!(serde_json::from_str::<PortMapping>(&json).unwrap(), p);
    }

    #[test]
    fn malformed_mappings_are_refused_with_the_syntax() {
        for bad in [
            "2181",
            "0:2181",
            "2181:70000",
            "a:b",
            "2181:2181/sctp",
            "::1:80:80",
            "1:2:3:4",
            "",
        ] {
            let e = bad.parse::<PortMapping>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(
                e.to_string().contains("HOST_PORT:CONTAINER_PORT"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn clashes_are_per_protocol_port_and_address() {
        let p = |s: &str| s.parse::<PortMapping>().unwrap();
        assert!(p("2181:2181").clashes_with(&p("2181:80")));
        assert!(p("2181:2181").clashes_with(&p("192.0.2.1:2181:1")));
        assert!(!p("2181:2181").clashes_with(&p("2181:2181/udp")));
        assert!(!p("192.0.2.1:2181:1").clashes_with(&p("192.0.2.2:2181:1")));
        assert!(!p("2181:2181").clashes_with(&p("2182:2181")));
    }
}
