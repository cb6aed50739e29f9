//! The host's gateway bridge, the role of Docker's `docker_gwbridge`: a bridge in the host
//! namespace holding the first address of a host-local pool, through which a container on a
//! non-internal network reaches the world (its second interface, its default route, masqueraded
//! out of the host) and the world reaches the container's published ports.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_route::link::InfoKind;

use super::conn::NlConn;
use super::errors::nl_failure;
use std::collections::HashMap;

use super::damage::SandboxCheck;
use super::link::{
    LinkChange, LinkView, add_address, bridge_msg, dump_links, get_link, set_link, validate_ifname,
};
use super::netns::{Netns, NetnsId, run_on_thread};
use super::sandbox::{blocking, missing_ports};
use crate::error::{Error, ErrorKind, Result};
use crate::model::MacAddr;

/// The gateway bridge's name unless the host configures another (`docker_gwbridge` is
/// Docker's; this one must not collide with it on a host that runs both).
pub const DEFAULT_GATEWAY_BRIDGE: &str = "ovl_gwbridge";

/// The gateway pool unless the host configures another: Docker's `docker_gwbridge` default.
pub const DEFAULT_GATEWAY_POOL: &str = "172.18.0.0/16";

/// MTU of the gateway bridge and its ports: traffic through it is not encapsulated.
const GATEWAY_MTU: u32 = 1500;

/// What this host's gateway bridge must look like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySpec {
    /// The bridge's name in the host namespace.
    pub bridge: String,
    /// The host-local pool: the bridge holds its first address, containers get the others.
    pub pool: Ipv4Net,
}

impl GatewaySpec {
    /// The default bridge name with `pool`.
    pub fn new(pool: Ipv4Net) -> GatewaySpec {
        GatewaySpec {
            bridge: DEFAULT_GATEWAY_BRIDGE.to_string(),
            pool: pool.trunc(),
        }
    }

    /// The bridge's own address, which containers route through: the pool's first host.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pool.network()) + 1)
    }

    /// The bridge's MAC, fixed (see [`bridge_msg`]): Docker's scheme for its address.
    fn mac(&self) -> MacAddr {
        MacAddr::from_ipv4(self.gateway())
    }

    /// Checks the spec before any I/O.
    pub(crate) fn validate(&self) -> Result<()> {
        validate_ifname(&self.bridge, "ensure gateway")?;
        if self.pool.prefix_len() > 30 {
            return Err(Error::invalid(
                "ensure gateway",
                format!("gateway pool {} holds no container address", self.pool),
            )
            .with_hint("use a pool of /30 or larger, such as 172.18.0.0/16"));
        }
        Ok(())
    }
}

/// The gateway bridge's index in the host namespace, creating the bridge (up, with the
/// gateway address) when missing.
pub(crate) async fn ensure(
    host: &NlConn,
    host_ns: Option<&Netns>,
    spec: &GatewaySpec,
) -> Result<u32> {
    spec.validate()?;
    let mac = spec.mac();
    let index = match get_link(host, &spec.bridge).await? {
        Some(l) if l.kind == Some(InfoKind::Bridge) => {
            // A bridge made before its MAC was fixed, or changed behind the agent's back.
            if l.mac.as_deref() != Some(&mac.0[..]) {
                let fixed = LinkChange {
                    mac: Some(mac),
                    up: true,
                    ..LinkChange::default()
                };
                set_link(host, l.index, &fixed).await?;
            }
            l.index
        }
        Some(_) => {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                "ensure gateway",
                format!(
                    "{} exists in {} and is not a bridge",
                    spec.bridge,
                    host.label()
                ),
            )
            .with_hint("configure another gateway bridge name, or remove that interface"));
        }
        None => {
            host.add_link(bridge_msg(&spec.bridge, GATEWAY_MTU, mac))
                .await
                .map_err(|e| {
                    nl_failure(
                        e,
                        "ensure gateway",
                        format!("bridge {}", spec.bridge),
                        host.label(),
                    )
                })?;
            existing(host, &spec.bridge).await?
        }
    };
    let gateway = Ipv4Net::new(spec.gateway(), spec.pool.prefix_len())
        .map_err(|e| Error::internal("ensure gateway", e.to_string()))?;
    add_address(host, index, gateway.into()).await?;
    let up = LinkChange {
        up: true,
        ..LinkChange::default()
    };
    set_link(host, index, &up).await?;
    enable_forwarding(host_ns).await?;
    Ok(index)
}

/// The index of the gateway bridge, which must exist.
pub(crate) async fn existing(host: &NlConn, name: &str) -> Result<u32> {
    match get_link(host, name).await? {
        Some(l) => Ok(l.index),
        None => Err(Error::new(
            ErrorKind::NotFound,
            "attach gateway",
            format!(
                "the gateway bridge {name} does not exist in {}",
                host.label()
            ),
        )
        .with_hint("call ensure_gateway first")),
    }
}

/// Turns on IPv4 forwarding in the host namespace: the gateway routes between the bridge and
/// the uplink. (The setting belongs to the namespace of the thread that writes it.)
async fn enable_forwarding(host_ns: Option<&Netns>) -> Result<()> {
    let ns = host_ns.map(Netns::try_clone).transpose()?;
    blocking(move || {
        run_on_thread(move || {
            if let Some(ns) = &ns {
                ns.enter()?;
            }
            const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
            if std::fs::read_to_string(PATH).is_ok_and(|v| v.trim() == "1") {
                return Ok(());
            }
            std::fs::write(PATH, "1").map_err(|e| {
                Error::io("ensure gateway", "cannot turn on IPv4 forwarding", e)
                    .with_hint("run as root (net.ipv4.ip_forward)")
            })
        })
    })
    .await
}

/// Compares the gateway bridge with what it should hold, in one link dump: the bridge (up) and
/// the host end of each container in `attached` on it.
pub(crate) async fn check(
    host: &NlConn,
    spec: &GatewaySpec,
    attached: &[(NetnsId, String)],
) -> Result<SandboxCheck> {
    let links = dump_links(host).await?;
    let by_name: HashMap<&str, &LinkView> = links.iter().map(|l| (l.name.as_str(), l)).collect();
    let bridge = by_name
        .get(spec.bridge.as_str())
        .filter(|l| l.up && l.kind == Some(InfoKind::Bridge))
        .map(|l| l.index);
    let intact = bridge.is_some();
    let detached = missing_ports(&by_name, bridge.unwrap_or(0), attached, intact);
    Ok(SandboxCheck { intact, detached })
}

/// Deletes the gateway bridge; absent is not an error.
pub(crate) async fn remove(host: &NlConn, spec: &GatewaySpec) -> Result<()> {
    match get_link(host, &spec.bridge).await? {
        Some(l) if l.kind == Some(InfoKind::Bridge) => {
            super::link::del_link(host, l.index, &l.name).await
        }
        _ => Ok(()),
    }
}
