//! The records kept in the cluster store, versioned by a `schema` field.
//!
//! Decoding never panics: a record that is not JSON, lacks its schema, was written by a newer
//! schema, or holds an out-of-range field gives [`ErrorKind::InvalidArgument`] naming the key,
//! so an agent can log and skip it without stopping.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::ids::{EndpointId, HostId, MacAddr, NetworkId, Vni, is_plain_name};
use crate::error::{Error, ErrorKind, Result};

/// The schema version this build writes and the newest it reads.
pub const SCHEMA: u32 = 1;

/// A record stored as JSON under one key.
pub trait Record: Serialize + DeserializeOwned {
    /// What the record is, for messages ("network", "endpoint", "host").
    const WHAT: &'static str;

    /// Checks invariants serde cannot express; the message names the bad field.
    fn validate(&self) -> std::result::Result<(), String>;

    /// Serialises the record for the store.
    fn encode(&self) -> Vec<u8> {
        // Records hold only strings, numbers, maps and addresses: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses and validates a record read from `key`.
    fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        let bad = |why: String| {
            Error::new(
                ErrorKind::InvalidArgument,
                "decode record",
                format!("{} record at key {key:?} {why}", Self::WHAT),
            )
            .with_hint("the record was skipped; remove or rewrite the key if it is stale")
        };
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
        match value.get("schema").and_then(serde_json::Value::as_u64) {
            None => return Err(bad("has no numeric \"schema\" field".into())),
            Some(v) if v > u64::from(SCHEMA) => {
                return Err(bad(format!(
                    "was written by a newer version (schema {v}, this build reads up to {SCHEMA})"
                ))
                .with_hint("upgrade overlay on this host"));
            }
            Some(_) => {}
        }
        let record: Self =
            serde_json::from_value(value).map_err(|e| bad(format!("is malformed: {e}")))?;
        record
            .validate()
            .map_err(|why| bad(format!("is invalid: {why}")))?;
        Ok(record)
    }
}

fn schema_default() -> u32 {
    SCHEMA
}

/// One address pool of a network (Docker's `IPAM.Config[]` entry).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolConfig {
    /// The subnet addresses come from, e.g. `10.0.0.0/24`.
    pub subnet: IpNet,
    /// The gateway address, never handed out; the first usable address when not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
    /// Allocate only inside this range of the subnet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNet>,
    /// Named addresses reserved for other uses, never handed out.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

impl PoolConfig {
    /// A pool over `subnet` with every other field defaulted.
    pub fn new(subnet: IpNet) -> Self {
        PoolConfig {
            subnet: subnet.trunc(),
            gateway: None,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
        }
    }

    fn validate(&self) -> std::result::Result<(), String> {
        let s = self.subnet;
        if s.trunc() != s {
            return Err(format!(
                "subnet {s} has host bits set (did you mean {}?)",
                s.trunc()
            ));
        }
        if let Some(gw) = self.gateway
            && !s.contains(&gw)
        {
            return Err(format!("gateway {gw} is outside subnet {s}"));
        }
        if let Some(r) = self.ip_range
            && !s.contains(&r)
        {
            return Err(format!("ip-range {r} is outside subnet {s}"));
        }
        for (name, ip) in &self.aux_addresses {
            if !s.contains(ip) {
                return Err(format!("aux address {name}={ip} is outside subnet {s}"));
            }
        }
        Ok(())
    }
}

/// A network, the same record on every host (`networks/<id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// Record schema version.
    #[serde(default = "schema_default")]
    pub schema: u32,
    /// Cluster-wide id.
    pub id: NetworkId,
    /// Unique name.
    pub name: String,
    /// Always `overlay` for networks this library creates.
    pub driver: String,
    /// The VXLAN network identifier, unique cluster-wide.
    pub vni: Vni,
    /// Address pools (IPv4 and, when enabled, IPv6).
    pub pools: Vec<PoolConfig>,
    /// Whether IPv6 is enabled.
    #[serde(default)]
    pub ipv6: bool,
    /// Internal networks get no route out of the overlay.
    #[serde(default)]
    pub internal: bool,
    /// User labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Driver options as Docker shows them under `Options`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// MTU of the overlay links; `None` means underlay MTU − 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Creation time, milliseconds since the Unix epoch.
    #[serde(default)]
    pub created_ms: u64,
    /// Set while the network is being removed: connects are refused from then on, so a
    /// connect racing the removal can never leave an endpoint on a deleted network.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub removing: bool,
}

