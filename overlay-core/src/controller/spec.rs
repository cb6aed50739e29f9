//! What callers hand the controller: how to open it, what network to create, which container to
//! connect. Every type deserialises from JSON with unknown fields refused, so the C face can take
//! the same shapes as JSON text and a typo is an error instead of a silently ignored option.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where the embedded store lives when no cluster store is given.
pub const DEFAULT_STORE: &str = "file:///var/lib/overlay/store.db";

/// Network names Docker reserves for its local networks; refused for overlay networks.
pub const RESERVED_NETWORK_NAMES: [&str; 4] = ["bridge", "host", "none", "docker_gwbridge"];

/// How to open a [`Controller`](super::Controller): one per host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerOptions {
    /// Cluster store URL (`etcd://…`, `zk://…`, `consul://…`, `file:///…`).
    pub store: String,
    /// The address other hosts send VXLAN traffic to: an IP, or an interface name whose first
    /// IPv4 address is used (looked up in the host namespace). Docker's `--cluster-advertise`.
    pub advertise: String,
    /// This host's id in the cluster; default: the machine's hostname.
    pub host_id: Option<String>,
    /// The namespace acting as this host (a path such as `/run/netns/host1`); default: the
    /// caller's own. Lets one process play several hosts.
    pub host_netns: Option<PathBuf>,
    /// MTU of overlay links; default: the underlay MTU minus 50 (VXLAN overhead).
    pub mtu: Option<u32>,
    /// UDP port of VXLAN traffic.
    pub vxlan_port: u16,
    /// Where networks created without a subnet take theirs from, in order; default: Docker's
    /// overlay pools 10.0.0.0/24, 10.0.1.0/24, … (`{"base": "10.0.0.0/8", "size": 24}`).
    pub default_pools: Option<Vec<AddressPool>>,
    /// How long a sticky address stays reserved for its name after the endpoint goes.
    #[serde(with = "duration_ms")]
    pub sticky_grace: Duration,
    /// TTL of this host's record: other hosts forget it this long after it dies.
    #[serde(with = "duration_ms")]
    pub host_ttl: Duration,
    /// How long after a host vanished its non-sticky addresses go back to the pool, unless it
    /// comes back.
    #[serde(with = "duration_ms")]
    pub reclaim_grace: Duration,
}

impl Default for ControllerOptions {
    fn default() -> Self {
        ControllerOptions {
            store: DEFAULT_STORE.to_string(),
            advertise: String::new(),
            host_id: None,
            host_netns: None,
            mtu: None,
            vxlan_port: 4789,
            default_pools: None,
            sticky_grace: Duration::from_secs(24 * 3600),
            host_ttl: Duration::from_secs(10),
            reclaim_grace: Duration::from_secs(30),
        }
    }
}

/// A range default subnets are cut from, as Docker's `default-address-pools` entries: every
/// `/size` subnet of `base`, in address order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPool {
    /// The range, e.g. `10.0.0.0/8`.
    pub base: IpNet,
    /// Prefix length of each subnet cut from it, e.g. 24.
    pub size: u8,
}

/// Durations as integer milliseconds in JSON (`"host_ttl": 2000`).
mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// One subnet of a network (Docker's `--subnet`, `--gateway`, `--ip-range`, `--aux-address`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetOptions {
    /// The subnet, e.g. `10.0.9.0/24` or `fd00:1::/64`.
    pub subnet: IpNet,
    /// Gateway address; default: the first usable address.
    #[serde(default)]
    pub gateway: Option<IpAddr>,
    /// Allocate only inside this range.
    #[serde(default)]
    pub ip_range: Option<IpNet>,
    /// Named addresses never handed out.
    #[serde(default)]
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

/// Options of [`Controller::create_network`](super::Controller::create_network).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkOptions {
    /// Subnets; none means one IPv4 pool from the default list (plus an IPv6 one if `ipv6`
    /// and no IPv6 subnet is given, which is refused: give it explicitly).
    pub subnets: Vec<SubnetOptions>,
    /// Enable IPv6 (needs an IPv6 subnet).
    pub ipv6: bool,
    /// The VXLAN id; default: allocated, unique cluster-wide.
    pub vni: Option<u32>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
    /// No route out of the overlay.
    pub internal: bool,
    /// MTU of this network's links; default: the controller's.
    pub mtu: Option<u32>,
}

/// How to find a container's network namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetnsRef {
    /// A namespace file, e.g. `/run/netns/zookeeper1` or `/proc/1234/ns/net`.
    Path(PathBuf),
    /// The namespace of a process.
    Pid(u32),
}

impl NetnsRef {
    /// The namespace file to open.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Path(p) => p.clone(),
            NetnsRef::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }
}

