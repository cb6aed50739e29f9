//! This host's gateway, as its endpoints use it: a container on a non-internal network has one
//! interface on the host's gateway bridge (whichever of its networks made it; the others share
//! it), and the ports its endpoints publish are DNAT to that interface's address.
//!
//! What each endpoint holds of the gateway is in its host-local entry ([`LocalGateway`]): the
//! cluster store never names a host address or port, so no record can open one. The firewall
//! table is made from those entries as a whole, every time one changes.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::Shared;
use super::local::LocalEndpoint;
use crate::dataplane::{AttachSpec, NetnsId, PublishedPort};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{MacAddr, PortMapping};

/// A local endpoint's share of the gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalGateway {
    /// The container's address on the gateway bridge.
    pub(crate) ip: Ipv4Addr,
    /// The container's interface on the gateway bridge.
    pub(crate) ifname: String,
    /// The ports this endpoint publishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) ports: Vec<PortMapping>,
}

/// What [`prepare`] found or made for a new endpoint.
pub(crate) struct Prepared {
    /// The endpoint's share, for its entry.
    pub(crate) gateway: LocalGateway,
    /// Whether the interface was made for this endpoint (and goes if the connect fails).
    pub(crate) made: bool,
}

/// The gateway share of a new endpoint of container `container_id` (namespace `netns`):
/// the interface another of its endpoints already has, or a new one named `ifname` with the
/// pool's first free address. Refuses, before any change, a port another endpoint of this host
/// publishes (AlreadyExists, naming its container).
pub(crate) async fn prepare(
    shared: &Shared,
    container_id: &str,
    netns: &Path,
    ifname: &str,
    ports: &[PortMapping],
) -> Result<Prepared> {
    let clash = shared.local.scan(|mut entries| {
        entries.find_map(|e| {
            let g = e.gateway.as_ref()?;
            ports.iter().find_map(|p| {
                let q = g.ports.iter().find(|q| p.clashes_with(q))?;
                Some(
                    Error::new(
                        ErrorKind::AlreadyExists,
                        "publish port",
                        format!(
                            "port {} is already published on this host by container {:?} ({q})",
                            p.host_port, e.container_id
                        ),
                    )
                    .with_hint("publish another host port, or disconnect that container first"),
                )
            })
        })
    });
    if let Some(e) = clash {
        return Err(e);
    }
    if let Some(g) = shared
        .local
        .of_container(container_id)
        .iter()
        .filter(|e| e.namespace_alive())
        .find_map(|e| e.gateway.as_ref())
    {
        return Ok(Prepared {
            gateway: LocalGateway {
                ip: g.ip,
                ifname: g.ifname.clone(),
                ports: ports.to_vec(),
            },
            made: false,
        });
    }
    let spec = &shared.cfg.gateway;
    let ip = shared
        .local
        .scan(|entries| free_address(spec.pool, spec.gateway(), entries))?;
    let dp = &shared.dataplane;
    dp.ensure_gateway(spec).await?;
    let prefix = spec.pool.prefix_len();
    let attach = AttachSpec {
        netns: netns.to_path_buf(),
        ifname: ifname.to_string(),
        ipv4: Some(
            Ipv4Net::new(ip, prefix).map_err(|e| Error::internal("gateway", e.to_string()))?,
        ),
        ipv6: None,
        mac: Some(MacAddr::from_ipv4(ip)),
        mtu: None,
        handoff: false,
    };
    dp.attach_gateway(spec, &attach).await?;
    Ok(Prepared {
        gateway: LocalGateway {
            ip,
            ifname: ifname.to_string(),
            ports: ports.to_vec(),
        },
        made: true,
    })
}

/// The pool's lowest address that is neither the bridge's, the network's, the broadcast, nor
/// held by one of `entries`.
fn free_address<'a>(
    pool: Ipv4Net,
    gateway: Ipv4Addr,
    entries: impl Iterator<Item = &'a LocalEndpoint>,
) -> Result<Ipv4Addr> {
    let used: BTreeSet<Ipv4Addr> = entries
        .filter_map(|e| e.gateway.as_ref().map(|g| g.ip))
        .chain([gateway])
        .collect();
    pool.hosts().find(|ip| !used.contains(ip)).ok_or_else(|| {
        Error::new(
            ErrorKind::Conflict,
            "attach gateway",
            format!("the gateway pool {pool} has no free address"),
        )
        .with_hint("configure a larger gateway pool")
    })
}