impl Record for Network {
    const WHAT: &'static str = "network";

    fn validate(&self) -> std::result::Result<(), String> {
        if !is_plain_name(&self.name, 128) {
            return Err(format!("name {:?} is not a valid network name", self.name));
        }
        if let Some(mtu) = self.mtu
            && !super::MTU_RANGE.contains(&mtu)
        {
            return Err(format!("mtu {mtu} is outside 68..=65535"));
        }
        self.pools.iter().try_for_each(PoolConfig::validate)
    }
}

/// A container's attachment to a network (`endpoints/<net-id>/<ep-id>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// Record schema version.
    #[serde(default = "schema_default")]
    pub schema: u32,
    /// Endpoint id.
    pub id: EndpointId,
    /// The network it is attached to.
    pub network: NetworkId,
    /// The embedder's container id.
    pub container_id: String,
    /// The container's name, resolvable as `name` and `name.<network>`.
    pub name: String,
    /// Further names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// IPv4 address with the network's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Net>,
    /// IPv6 address with the network's prefix length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv6: Option<Ipv6Net>,
    /// MAC of the container's interface.
    pub mac: MacAddr,
    /// The host the container runs on.
    pub host: HostId,
    /// That host's VXLAN tunnel endpoint (its advertise address).
    pub vtep: IpAddr,
    /// Whether the address is reserved for the name after the endpoint goes away.
    #[serde(default)]
    pub sticky: bool,
    /// Interface name inside the container (`eth0`, `eth1`, …).
    #[serde(default = "default_ifname")]
    pub ifname: String,
    // No paths: the container's namespace and hosts file are host-local facts, kept in the
    // host's own state (`agent::local`), never in a record that anyone with store access can
    // write. Records of older versions that still carry `netns` and `hosts_file` decode; the
    // fields are ignored.
}

fn default_ifname() -> String {
    "eth0".to_string()
}

impl Endpoint {
    /// Its addresses without prefix length: IPv4 first, then IPv6.
    pub fn addresses(&self) -> impl Iterator<Item = IpAddr> + use<> {
        let v4 = self.ipv4.map(|a| IpAddr::V4(a.addr()));
        let v6 = self.ipv6.map(|a| IpAddr::V6(a.addr()));
        v4.into_iter().chain(v6)
    }
}

impl Record for Endpoint {
    const WHAT: &'static str = "endpoint";

    fn validate(&self) -> std::result::Result<(), String> {
        if !is_plain_name(&self.name, 128) {
            return Err(format!(
                "name {:?} is not a valid container name",
                self.name
            ));
        }
        if let Some(bad) = self.aliases.iter().find(|a| !is_plain_name(a, 128)) {
            return Err(format!("alias {bad:?} is not a valid name"));
        }
        if self.ipv4.is_none() && self.ipv6.is_none() {
            return Err("has neither an IPv4 nor an IPv6 address".into());
        }
        Ok(())
    }
}

/// A create-only claim on a unique thing (a network name, a VNI): which network holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// Record schema version.
    #[serde(default = "schema_default")]
    pub schema: u32,
    /// The network holding the claim.
    pub network: NetworkId,
    /// When it was claimed, ms since the Unix epoch: a claim whose network record never
    /// appeared (its creator died half-way) is reclaimed once it is old enough.
    #[serde(default)]
    pub created_ms: u64,
}

impl Record for Claim {
    const WHAT: &'static str = "claim";

