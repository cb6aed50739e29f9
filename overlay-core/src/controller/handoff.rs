//! Endpoints for runtimes that place the interface in the container themselves, as Docker
//! does with its remote network drivers: the runtime asks the IPAM for the addresses first
//! ([`Controller::request_address`]), then for an endpoint with those addresses
//! ([`Controller::connect_handoff`]), whose veth end waits in this host's namespace under a
//! name of ours until the runtime moves it into the container, names it and configures it.
//! The addresses stay the runtime's: it gives them back with [`Controller::release_address`]
//! after disconnecting.
//!
//! The owner of a runtime's addresses is derived from the network and the endpoint's MAC
//! (which Docker passes to both address requests of an endpoint and to its creation), so an
//! endpoint's IPv4 and IPv6 addresses have one owner, and that owner becomes the endpoint's
//! id: the collector then keeps them exactly as long as the endpoint exists, and frees them
//! (after its grace) when the runtime never creates the endpoint.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::Controller;
use super::spec::{ContainerSpec, NetnsRef};
use crate::error::{Error, ErrorKind, Result};
use crate::ipam::{AddressRequest, Family, Want};
use crate::model::{EndpointId, MacAddr, Network, NetworkId, Record, keys};
use crate::store::TxnOp;

/// How a handed-off connect differs from a plain one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    /// The owner holding the addresses: the endpoint's id.
    pub(super) owner: EndpointId,
    /// The MAC the runtime chose, if it did.
    pub(super) mac: Option<MacAddr>,
}

/// An address a runtime asks for ([`Controller::request_address`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressWant {
    /// Any free address of this family.
    Any(Family),
    /// Exactly this one (Docker's `--ip`).
    Specific(IpAddr),
}

/// An address held for a runtime's endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldAddress {
    /// The address with its subnet's prefix, `10.0.9.2/24`.
    pub address: IpNet,
    /// Its subnet's gateway, if the network has one there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// An endpoint to connect for a runtime that moves its interface itself:
/// `HandoffSpec::new(id, name)`, then the setters for the rest.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffSpec {
    /// The runtime's id of the attachment (Docker's endpoint id), unique on the network.
    pub id: String,
    /// The container's name on the network (`name` and `name.network` resolve to it).
    pub name: String,
    /// Its further names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Its IPv4 address, held through [`Controller::request_address`].
    #[serde(default)]
    pub ipv4: Option<Ipv4Addr>,
    /// Its IPv6 address, held the same way.
    #[serde(default)]
    pub ipv6: Option<Ipv6Addr>,
    /// The MAC the runtime gave the addresses' requests, if any; default: derived from the
    /// IPv4 address.
    #[serde(default)]
    pub mac: Option<MacAddr>,
    /// Who makes the attachment (as [`ContainerSpec::owner`]).
    #[serde(default)]
    pub owner: Option<String>,
}

impl HandoffSpec {
    /// Runtime endpoint `id`, named `name` on the network, with no alias, address, MAC or
    /// owner yet.
    pub fn new(id: impl Into<String>, name: impl Into<String>) -> HandoffSpec {
        HandoffSpec {
            id: id.into(),
            name: name.into(),
            aliases: Vec::new(),
            ipv4: None,
            ipv6: None,
            mac: None,
            owner: None,
        }
    }

    /// Its further names.
    pub fn aliases(mut self, aliases: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.aliases = aliases.into_iter().map(Into::into).collect();
        self
    }

    /// Its IPv4 address (or none), held through [`Controller::request_address`].
    pub fn ipv4(mut self, ip: impl Into<Option<Ipv4Addr>>) -> Self {
        self.ipv4 = ip.into();
        self
    }

    /// Its IPv6 address (or none), held the same way.
    pub fn ipv6(mut self, ip: impl Into<Option<Ipv6Addr>>) -> Self {
        self.ipv6 = ip.into();
        self
    }

    /// The MAC the runtime gave the addresses' requests (or none: derived from the IPv4
    /// address).
    pub fn mac(mut self, mac: impl Into<Option<MacAddr>>) -> Self {
        self.mac = mac.into();
        self
    }

    /// Who makes the attachment (as [`ContainerSpec::owner`]).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }
}

/// What [`Controller::connect_handoff`] made.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Handoff {
    /// The endpoint's id.
    pub endpoint_id: EndpointId,
    /// The name of the interface in this host's namespace, for the runtime to move.
    pub ifname: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its addresses, with their subnets' prefixes.
    pub addresses: Vec<IpNet>,
}

/// The name a handed-off interface waits under in the host's namespace: one per endpoint, 15
/// characters (the kernel's limit), and never an `ethN` the host itself may have.
fn waiting_name(id: &EndpointId) -> String {
    format!("ovl{}", id.short())
}

