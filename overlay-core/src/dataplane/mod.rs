//! The VXLAN data plane: the kernel state that makes containers on different hosts one L2
//! network.
//!
//! Per network and host there is a *sandbox*: a network namespace holding a bridge (`br0`) and a
//! vxlan device (`vxlan0`: the network's VNI, learning off, proxy ARP on, no multicast group).
//! The vxlan device is created from the host namespace, so its UDP socket (port 4789 by default)
//! lives there, on the underlay. A container joins through a veth pair whose host end sits on the
//! sandbox bridge. Each remote endpoint (a *peer*) is a permanent neighbour entry (IP → MAC) and
//! an FDB entry (MAC → remote VTEP) on the vxlan device; with proxy ARP the vxlan device answers
//! ARP and neighbour solicitations itself, so nothing is flooded across hosts.
//!
//! Everything goes through rtnetlink ([`NetlinkDataplane`]); nothing runs `ip` or `bridge`.
//! Every operation is idempotent: running it twice, or over the leftovers of a crashed run,
//! converges.

mod conn;
mod damage;
mod endpoint;
mod errors;
mod firewall;
mod gateway;
#[cfg(feature = "testing")]
pub mod lab;
mod link;
mod netlink_dp;
mod netns;
mod own;
mod peer;
mod probe;
mod sandbox;

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use crate::error::Result;
use crate::model::{MacAddr, NetworkId, Vni};

pub use damage::{Damage, Damaged, SandboxCheck};
pub use errors::NlError;
pub use firewall::PublishedPort;
pub use gateway::{DEFAULT_GATEWAY_BRIDGE, DEFAULT_GATEWAY_POOL, GatewaySpec};
pub use netlink_dp::NetlinkDataplane;
pub use netns::{Netns, NetnsId, named_path};
pub use probe::{InterfaceState, NamespaceState, RouteState, inspect_namespace};

/// The IANA VXLAN port, used unless a network says otherwise.
pub const DEFAULT_VXLAN_PORT: u16 = 4789;
/// Name of the bridge inside every sandbox.
pub const SANDBOX_BRIDGE: &str = "br0";
/// Name of the vxlan device inside every sandbox.
pub const SANDBOX_VXLAN: &str = "vxlan0";
/// Interface name a container gets unless the caller asks for another.
pub const DEFAULT_IFNAME: &str = "eth0";

/// What a network sandbox on this host must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxSpec {
    /// The network.
    pub network: NetworkId,
    /// Its VXLAN network identifier.
    pub vni: Vni,
    /// MTU of the bridge, vxlan and endpoints; `None` means underlay MTU − encapsulation
    /// overhead (50 bytes over IPv4, 70 over IPv6), read from the interface holding `vtep`.
    pub mtu: Option<u32>,
    /// UDP destination port of the VXLAN traffic.
    pub vxlan_port: u16,
    /// This host's VTEP (advertise) address; must be assigned to an interface of the host
    /// namespace.
    pub vtep: IpAddr,
    /// Addresses of the sandbox's bridge (the network's gateways, where its resolver
    /// answers); none by default.
    pub addresses: Vec<IpNet>,
}

impl SandboxSpec {
    /// A spec with the default port and the MTU derived from the underlay.
    pub fn new(network: NetworkId, vni: Vni, vtep: IpAddr) -> SandboxSpec {
        SandboxSpec {
            network,
            vni,
            mtu: None,
            vxlan_port: DEFAULT_VXLAN_PORT,
            vtep,
            addresses: Vec::new(),
        }
    }
}

/// A sandbox as found in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// Name of its namespace under `/run/netns` (`ovl-<host tag>-<network short id>`).
    pub netns_name: String,
    /// Path of its namespace.
    pub netns_path: PathBuf,
    /// The 12-hex short id of its network, from the namespace name.
    pub network_short: String,
    /// VNI of its vxlan device, if the device exists.
    pub vni: Option<Vni>,
    /// MTU of its bridge, if the bridge exists.
    pub mtu: Option<u32>,
}

/// One container interface to attach to a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachSpec {
    /// The container's network namespace (`/proc/PID/ns/net` or `/run/netns/NAME`).
    pub netns: PathBuf,
    /// Interface name inside the container.
    pub ifname: String,
    /// IPv4 address and prefix.
    pub ipv4: Option<Ipv4Net>,
    /// IPv6 address and prefix.
    pub ipv6: Option<Ipv6Net>,
    /// MAC; `None` means `02:42:` + the IPv4 bytes, or a stable hash for IPv6-only endpoints.
    pub mac: Option<MacAddr>,
    /// MTU; `None` means the sandbox's.
    pub mtu: Option<u32>,
    /// Leave the container end in `netns` down and without addresses, for a runtime that
    /// moves it into the container and configures it itself (Docker's remote drivers).
    pub handoff: bool,
}

