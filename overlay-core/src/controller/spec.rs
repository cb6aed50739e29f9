//! What callers hand the controller: how to open it, what network to create, which container to
//! connect.
//!
//! Callers outside Rust (the C face, the JSON-lines protocol) hand these over as JSON, read in
//! two steps so that every face can tell a document of the wrong shape from one with a wrong
//! value. First the document's shape ([`document`]): field names and JSON types, unknown
//! fields refused, addresses and numbers kept as written. A typo or a wrong type fails there
//! (the C face's `OVL_ERR_JSON`). Then the values, by `TryFrom`: a subnet such as
//! `"10.999.0.0/24"` or a VNI out of range is an [`ErrorKind::InvalidArgument`] naming the field
//! and the value. Deserialising a typed struct directly (`serde_json::from_str`) runs both steps.
//!
//! [`document::parse_text`], [`document::whole_number`] and [`document::out_of_range`] word a
//! bad value; the Python face uses them for its keyword arguments, so a bad subnet reads the
//! same wherever it came from.
//!
//! [`ErrorKind::InvalidArgument`]: crate::ErrorKind::InvalidArgument

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub mod document;

/// Where the embedded store lives when no cluster store is given.
pub const DEFAULT_STORE: &str = "file:///var/lib/overlay/store.db";

/// Network names Docker reserves for its local networks; refused for overlay networks.
pub const RESERVED_NETWORK_NAMES: [&str; 4] = ["bridge", "host", "none", "docker_gwbridge"];

/// How to open a [`Controller`](super::Controller): one per host.
/// `ControllerOptions::new(store)`, then the setters for the rest; every field has a default.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "document::ControllerOptionsDoc")]
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
    #[serde(serialize_with = "millis")]
    pub sticky_grace: Duration,
    /// TTL of this host's record: other hosts forget it this long after it dies.
    #[serde(serialize_with = "millis")]
    pub host_ttl: Duration,
    /// How long after a host vanished its non-sticky addresses go back to the pool, unless it
    /// comes back.
    #[serde(serialize_with = "millis")]
    pub reclaim_grace: Duration,
    /// The host-local pool of the gateway bridge (Docker's `docker_gwbridge`), from which
    /// containers on non-internal networks get their second interface; default
    /// `172.18.0.0/16`. Must not hold the advertise address (`open` refuses it); networks
    /// created on this host never take a subnet in it, and a connect to one made elsewhere
    /// over it is refused.
    pub gateway_pool: Option<ipnet::Ipv4Net>,
    /// The gateway bridge's name; default `ovl_gwbridge`.
    pub gateway_bridge: Option<String>,
    /// The embedded resolver: each network's sandbox answers names at the network's gateway
    /// address (`10.0.0.1` for `10.0.0.0/24`), for the containers on it; default on.
    pub dns: bool,
    /// Where the resolver forwards names that are not containers' (`IP` or `IP:PORT`, tried
    /// in order); default: the nameservers of `/etc/resolv.conf` when the controller opens.
    pub dns_upstreams: Option<Vec<std::net::SocketAddr>>,
    /// Where this host keeps what only it may act on (its containers' namespace and hosts file
    /// paths, never put in the cluster store); default: `/run/overlay/<host id>-<hash of the
    /// store URL>`, which, like the namespaces it names, does not outlive a reboot.
    pub state_dir: Option<PathBuf>,
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
            gateway_pool: None,
            gateway_bridge: None,
            dns: true,
            dns_upstreams: None,
            state_dir: None,
        }
    }
}

/// A range default subnets are cut from, as Docker's `default-address-pools` entries: every
/// `/size` subnet of `base`, in address order.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "document::AddressPoolDoc")]
pub struct AddressPool {
    /// The range, e.g. `10.0.0.0/8`.
    pub base: IpNet,
    /// Prefix length of each subnet cut from it, e.g. 24.
    pub size: u8,
}

/// Durations as integer milliseconds in JSON (`"host_ttl": 2000`).
fn millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One subnet of a network (Docker's `--subnet`, `--gateway`, `--ip-range`, `--aux-address`):
/// `SubnetOptions::new(subnet)`, then the setters for the rest.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "document::SubnetOptionsDoc")]
pub struct SubnetOptions {
    /// The subnet, e.g. `10.0.9.0/24` or `fd00:1::/64`.
    pub subnet: IpNet,
    /// Gateway address; default: the first usable address.
    pub gateway: Option<IpAddr>,
    /// Allocate only inside this range.
    pub ip_range: Option<IpNet>,
    /// Named addresses never handed out.
    pub aux_addresses: BTreeMap<String, IpAddr>,
}

/// Options of [`Controller::create_network`](super::Controller::create_network): the default
/// (one IPv4 subnet from the default pools, a free VNI), then the setters for the rest.
#[non_exhaustive]
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "document::NetworkOptionsDoc")]
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
#[serde(rename_all = "snake_case", try_from = "document::NetnsRefDoc")]
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