/// Makes the firewall hold exactly the published ports of this host's entries.
pub(crate) async fn publish_all(shared: &Shared) -> Result<()> {
    let ports = shared.local.scan(|entries| {
        let mut used = false;
        let mut ports: Vec<PublishedPort> = Vec::new();
        for g in entries.filter_map(|e| e.gateway.as_ref()) {
            used = true;
            ports.extend(g.ports.iter().map(|p| PublishedPort {
                proto: p.proto,
                host_ip: p.host_ip,
                host_port: p.host_port,
                container_ip: g.ip,
                container_port: p.container_port,
            }));
        }
        used.then_some(ports)
    });
    let Some(ports) = ports else { return Ok(()) };
    shared.dataplane.publish(&shared.cfg.gateway, &ports).await
}

/// Undoes `entry`'s share after the entry was removed: the container's interface when no other
/// endpoint of it uses it, the firewall made again without its ports, and the bridge and table
/// when no endpoint uses the gateway any more.
pub(crate) async fn release(shared: &Shared, entry: &LocalEndpoint) {
    let Some(g) = &entry.gateway else { return };
    let spec = &shared.cfg.gateway;
    let dp = &shared.dataplane;
    let shared_by_another = shared
        .local
        .of_container(&entry.container_id)
        .iter()
        .any(|e| e.gateway.is_some());
    if !shared_by_another
        && entry.namespace_alive()
        && let Err(e) = dp.detach_gateway(spec, &entry.netns, &g.ifname).await
    {
        tracing::warn!(container = %entry.container_id, error = %e, "could not remove the gateway interface");
    }
    settle(shared).await;
}

/// Makes the firewall match the entries, or removes the table and the bridge when no entry
/// uses the gateway any more.
pub(crate) async fn settle(shared: &Shared) {
    let used = shared
        .local
        .scan(|mut entries| entries.any(|e| e.gateway.is_some()));
    let result = if used {
        publish_all(shared).await
    } else {
        shared.dataplane.remove_gateway(&shared.cfg.gateway).await
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, "could not update the gateway after an endpoint went; the next sweep retries");
    }
}

/// Puts the gateway back as the entries say after a restart: the bridge, each living
/// container's interface, the firewall.
pub(crate) async fn restore(shared: &Shared) {
    repair(shared, false).await;
}

/// Puts back what the kernel lost of the gateway (found by one link dump) and makes the
/// firewall table again.
pub(crate) async fn heal(shared: &Shared) {
    repair(shared, true).await;
}

/// The living containers with a gateway interface, one entry each.
fn users(entries: &[LocalEndpoint]) -> Vec<&LocalEndpoint> {
    let mut seen = BTreeSet::new();
    entries
        .iter()
        .filter(|e| e.gateway.is_some() && e.namespace_alive())
        .filter(|e| seen.insert(e.container_id.clone()))
        .collect()
}

/// Re-makes the gateway's missing parts: only what a check finds missing when `check`,
/// everything (idempotently) otherwise.
async fn repair(shared: &Shared, check: bool) {
    let entries = shared.local.all();
    if entries.iter().all(|e| e.gateway.is_none()) {
        return;
    }
    let spec = &shared.cfg.gateway;
    let dp = &shared.dataplane;
    let users = users(&entries);
    let mut todo: Vec<usize> = (0..users.len()).collect();
    let mut intact = false;
    if check {
        let attached: Vec<(NetnsId, String)> = users
            .iter()
            .filter_map(|e| {
                let g = e.gateway.as_ref()?;
                Some((
                    NetnsId {
                        dev: e.netns_identity.dev,
                        ino: e.netns_identity.ino,
                    },
                    g.ifname.clone(),
                ))
            })
            .collect();
        match dp.check_gateway(spec, &attached).await {
            Ok(c) => {
                intact = c.intact;
                todo = c.detached;
            }
            Err(e) => tracing::warn!(error = %e, "cannot check the gateway; restoring it"),
        }
    }
    if !intact && let Err(e) = dp.ensure_gateway(spec).await {
        tracing::warn!(error = %e, "cannot restore the gateway bridge");
        return;
    }
    for e in todo.into_iter().filter_map(|i| users.get(i)) {
        let Some(g) = &e.gateway else { continue };
        let attach = AttachSpec {
            netns: e.netns.clone(),
            ifname: g.ifname.clone(),
            ipv4: Ipv4Net::new(g.ip, spec.pool.prefix_len()).ok(),
            ipv6: None,
            mac: Some(MacAddr::from_ipv4(g.ip)),
            mtu: None,
            handoff: false,
        };
        match dp.attach_gateway(spec, &attach).await {
            Ok(a) if a.created => {
                tracing::info!(container = %e.container_id, "gateway interface restored")
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(container = %e.container_id, error = %err, "cannot restore the gateway interface")
            }
        }
    }
    if let Err(e) = publish_all(shared).await {
        tracing::warn!(error = %e, "cannot restore the published ports");
    }
}