impl AttachSpec {
    /// An IPv4 endpoint named `eth0` with the derived MAC and the sandbox MTU.
    pub fn new(netns: impl Into<PathBuf>, ipv4: Ipv4Net) -> AttachSpec {
        AttachSpec {
            netns: netns.into(),
            ifname: DEFAULT_IFNAME.to_string(),
            ipv4: Some(ipv4),
            ipv6: None,
            mac: None,
            mtu: None,
            handoff: false,
        }
    }

    /// The MAC the endpoint gets: the given one, else derived from its addresses.
    pub fn effective_mac(&self) -> Option<MacAddr> {
        self.mac.or_else(|| match (self.ipv4, self.ipv6) {
            (Some(v4), _) => Some(MacAddr::from_ipv4(v4.addr())),
            (None, Some(v6)) => Some(MacAddr::from_hash(&v6.addr().octets())),
            (None, None) => None,
        })
    }
}

/// What an attach created (or found already in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedVeth {
    /// Name of the veth end on the sandbox bridge.
    pub host_ifname: String,
    /// Name of the interface in the container.
    pub container_ifname: String,
    /// MAC of the container interface.
    pub mac: MacAddr,
    /// MTU of both ends.
    pub mtu: u32,
    /// Addresses on the container interface.
    pub addresses: Vec<IpNet>,
    /// `false` when the endpoint already existed and was only brought in line.
    pub created: bool,
}

/// A remote endpoint, as programmed into a sandbox's vxlan device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Peer {
    /// Its overlay address.
    pub ip: IpAddr,
    /// Its MAC.
    pub mac: MacAddr,
    /// The VTEP address of the host it lives on.
    pub vtep: IpAddr,
}

/// The data plane of one host, as the agent and controller drive it.
///
/// Every method is idempotent. `network` names the sandbox; a method other than
/// [`Dataplane::ensure_sandbox`] on a network without a sandbox fails with
/// [`crate::ErrorKind::NotFound`] (removals succeed: nothing to remove).
#[async_trait]
pub trait Dataplane: Send + Sync {
    /// Creates the network's sandbox, or brings an existing one (also a crashed run's
    /// half-built leftover) in line with `spec`.
    async fn ensure_sandbox(&self, spec: &SandboxSpec) -> Result<SandboxInfo>;

    /// Removes the network's sandbox with everything in it. Keeps going after a failure and
    /// reports all of them.
    async fn remove_sandbox(&self, network: &NetworkId) -> Result<()>;

    /// The sandboxes of this host present in the kernel.
    async fn list_sandboxes(&self) -> Result<Vec<SandboxInfo>>;

    /// Connects a container interface to the network's sandbox.
    async fn attach(&self, network: &NetworkId, spec: &AttachSpec) -> Result<AttachedVeth>;

    /// Removes a container interface attached to the network; absent is not an error.
    async fn detach(&self, network: &NetworkId, netns: &Path, ifname: &str) -> Result<()>;

    /// Programs a remote endpoint; an identical one converges, a changed MAC or VTEP replaces.
    async fn add_peer(&self, network: &NetworkId, peer: &Peer) -> Result<()>;

    /// Programs many peers (pipelined where the implementation can); reports every failure.
    async fn add_peers(&self, network: &NetworkId, peers: &[Peer]) -> Result<()> {
        let mut failures = errors::Failures::default();
        for p in peers {
            failures.record(self.add_peer(network, p).await);
        }
        failures.finish("add peers")
    }

    /// Removes a remote endpoint's entries; absent ones are not an error.
    async fn remove_peer(&self, network: &NetworkId, peer: &Peer) -> Result<()>;

    /// The peers the kernel holds for the network, for a resync to diff against. A neighbour
    /// entry without an FDB entry is reported with an unspecified VTEP, an FDB entry without a
    /// neighbour with an unspecified IP, so that a diff removes and re-adds them.
    async fn list_peers(&self, network: &NetworkId) -> Result<Vec<Peer>>;