    fn validate(&self) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// A live host of the cluster (`hosts/<host-id>`, ephemeral).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    /// Record schema version.
    #[serde(default = "schema_default")]
    pub schema: u32,
    /// Host id.
    pub id: HostId,
    /// The address other hosts send VXLAN traffic to.
    pub advertise: IpAddr,
    /// When this incarnation of the host's agent started, ms since the Unix epoch.
    #[serde(default)]
    pub started_ms: u64,
    /// The process holding the host id, so that a restart on the same machine can tell its own
    /// crashed predecessor (whose record has not expired yet) from a live agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<Holder>,
}

/// The process that holds a host id (see [`Host::holder`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The machine's boot id (`/proc/sys/kernel/random/boot_id`): pids mean something only on
    /// the machine and boot that issued them.
    pub boot_id: String,
    /// The holding process.
    pub pid: u32,
    /// Random per agent, so that agents of one process are told apart.
    pub incarnation: u64,
}

impl Record for Host {
    const WHAT: &'static str = "host";

    fn validate(&self) -> std::result::Result<(), String> {
        if self.advertise.is_unspecified() || self.advertise.is_multicast() {
            return Err(format!(
                "advertise address {} is not a unicast address",
                self.advertise
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> Network {
        Network {
            schema: SCHEMA,
            id: NetworkId::random(),
            name: "my-net".into(),
            driver: "overlay".into(),
            vni: Vni::new(256).unwrap(),
            pools: vec![PoolConfig::new("10.0.0.0/24".parse().unwrap())],
            ipv6: false,
            internal: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            mtu: None,
            created_ms: 1,
            removing: false,
        }
    }

    #[test]
    fn network_roundtrip() {
        let n = network();
        assert_eq!(Network::decode("networks/x", &n.encode()).unwrap(), n);
    }

    #[test]
    fn decode_refuses_corrupt_newer_and_out_of_range() {
        let key = "networks/abc";
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{not json".to_vec(), "not valid JSON"),
            (br#"{"id":"x"}"#.to_vec(), "no numeric \"schema\""),
            (
                serde_json::to_vec(&serde_json::json!({"schema": 99})).unwrap(),
                "newer version",
            ),
            (
                {
                    let mut v = serde_json::to_value(network()).unwrap();
                    v["vni"] = serde_json::json!(0);
                    serde_json::to_vec(&v).unwrap()
                },
                "malformed",
            ),
            (
                {
                    let mut n = network();
                    n.pools[0].gateway = Some("10.1.0.1".parse().unwrap());
                    n.encode()
                },
                "outside subnet",
            ),
        ];
        for (bytes, want) in cases {
            let e = Network::decode(key, &bytes).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            let msg = e.to_string();
            assert!(msg.contains(key) && msg.contains(want), "{msg}");
        }
    }

    #[test]
    fn endpoint_needs_an_address() {
        let ep = Endpoint {
            schema: SCHEMA,
            id: EndpointId::random(),
            network: NetworkId::random(),
            container_id: "c1".into(),
            name: "zookeeper1".into(),
            aliases: vec![],
            ipv4: None,
            ipv6: None,
            mac: MacAddr([2, 0x42, 10, 0, 0, 2]),
            host: HostId::new("h1").unwrap(),
            vtep: "192.0.2.1".parse().unwrap(),
            sticky: false,
            ifname: "eth0".into(),
        };
        let e = Endpoint::decode("endpoints/a/b", &ep.encode()).unwrap_err();
        assert!(e.to_string().contains("neither"), "{e}");
        let ok = Endpoint {
            ipv4: Some("10.0.0.2/24".parse().unwrap()),
            ..ep
        };
        assert_eq!(Endpoint::decode("k", &ok.encode()).unwrap(), ok);
        // A record of an older version, with the paths records no longer carry, decodes; the
        // paths are dropped, never acted on.
        let mut old = serde_json::to_value(&ok).unwrap();
        old["netns"] = serde_json::json!("/proc/1/ns/net");
        old["hosts_file"] = serde_json::json!("/etc/shadow");
        let decoded = Endpoint::decode("k", &serde_json::to_vec(&old).unwrap()).unwrap();
        assert_eq!(decoded, ok);
        assert!(
            !String::from_utf8(decoded.encode())
                .unwrap()
                .contains("/proc/1")
        );
    }
}