/// The owner of a runtime's addresses for the endpoint with `mac` on `network`; a fresh one
/// when the runtime gives no MAC.
pub fn address_owner(network: &NetworkId, mac: Option<MacAddr>) -> EndpointId {
    let Some(mac) = mac else {
        return EndpointId::random();
    };
    // Four FNV-1a lanes over (lane, network, MAC): stable across hosts and releases.
    let mut out = [0u8; 32];
    for (lane, chunk) in out.chunks_mut(8).enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let bytes = std::iter::once(lane as u8)
            .chain(network.as_bytes().iter().copied())
            .chain(mac.0);
        for b in bytes {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    hex::encode(out)
        .parse()
        .unwrap_or_else(|_| EndpointId::random())
}

/// The addresses of handed-off connect `c` with their subnets' prefixes.
pub(super) fn held_addresses(
    net: &Network,
    c: &ContainerSpec,
) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>)> {
    let prefix = |ip: IpAddr| {
        net.pools
            .iter()
            .find(|p| p.subnet.contains(&ip))
            .map(|p| p.subnet.prefix_len())
            .ok_or_else(|| {
                Error::invalid(
                    "connect",
                    format!("{ip} is in no subnet of network {:?}", net.name),
                )
                .with_hint("ask this network's IPAM for the address first")
            })
    };
    let v4 = c
        .ipv4
        .map(|ip| prefix(ip.into()).and_then(|p| Ipv4Net::new(ip, p).map_err(|e| bad_prefix(&e))))
        .transpose()?;
    let v6 = c
        .ipv6
        .map(|ip| prefix(ip.into()).and_then(|p| Ipv6Net::new(ip, p).map_err(|e| bad_prefix(&e))))
        .transpose()?;
    Ok((v4, v6))
}

fn bad_prefix(e: &ipnet::PrefixLenError) -> Error {
    Error::internal("connect", e.to_string())
}

impl Controller {
    /// A default subnet of `family` no network uses now (from the controller's default pools),
    /// for a runtime whose IPAM asks for a pool before it creates the network. Nothing is
    /// claimed until a network is created with it.
    pub async fn free_subnet(&self, family: Family) -> Result<IpNet> {
        self.inner.ipam.suggest_subnet(family).await
    }

    /// Holds an address of `network` for a runtime's endpoint whose MAC is `mac` (see the
    /// module's text on owners). Idempotent for one owner and family: asked again, the same
    /// address comes back.
    pub async fn request_address(
        &self,
        network: &str,
        want: AddressWant,
        mac: Option<MacAddr>,
    ) -> Result<HeldAddress> {
        let (net, _) = self.lookup(network).await?;
        let owner = address_owner(&net.id, mac);
        let request = AddressRequest {
            want: match want {
                AddressWant::Any(f) => Want::Any(f),
                AddressWant::Specific(ip) => Want::Specific(ip),
            },
            owner: owner.to_string(),
            sticky: None,
        };
        let a = self.inner.ipam.request(&net.id, &request).await?;
        Ok(HeldAddress {
            address: a.address,
            gateway: a.gateway,
        })
    }

    /// Gives back an address [`request_address`](Self::request_address) handed out. An
    /// address whose owner still has an endpoint is left alone (its endpoint is disconnected
    /// first); one nobody holds is not an error, so a retried release succeeds.
    pub async fn release_address(&self, network: &str, ip: IpAddr) -> Result<()> {
        let (net, _) = self.lookup(network).await?;
        let holdings = self.inner.ipam.allocations(&net.id).await?;
        let Some(h) = holdings.iter().find(|h| h.ip == ip) else {
            return Ok(());
        };
        let listing = self
            .inner
            .store
            .list(&crate::model::keys::endpoints(&net.id))
            .await?;
        let in_use = super::networks::decode_all::<crate::model::Endpoint>(&listing.kvs)
            .iter()
            .any(|(ep, _)| ep.id.to_string() == h.owner);
        if in_use {
            return Err(Error::new(
                ErrorKind::Conflict,
                "release address",
                format!("{ip} belongs to an endpoint of network {:?}", net.name),
            )
            .with_hint("disconnect the endpoint before releasing its address"));
        }
        self.inner.ipam.release(&net.id, ip, &h.owner).await?;
        Ok(())
    }