/// A container to [`connect`](super::Controller::connect):
/// `ContainerSpec::new(id, name, netns)`, then the setters for the rest.
///
/// ```
/// use overlay_core::{ContainerSpec, NetnsRef};
/// # fn main() -> overlay_core::Result<()> {
/// let spec = ContainerSpec::new("3cfba8da9b6f", "zookeeper1", NetnsRef::Pid(4242))
///     .sticky(true)
///     .alias("zk")
///     .publish("2181:2181".parse()?);
/// assert_eq!(spec.aliases, ["zk"]);
/// # Ok(()) }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "document::ContainerSpecDoc")]
pub struct ContainerSpec {
    /// The embedder's container id (any text without whitespace, up to 128 bytes).
    pub id: String,
    /// Container name, resolvable as `name` and `name.<network>` on the network.
    pub name: String,
    /// The container's network namespace.
    pub netns: NetnsRef,
    /// Further names on this network.
    pub aliases: Vec<String>,
    /// A static IPv4 address (Docker's `--ip`).
    pub ipv4: Option<Ipv4Addr>,
    /// A static IPv6 address (Docker's `--ip6`).
    pub ipv6: Option<Ipv6Addr>,
    /// Keep the address reserved for this name after disconnect, so a restarted container gets
    /// the same one back.
    pub sticky: bool,
    /// A hosts file the agent keeps current for this container (written in place; written
    /// before connect returns, so it can be bind-mounted at once).
    pub hosts_file: Option<PathBuf>,
    /// A `resolv.conf` the agent keeps pointing at the resolvers of the container's networks
    /// on this host, with their names as search domains (written in place).
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// Interface name inside the container; default: `eth0`, `eth1`, … in order of joining.
    pub ifname: Option<String>,
    /// Ports published on this host to the container (Docker's `-p`), through its interface
    /// on the host's gateway bridge; refused on an internal network.
    #[serde(default)]
    pub publish: Vec<crate::model::PortMapping>,
    /// Who makes this attachment (a tool's name, such as `overlay-cni`), kept by this host only
    /// and listed by [`attachments`](super::Controller::attachments), so that the tool can later
    /// find, check and collect its own attachments and leave everybody else's alone.
    #[serde(default)]
    pub owner: Option<String>,
}

impl ControllerOptions {
    /// Options for a host of the cluster store at `store` (`etcd://…`, `zk://…`,
    /// `consul://…`, `file:///…`), every other option at its default.
    pub fn new(store: impl Into<String>) -> ControllerOptions {
        ControllerOptions {
            store: store.into(),
            ..ControllerOptions::default()
        }
    }

    /// The address other hosts send VXLAN traffic to: an IP, or an interface name.
    pub fn advertise(mut self, advertise: impl Into<String>) -> Self {
        self.advertise = advertise.into();
        self
    }

    /// This host's id in the cluster (default: the machine's hostname).
    pub fn host_id(mut self, id: impl Into<String>) -> Self {
        self.host_id = Some(id.into());
        self
    }

    /// The namespace acting as this host (default: the caller's own).
    pub fn host_netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.host_netns = Some(path.into());
        self
    }

    /// The MTU of overlay links (default: the underlay's less 50).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }

    /// The UDP port of VXLAN traffic (default 4789).
    pub fn vxlan_port(mut self, port: u16) -> Self {
        self.vxlan_port = port;
        self
    }

    /// Where networks created without a subnet take theirs from, in order.
    pub fn default_pools(mut self, pools: impl IntoIterator<Item = AddressPool>) -> Self {
        self.default_pools = Some(pools.into_iter().collect());
        self
    }

    /// How long a sticky address stays reserved for its name after the endpoint goes.
    pub fn sticky_grace(mut self, grace: Duration) -> Self {
        self.sticky_grace = grace;
        self
    }

    /// The TTL of this host's record.
    pub fn host_ttl(mut self, ttl: Duration) -> Self {
        self.host_ttl = ttl;
        self
    }

    /// How long after a host vanished its addresses go back to the pool.
    pub fn reclaim_grace(mut self, grace: Duration) -> Self {
        self.reclaim_grace = grace;
        self
    }

    /// The host-local pool of the gateway bridge (default `172.18.0.0/16`).
    pub fn gateway_pool(mut self, pool: ipnet::Ipv4Net) -> Self {
        self.gateway_pool = Some(pool);
        self
    }

    /// The gateway bridge's name (default `ovl_gwbridge`).
    pub fn gateway_bridge(mut self, name: impl Into<String>) -> Self {
        self.gateway_bridge = Some(name.into());
        self
    }

    /// Whether each network's sandbox answers names at its gateway address (default on).
    pub fn dns(mut self, on: bool) -> Self {
        self.dns = on;
        self
    }

    /// Where the resolver forwards names that are not containers', in order.
    pub fn dns_upstreams(
        mut self,
        upstreams: impl IntoIterator<Item = std::net::SocketAddr>,
    ) -> Self {
        self.dns_upstreams = Some(upstreams.into_iter().collect());
        self
    }

    /// Where this host keeps what only it may act on.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
}