    /// Creates this host's gateway bridge, or brings it in line with `spec` (up, holding the
    /// pool's first address), and turns on IPv4 forwarding in the host namespace. The
    /// firewall is [`Dataplane::publish`]'s.
    async fn ensure_gateway(&self, spec: &GatewaySpec) -> Result<()> {
        let _ = spec;
        Err(no_gateway())
    }

    /// Gives a container an interface on the gateway bridge (`spec.ipv4` from the pool) with
    /// its default route through the bridge; the port is isolated from the other containers'.
    async fn attach_gateway(
        &self,
        spec: &GatewaySpec,
        attach: &AttachSpec,
    ) -> Result<AttachedVeth> {
        let _ = (spec, attach);
        Err(no_gateway())
    }

    /// Removes a container's interface from the gateway bridge; absent is not an error.
    async fn detach_gateway(&self, spec: &GatewaySpec, netns: &Path, ifname: &str) -> Result<()> {
        let _ = (spec, netns, ifname);
        Err(no_gateway())
    }

    /// Makes this host's firewall hold exactly the gateway's masquerade and `ports`, in one
    /// transaction on a table of this host's own (nothing else is touched).
    async fn publish(&self, spec: &GatewaySpec, ports: &[PublishedPort]) -> Result<()> {
        let _ = (spec, ports);
        Err(no_gateway())
    }

    /// Compares the gateway bridge with what it should hold, cheaply (one dump): the bridge,
    /// and the interfaces of the containers `attached` (their namespace and interface name).
    async fn check_gateway(
        &self,
        spec: &GatewaySpec,
        attached: &[(NetnsId, String)],
    ) -> Result<SandboxCheck> {
        let _ = spec;
        Ok(SandboxCheck {
            intact: false,
            detached: (0..attached.len()).collect(),
        })
    }

    /// A UDP socket and a TCP listener bound to `addr` inside the network's sandbox, where
    /// its containers reach a service at an address of the sandbox's bridge
    /// ([`SandboxSpec::addresses`]).
    async fn sandbox_sockets(
        &self,
        network: &NetworkId,
        addr: std::net::SocketAddr,
    ) -> Result<SandboxSockets> {
        let _ = (network, addr);
        Err(crate::Error::new(
            crate::ErrorKind::Unsupported,
            "bind in sandbox",
            "this dataplane has no sandbox sockets",
        )
        .with_hint("use the NetlinkDataplane, or turn the resolver off"))
    }

    /// The sandbox of `network` as it is now (its namespace's identity), `None` without one.
    async fn sandbox_netns(&self, network: &NetworkId) -> Result<Option<NetnsId>> {
        let _ = network;
        Ok(None)
    }

    /// Removes the gateway's firewall table and bridge; absent is not an error.
    async fn remove_gateway(&self, spec: &GatewaySpec) -> Result<()> {
        let _ = spec;
        Err(no_gateway())
    }

    /// The kernel's own reports of deletions in this host's sandboxes (a device, or a peer's
    /// entry), as they happen, so that what was removed behind the agent's back is put back
    /// at once. `None` when the implementation cannot report them: then only the periodic
    /// [`Dataplane::check_sandbox`] finds such damage.
    fn damage(&self) -> Option<tokio::sync::broadcast::Receiver<Damage>> {
        None
    }

    /// Compares the network's sandbox with what it should hold, cheaply (one dump over the
    /// connection already open): its own devices, and the interfaces of the containers
    /// `attached` (their namespace and interface name). Peers are compared by
    /// [`Dataplane::list_peers`].
    async fn check_sandbox(
        &self,
        network: &NetworkId,
        attached: &[(NetnsId, String)],
    ) -> Result<SandboxCheck>;
}

/// Sockets of a service inside a network's sandbox (the resolver), from
/// [`Dataplane::sandbox_sockets`].
#[derive(Debug)]
pub struct SandboxSockets {
    /// Bound to the service's address.
    pub udp: std::net::UdpSocket,
    /// Bound to the same address and port, listening.
    pub tcp: std::net::TcpListener,
    /// The namespace they live in: a sandbox rebuilt in a new namespace needs new ones.
    pub netns: NetnsId,
}

/// The error of a gateway method on a dataplane that has no gateway.
fn no_gateway() -> crate::Error {
    crate::Error::new(
        crate::ErrorKind::Unsupported,
        "gateway",
        "this dataplane has no gateway bridge",
    )
    .with_hint("use the NetlinkDataplane, or make every network internal")
}