    /// Connects an endpoint whose interface the runtime moves into the container itself: the
    /// addresses of `spec` must be held for it ([`request_address`](Self::request_address)
    /// with the same MAC), and the answer names the interface waiting in this host's
    /// namespace, down and without addresses. No gateway interface is made: the runtime
    /// gives the container its way out. [`disconnect`](Self::disconnect) by `spec.id`
    /// removes it, wherever the runtime moved it, and leaves the addresses held.
    pub async fn connect_handoff(&self, network: &str, spec: &HandoffSpec) -> Result<Handoff> {
        let op = "connect";
        let (net, _) = self.lookup(network).await?;
        let Some(first) = spec.ipv4.map(IpAddr::V4).or(spec.ipv6.map(IpAddr::V6)) else {
            return Err(Error::invalid(op, "the endpoint has no address")
                .with_hint("request an address from the network's IPAM first"));
        };
        let holdings = self.inner.ipam.allocations(&net.id).await?;
        let owner_of = |ip: IpAddr| holdings.iter().find(|h| h.ip == ip).map(|h| &h.owner);
        let Some(owner) = owner_of(first) else {
            return Err(Error::new(
                ErrorKind::NotFound,
                op,
                format!("{first} is not held on network {:?}", net.name),
            )
            .with_hint("request the address from the network's IPAM first"));
        };
        if let Some(v6) = spec.ipv6.map(IpAddr::V6)
            && owner_of(v6) != Some(owner)
        {
            return Err(Error::invalid(
                op,
                format!("{first} and {v6} were not requested for one endpoint"),
            )
            .with_hint("request both addresses with the endpoint's MAC"));
        }
        let owner: EndpointId = owner.parse().map_err(|_| {
            Error::new(
                ErrorKind::Conflict,
                op,
                format!("{first} is held by a container connected directly"),
            )
            .with_hint("request another address")
        })?;
        let mut c = ContainerSpec::new(spec.id.clone(), spec.name.clone(), self.host_netns_ref());
        c.aliases = spec.aliases.clone();
        c.ipv4 = spec.ipv4;
        c.ipv6 = spec.ipv6;
        c.sticky = false;
        c.ifname = Some(waiting_name(&owner));
        c.owner = spec.owner.clone();
        let plan = Plan {
            owner,
            mac: spec.mac,
        };
        let (this, network) = (self.clone(), net.id.to_string());
        let made = self
            .detached(op, async move {
                this.connect_now(&network, &c, Some(plan)).await
            })
            .await?;
        Ok(Handoff {
            endpoint_id: made.endpoint_id,
            ifname: made.ifname,
            mac: made.mac,
            addresses: made.addresses.into_iter().map(|a| a.address).collect(),
        })
    }

    /// Gives a container of this host on `network` its name and aliases there, for a runtime
    /// that learns them only after connecting (Docker tells its drivers neither): one
    /// transaction moves the name's uniqueness key and updates the record, so every host's
    /// resolver and hosts files follow. The same name and aliases again change nothing.
    pub async fn rename(
        &self,
        network: &str,
        container_id: &str,
        name: &str,
        aliases: &[String],
    ) -> Result<()> {
        let op = "rename";
        let (net, _) = self.lookup(network).await?;
        let store = &self.inner.store;
        let super::endpoints::Connected {
            key: ekey,
            version,
            mut ep,
        } = self.connected(op, &net, container_id).await?;
        let id = ep.id;
        if ep.name == name && ep.aliases == aliases {
            return Ok(());
        }
        let mut check = ContainerSpec::new(container_id, name, self.host_netns_ref());
        check.aliases = aliases.to_vec();
        check.validate().map_err(|e| e.with_op(op))?;
        let own = id.to_string().into_bytes();
        let mut ops = Vec::new();
        if ep.name != name {
            let old = keys::endpoint_name(&net.id, &ep.name);
            if let Some(kv) = store.get(&old).await?
                && kv.value == own
            {
                ops.push(TxnOp::DeleteIf {
                    key: old,
                    version: kv.version,
                });
            }
            ops.push(TxnOp::Create {
                key: keys::endpoint_name(&net.id, name),
                value: own,
            });
        }
        ep.name = name.to_string();
        ep.aliases = aliases.to_vec();
        ops.push(TxnOp::Update {
            key: ekey,
            value: ep.encode(),
            version,
        });
        store.txn(&ops).await.map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => Error::new(
                ErrorKind::AlreadyExists,
                op,
                format!(
                    "another container named {name:?} is on network {:?}",
                    net.name
                ),
            )
            .with_hint("container names must be unique on a network; pick another name"),
            _ => e.with_op(op),
        })?;
        Ok(())
    }

    /// This host's namespace as a path that stays valid for the agent's life and names the
    /// same namespace after a restart in it.
    fn host_netns_ref(&self) -> NetnsRef {
        NetnsRef::Path(
            self.inner
                .opts
                .host_netns
                .clone()
                .unwrap_or_else(|| PathBuf::from("/proc/self/ns/net")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_mac_one_owner_per_network() {
        let (a, b) = (NetworkId::random(), NetworkId::random());
        let mac: MacAddr = "02:42:0a:00:09:02".parse().unwrap();
        let other: MacAddr = "02:42:0a:00:09:03".parse().unwrap();
        assert_eq!(address_owner(&a, Some(mac)), address_owner(&a, Some(mac)));
        assert_ne!(address_owner(&a, Some(mac)), address_owner(&b, Some(mac)));
        assert_ne!(address_owner(&a, Some(mac)), address_owner(&a, Some(other)));
        assert_ne!(address_owner(&a, None), address_owner(&a, None));
    }

    #[test]
    fn waiting_names_fit_the_kernel() {
        let n = waiting_name(&EndpointId::random());
        assert_eq!(n.len(), 15);
        assert!(n.starts_with("ovl"));
    }
}