impl AddressPool {
    /// Every `/size` subnet of `base`, in address order.
    pub fn new(base: IpNet, size: u8) -> AddressPool {
        AddressPool { base, size }
    }
}

impl SubnetOptions {
    /// Subnet `subnet`, its gateway the first usable address, every address allocatable.
    pub fn new(subnet: IpNet) -> SubnetOptions {
        SubnetOptions {
            subnet,
            gateway: None,
            ip_range: None,
            aux_addresses: BTreeMap::new(),
        }
    }

    /// The gateway address.
    pub fn gateway(mut self, gateway: IpAddr) -> Self {
        self.gateway = Some(gateway);
        self
    }

    /// Allocate only inside `range`.
    pub fn ip_range(mut self, range: IpNet) -> Self {
        self.ip_range = Some(range);
        self
    }

    /// An address never handed out, under `name` (Docker's `--aux-address name=ip`).
    pub fn aux_address(mut self, name: impl Into<String>, ip: IpAddr) -> Self {
        self.aux_addresses.insert(name.into(), ip);
        self
    }
}

impl NetworkOptions {
    /// Adds a subnet (the first of each family is the one default addresses come from).
    pub fn subnet(mut self, subnet: SubnetOptions) -> Self {
        self.subnets.push(subnet);
        self
    }

    /// Enables IPv6 (needs an IPv6 subnet).
    pub fn ipv6(mut self, on: bool) -> Self {
        self.ipv6 = on;
        self
    }

    /// The VXLAN id (default: allocated, unique cluster-wide).
    pub fn vni(mut self, vni: u32) -> Self {
        self.vni = Some(vni);
        self
    }

    /// A user label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// No route out of the overlay.
    pub fn internal(mut self, on: bool) -> Self {
        self.internal = on;
        self
    }

    /// The MTU of this network's links (default: the controller's).
    pub fn mtu(mut self, mtu: u32) -> Self {
        self.mtu = Some(mtu);
        self
    }
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
    /// Container `id` named `name` in namespace `netns`, with every other option at its
    /// default: no alias, addresses from the pool, not sticky, no hosts file or
    /// `resolv.conf`, the next free interface name, nothing published.
    pub fn new(id: impl Into<String>, name: impl Into<String>, netns: NetnsRef) -> ContainerSpec {
        ContainerSpec {
            id: id.into(),
            name: name.into(),
            netns,
            aliases: Vec::new(),
            ipv4: None,
            ipv6: None,
            sticky: false,
            hosts_file: None,
            resolv_conf: None,
            ifname: None,
            publish: Vec::new(),
            owner: None,
        }
    }

    /// Its further names on the network (replacing any given before).
    pub fn aliases(mut self, aliases: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.aliases = aliases.into_iter().map(Into::into).collect();
        self
    }

    /// One more name on the network.
    pub fn alias(mut self, alias: impl Into<String>) -> Self {
        self.aliases.push(alias.into());
        self
    }

    /// A static IPv4 address, or none (Docker's `--ip`).
    pub fn ipv4(mut self, ip: impl Into<Option<Ipv4Addr>>) -> Self {
        self.ipv4 = ip.into();
        self
    }

    /// A static IPv6 address, or none (Docker's `--ip6`).
    pub fn ipv6(mut self, ip: impl Into<Option<Ipv6Addr>>) -> Self {
        self.ipv6 = ip.into();
        self
    }

    /// Keeps the address reserved for this name after a disconnect.
    pub fn sticky(mut self, sticky: bool) -> Self {
        self.sticky = sticky;
        self
    }