/// A container to [`connect`](super::Controller::connect).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// The embedder's container id (any text without whitespace, up to 128 bytes).
    pub id: String,
    /// Container name, resolvable as `name` and `name.<network>` on the network.
    pub name: String,
    /// The container's network namespace.
    pub netns: NetnsRef,
    /// Further names on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A static IPv4 address (Docker's `--ip`).
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// A static IPv6 address (Docker's `--ip6`).
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// Keep the address reserved for this name after disconnect, so a restarted container gets
    /// the same one back.
    #[serde(default)]
    pub sticky: bool,
    /// A hosts file the agent keeps current for this container (replaced atomically).
    #[serde(default)]
    pub hosts_file: Option<PathBuf>,
    /// Interface name inside the container; default: `eth0`, `eth1`, … in order of joining.
    #[serde(default)]
    pub ifname: Option<String>,
}

/// Checks a network name: Docker's rules (letters, digits, `_`, `-`, `.`, starting with a
/// letter or digit, at most 128 bytes) and not one of Docker's reserved names.
pub fn validate_network_name(name: &str) -> Result<()> {
    if RESERVED_NETWORK_NAMES.contains(&name) {
        return Err(Error::invalid(
            "create network",
            format!("{name:?} is a reserved network name"),
        )
        .with_hint("pick another name; bridge, host, none and docker_gwbridge are Docker's own"));
    }
    if !crate::model::is_plain_name(name, 128) {
        return Err(Error::invalid(
            "create network",
            format!("network name {name:?} is invalid"),
        )
        .with_hint(
            "use 1 to 128 letters, digits, '_', '-' or '.', starting with a letter or digit",
        ));
    }
    Ok(())
}

impl ContainerSpec {
    /// Checks the fields that do not need the store: id, name, aliases, interface name.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |what: String, hint: &'static str| Err(Error::invalid("connect", what).with_hint(hint));
        if self.id.is_empty()
            || self.id.len() > 128
            || !self.id.chars().all(|c| c.is_ascii_graphic() && c != '/')
        {
            return bad(
                format!("container id {:?} is invalid", self.id),
                "use 1 to 128 printable characters without spaces or '/'",
            );
        }
        for name in std::iter::once(&self.name).chain(&self.aliases) {
            if !crate::model::is_plain_name(name, 128) {
                return bad(
                    format!("container name or alias {name:?} is invalid"),
                    "use letters, digits, '_', '-' or '.', starting with a letter or digit",
                );
            }
        }
        if let Some(ifname) = &self.ifname
            && (ifname.is_empty()
                || ifname.len() > 15
                || !ifname
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)))
        {
            return bad(
                format!("interface name {ifname:?} is invalid"),
                "Linux interface names are 1 to 15 letters, digits, '_', '-' or '.'",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn options_refuse_unknown_keys() {
        let e = serde_json::from_str::<ControllerOptions>(r#"{"store":"file:///x","mtuu":1}"#)
            .unwrap_err();
        assert!(e.to_string().contains("mtuu"), "{e}");
        let o: ControllerOptions =
            serde_json::from_str(r#"{"advertise":"eth0","host_ttl":2000}"#).unwrap();
        assert_eq!(o.host_ttl, Duration::from_secs(2));
        assert_eq!(o.store, DEFAULT_STORE);
        let c: ContainerSpec = serde_json::from_str(
            r#"{"id":"c1","name":"zookeeper1","netns":{"path":"/run/netns/zk1"}}"#,
        )
        .unwrap();
        assert_eq!(c.netns.path(), PathBuf::from("/run/netns/zk1"));
        assert!(serde_json::from_str::<NetworkOptions>(r#"{"subnet":"10.0.0.0/24"}"#).is_err());
    }

    #[test]
    fn network_names() {
        validate_network_name("my-net").unwrap();
        for bad in [
            "bridge",
            "host",
            "none",
            "docker_gwbridge",
            "",
            "-x",
            "a b",
            "a/b",
        ] {
            let e = validate_network_name(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn container_specs() {
        let ok = ContainerSpec {
            id: "3cfba8da9b6f".into(),
            name: "zookeeper1".into(),
            netns: NetnsRef::Pid(1),
            aliases: vec!["zk".into()],
            ipv4: None,
            ipv6: None,
            sticky: false,
            hosts_file: None,
            ifname: None,
        };
        ok.validate().unwrap();
        for bad in [
            ContainerSpec {
                id: "a b".into(),
                ..ok.clone()
            },
            ContainerSpec {
                name: "".into(),
                ..ok.clone()
            },
            ContainerSpec {
                aliases: vec!["x y".into()],
                ..ok.clone()
            },
            ContainerSpec {
                ifname: Some("much-too-long-name".into()),
                ..ok
            },
        ] {
            assert_eq!(
                bad.validate().unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        }
    }
}