    /// A hosts file the agent keeps current for this container.
    pub fn hosts_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.hosts_file = Some(path.into());
        self
    }

    /// A `resolv.conf` the agent keeps pointing at the container's resolvers.
    pub fn resolv_conf(mut self, path: impl Into<PathBuf>) -> Self {
        self.resolv_conf = Some(path.into());
        self
    }

    /// The interface name inside the container (default: the next free `ethN`).
    pub fn ifname(mut self, name: impl Into<String>) -> Self {
        self.ifname = Some(name.into());
        self
    }

    /// Publishes one more port on this host to the container (Docker's `-p`).
    pub fn publish(mut self, port: crate::model::PortMapping) -> Self {
        self.publish.push(port);
        self
    }

    /// Who makes this attachment (a tool's name), for [`attachments`](super::Controller::attachments).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

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
        if let Some(owner) = &self.owner
            && !crate::model::is_plain_name(owner, 64)
        {
            return bad(
                format!("owner {owner:?} is invalid"),
                "name the tool making the attachment with 1 to 64 letters, digits, '_', '-' or '.'",
            );
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
    use super::document::FromDocument;
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

    /// Reads `json` as `T` in the two steps the C face takes: `Ok(Err(_))` is a bad value.
    fn two_steps<T: FromDocument>(json: &str) -> serde_json::Result<Result<T>> {
        serde_json::from_str::<T::Document>(json).map(T::try_from)
    }

    /// The InvalidArgument error a well-formed document with a bad value gives.
    fn bad_value<T: FromDocument + std::fmt::Debug>(json: &str) -> Error {
        let e = two_steps::<T>(json)
            .unwrap_or_else(|e| panic!("{json} was refused as malformed: {e}"))
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
        e
    }

    #[test]
    fn documents_of_the_wrong_shape_fail_before_any_value_is_read() {
        for json in [
            "not json",
            r#"{"subnets": 5}"#,
            r#"{"subnets": [{"subnet": 10}]}"#,
            r#"{"subnets": [{"gateway": "10.0.9.1"}]}"#,
            r#"{"subnets": [{"subnet": "10.0.9.0/24", "gw": "10.0.9.1"}]}"#,
            r#"{"vni": "4097"}"#,
            r#"{"labels": {"a": 1}}"#,
        ] {
            assert!(two_steps::<NetworkOptions>(json).is_err(), "{json}");
        }
        for json in [
            r#"{"mtu": "big"}"#,
            r#"{"default_pools": [{"base": "10.0.0.0/8"}]}"#,
        ] {
            assert!(two_steps::<ControllerOptions>(json).is_err(), "{json}");
        }
        for json in [
            r#"{"id": "c", "name": "n"}"#,
            r#"{"id": "c", "name": "n", "netns": {"pid": "1"}}"#,
            r#"{"id": "c", "name": "n", "netns": {"pid": 1}, "ipv4": 167772170}"#,
        ] {
            assert!(two_steps::<ContainerSpec>(json).is_err(), "{json}");
        }
    }

    #[test]
    fn bad_values_name_the_field_the_value_and_what_to_write() {
        let e = bad_value::<NetworkOptions>(r#"{"subnets": [{"subnet": "10.999.0.0/24"}]}"#);
        assert_eq!(e.op(), "create network");
        assert_eq!(
            e.context(),
            r#"subnets[0].subnet "10.999.0.0/24" is not a valid subnet"#
        );
        assert!(e.hint().contains("ADDRESS/PREFIX"), "{e}");
        let e = bad_value::<NetworkOptions>(
            r#"{"subnets": [{"subnet": "10.0.9.0/24"},
                            {"subnet": "10.0.8.0/24", "aux_addresses": {"router": "10.0.8"}}]}"#,
        );
        assert!(
            e.context().starts_with("subnets[1].aux_addresses.router "),
            "{e}"
        );
        let e = bad_value::<NetworkOptions>(
            r#"{"subnets": [{"subnet": "10.0.9.0/24", "gateway": "10.0.9.x"}]}"#,
        );
        assert!(
            e.context().contains("subnets[0].gateway \"10.0.9.x\""),
            "{e}"
        );
        for (vni, context) in [
            ("0", "vni 0 is out of range"),
            ("16777216", "vni 16777216 is out of range"),
            ("-1", "vni -1 is out of range"),
            ("99999999999999999999999", "is out of range"),
            ("1.5", "vni 1.5 is not a whole number"),
        ] {
            let e = bad_value::<NetworkOptions>(&format!(r#"{{"vni": {vni}}}"#));
            assert!(e.context().contains(context), "{vni}: {e}");
            assert_eq!(e.hint(), "use a whole number from 1 to 16777215");
        }
        let e = bad_value::<ControllerOptions>(
            r#"{"default_pools": [{"base": "10.0.0.0/8", "size": 24},
                                  {"base": "10.1.0.0/16", "size": 300}]}"#,
        );
        assert_eq!(
            (e.op(), e.context()),
            (
                "open controller",
                "default_pools[1].size 300 is out of range"
            )
        );
        let e = bad_value::<ControllerOptions>(r#"{"host_ttl": -5}"#);
        assert!(e.context().starts_with("host_ttl -5"), "{e}");
        let e = bad_value::<ControllerOptions>(r#"{"vxlan_port": 65536.0}"#);
        assert_eq!(e.context(), "vxlan_port 65536.0 is out of range");
        assert_eq!(e.hint(), "use a whole number from 0 to 65535");
        let spec =
            |extra: &str| format!(r#"{{"id": "c", "name": "n", "netns": {{"pid": 1}}{extra}}}"#);
        let e = bad_value::<ContainerSpec>(&spec(r#", "ipv4": "fd00::1""#));
        assert_eq!(e.op(), "connect");
        assert!(
            e.context()
                .contains("ipv4 \"fd00::1\" is not a valid IPv4 address"),
            "{e}"
        );
        let e = bad_value::<ContainerSpec>(&spec(r#", "ipv6": "10.0.9.2""#));
        assert!(e.context().contains("not a valid IPv6 address"), "{e}");
        let e =
            bad_value::<ContainerSpec>(r#"{"id": "c", "name": "n", "netns": {"pid": 4294967296}}"#);
        assert!(e.context().starts_with("netns.pid 4294967296"), "{e}");
    }

    #[test]
    fn typed_structs_deserialise_through_their_documents() {
        // One step, as the JSON-lines protocol takes it: the same checks, as a serde error.
        let e =
            serde_json::from_str::<NetworkOptions>(r#"{"subnets": [{"subnet": "10.0.300.0/24"}]}"#)
                .unwrap_err();
        assert!(
            e.to_string()
                .contains("subnets[0].subnet \"10.0.300.0/24\""),
            "{e}"
        );
        // What a typed struct serialises to reads back as the same value.
        let controller = ControllerOptions {
            host_id: Some("h1".into()),
            host_netns: Some("/run/netns/h1".into()),
            mtu: Some(1400),
            default_pools: Some(vec![AddressPool {
                base: "10.10.0.0/16".parse().unwrap(),
                size: 26,
            }]),
            host_ttl: Duration::from_millis(2500),
            ..ControllerOptions::default()
        };
        let network = NetworkOptions {
            subnets: vec![SubnetOptions {
                subnet: "10.0.9.0/24".parse().unwrap(),
                gateway: Some("10.0.9.1".parse().unwrap()),
                ip_range: Some("10.0.9.128/25".parse().unwrap()),
                aux_addresses: [("router".to_string(), "10.0.9.2".parse().unwrap())].into(),
            }],
            vni: Some(4097),
            labels: [("team".to_string(), "db".to_string())].into(),
            mtu: Some(1450),
            ..NetworkOptions::default()
        };
        let container = ContainerSpec {
            id: "3cfba8da9b6f".into(),
            name: "zookeeper1".into(),
            netns: NetnsRef::Path("/run/netns/zk1".into()),
            aliases: vec!["zk".into()],
            ipv4: Some("10.0.9.10".parse().unwrap()),
            ipv6: Some("fd00:9::10".parse().unwrap()),
            sticky: true,
            hosts_file: Some("/run/zk1/hosts".into()),
            resolv_conf: None,
            ifname: Some("eth1".into()),
            publish: vec![
                "2181:2181".parse().unwrap(),
                "192.0.2.1:53:53/udp".parse().unwrap(),
            ],
            owner: Some("overlay-cni".into()),
        };
        fn round_trip<T: Serialize + serde::de::DeserializeOwned>(v: &T) -> T {
            serde_json::from_str(&serde_json::to_string(v).unwrap()).unwrap()
        }
        assert_eq!(round_trip(&controller), controller);
        assert_eq!(
            round_trip(&ControllerOptions::default()),
            ControllerOptions::default()
        );
        assert_eq!(round_trip(&network), network);
        assert_eq!(round_trip(&container), container);
        assert_eq!(round_trip(&NetnsRef::Pid(7)), NetnsRef::Pid(7));
        // JSON has one number type: a float without a fraction is that whole number.
        let pool: AddressPool =
            serde_json::from_str(r#"{"base": "10.0.0.0/8", "size": 24.0}"#).unwrap();
        assert_eq!(pool.size, 24);
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
            resolv_conf: None,
            ifname: None,
            publish: Vec::new(),
            owner: None,
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
