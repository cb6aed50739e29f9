//! Attachments as a runtime plugin sees them: one call that finds (or creates) the network and
//! connects the container, answering with everything the runtime reports to its own caller
//! (interfaces, addresses, gateways, routes, resolver), and the list of this host's
//! attachments that lets the plugin check and collect its own.

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::Controller;
use super::spec::{ContainerSpec, NetworkOptions};
use crate::agent::AgentConfig;
use crate::agent::local::LocalEndpoint;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{Endpoint, EndpointId, MacAddr, Network, NetworkId, PortMapping};

/// One address of an attachment, with its network's gateway in the same subnet.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedAddress {
    /// The address with its subnet's prefix, `10.0.9.2/24`.
    pub address: IpNet,
    /// The subnet's gateway, where the network's resolver answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<IpAddr>,
}

/// The container's interface on the host's gateway bridge: its way out of the overlay.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Uplink {
    /// The interface's name in the container (`eth1`).
    pub ifname: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its address with the pool's prefix, `172.18.0.2/16`.
    pub address: IpNet,
    /// The bridge's address: the container's default route.
    pub gateway: IpAddr,
}

/// One container's attachment to one network on this host: what
/// [`connect`](Controller::connect) and [`attach`](Controller::attach) answer and
/// [`attachments`](Controller::attachments) lists. Docker's strings for the same endpoint
/// (`"10.0.9.2/24"`) are in [`inspect`](Controller::inspect)'s answer.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// The network's name.
    pub network: String,
    /// The network's id.
    pub network_id: NetworkId,
    /// The embedder's container id.
    pub container_id: String,
    /// The container's name on the network.
    pub name: String,
    /// The endpoint's id.
    pub endpoint_id: EndpointId,
    /// The container's namespace file, as the caller that connected it gave it.
    pub netns: PathBuf,
    /// The overlay interface in the container.
    pub ifname: String,
    /// Its MAC.
    pub mac: MacAddr,
    /// Its addresses.
    pub addresses: Vec<AttachedAddress>,
    /// The interface on the gateway bridge; none on an internal network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplink: Option<Uplink>,
    /// Where the network's resolver answers for this container; none when this host runs no
    /// resolver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<IpAddr>,
    /// The ports published to it (`2181:2181/tcp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortMapping>,
    /// Who made it ([`ContainerSpec::owner`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl Attachment {
    /// The IPv4 address with its subnet's prefix (`10.0.9.2/24`), if the endpoint has one.
    pub fn ipv4(&self) -> Option<Ipv4Net> {
        self.addresses.iter().find_map(|a| match a.address {
            IpNet::V4(v4) => Some(v4),
            IpNet::V6(_) => None,
        })
    }

    /// The IPv6 address with its subnet's prefix, if the endpoint has one.
    pub fn ipv6(&self) -> Option<Ipv6Net> {
        self.addresses.iter().find_map(|a| match a.address {
            IpNet::V6(v6) => Some(v6),
            IpNet::V4(_) => None,
        })
    }
}

impl Controller {
    /// Connects container `c` to `network`, creating the network first with `create` if it
    /// does not exist (on any host: a network another host created at the same moment is
    /// used, not duplicated). When the network exists, what `create` asks for must hold: a
    /// subnet, gateway, VNI or MTU it gives that differs is an InvalidArgument naming both
    /// values, and nothing is changed (what it leaves out, or gives only as a flag such as
    /// `internal`, is not compared). The answer says everything the container got.
    pub async fn attach(
        &self,
        network: &str,
        create: Option<&NetworkOptions>,
        c: &ContainerSpec,
    ) -> Result<Attachment> {
        let op = "attach";
        c.validate()?;
        let net = match create {
            Some(opts) => self.find_or_create(network, opts).await?,
            None => self.lookup(network).await?.0,
        };
        let (this, network, c) = (self.clone(), net.id.to_string(), c.clone());
        self.detached(
            op,
            async move { this.connect_now(&network, &c, None).await },
        )
        .await
    }

    /// Finds network `name`, or creates it with `opts` if it does not exist (on any host: a
    /// network another host created at the same moment is used, not duplicated). When it
    /// exists, what `opts` asks for must hold, as for [`attach`](Self::attach): a subnet,
    /// gateway, VNI or MTU that differs is an InvalidArgument naming both values, and nothing
    /// is changed.
    pub async fn ensure_network(
        &self,
        name: &str,
        opts: &NetworkOptions,
    ) -> Result<super::NetworkInspect> {
        let net = self.find_or_create(name, opts).await?;
        self.inspect(&net.id.to_string()).await
    }

    async fn find_or_create(&self, network: &str, opts: &NetworkOptions) -> Result<Network> {
        match self.lookup(network).await {
            Ok((net, _)) => {
                agrees(&net, opts)?;
                Ok(net)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {
                match self.create_network(network, opts).await {
                    Ok(_) => {}
                    // Made elsewhere meanwhile: it must be what this caller asked for too.
                    Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
                let (net, _) = self.lookup(network).await?;
                agrees(&net, opts)?;
                Ok(net)
            }
            Err(e) => Err(e),
        }
    }

    /// This host's attachments, of every network or of `network` (name, id or id prefix),
    /// sorted by network and container id.
    pub async fn attachments(&self, network: Option<&str>) -> Result<Vec<Attachment>> {
        let only = match network {
            Some(n) => Some(self.lookup(n).await?.0.id),
            None => None,
        };
        let agent = self.agent()?;
        let records = agent.local_endpoints();
        let mut nets: Vec<Network> = Vec::new();
        let mut out = Vec::new();
        for entry in agent.local().all() {
            if only.is_some_and(|id| id != entry.network) {
                continue;
            }
            // An entry without its record is a connect in flight or a leftover that the
            // agent's own recovery undoes: not an attachment yet.
            let Some(record) = records.iter().find(|r| r.id == entry.endpoint) else {
                continue;
            };
            let net = match nets.iter().find(|n| n.id == entry.network) {
                Some(n) => n.clone(),
                None => match self.lookup(&entry.network.to_string()).await {
                    Ok((n, _)) => {
                        nets.push(n.clone());
                        n
                    }
                    // Removed meanwhile: its endpoints are going too.
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                },
            };
            out.push(attachment(agent.config(), &net, &entry, record));
        }
        out.sort_by(|a, b| (&a.network, &a.container_id).cmp(&(&b.network, &b.container_id)));
        Ok(out)
    }
}

/// What this host knows of its endpoint `ep` on `net` (its entry `entry`), as an attachment.
pub(super) fn attachment(
    cfg: &AgentConfig,
    net: &Network,
    entry: &LocalEndpoint,
    ep: &Endpoint,
) -> Attachment {
    let addresses = ep
        .ipv4
        .map(IpNet::V4)
        .into_iter()
        .chain(ep.ipv6.map(IpNet::V6))
        .map(|address| AttachedAddress {
            address,
            gateway: net
                .pools
                .iter()
                .find(|p| p.subnet.contains(&address.addr()))
                .and_then(|p| p.gateway),
        })
        .collect();
    let uplink = entry.gateway.as_ref().map(|g| Uplink {
        ifname: g.ifname.clone(),
        mac: MacAddr::from_ipv4(g.ip),
        address: IpNet::V4(
            ipnet::Ipv4Net::new(g.ip, cfg.gateway.pool.prefix_len())
                .unwrap_or_else(|_| g.ip.into()),
        ),
        gateway: cfg.gateway.gateway().into(),
    });
    let resolver = cfg
        .dns
        .as_ref()
        .and_then(|_| crate::agent::dns::resolver_address(net));
    Attachment {
        network: net.name.clone(),
        network_id: net.id,
        container_id: entry.container_id.clone(),
        name: ep.name.clone(),
        endpoint_id: ep.id,
        netns: entry.netns.clone(),
        ifname: entry.ifname.clone(),
        mac: ep.mac,
        addresses,
        uplink,
        resolver,
        ports: entry
            .gateway
            .iter()
            .flat_map(|g| g.ports.iter().copied())
            .collect(),
        owner: entry.owner.clone(),
    }
}

/// Whether existing network `net` is what `opts` asks for; if not, an InvalidArgument that
/// names the field and both values.
fn agrees(net: &Network, opts: &NetworkOptions) -> Result<()> {
    let differs = |field: &str, asked: String, has: String| {
        Err(Error::invalid(
            "attach",
            format!(
                "network {:?} exists with {field} {has}, and this configuration asks for {asked}",
                net.name
            ),
        )
        .with_hint("make the configuration agree with the network, or use another network name"))
    };
    for want in &opts.subnets {
        let Some(pool) = net.pools.iter().find(|p| p.subnet == want.subnet) else {
            let has: Vec<String> = net.pools.iter().map(|p| p.subnet.to_string()).collect();
            return differs("subnet", want.subnet.to_string(), has.join(", "));
        };
        if let Some(gw) = want.gateway
            && pool.gateway != Some(gw)
        {
            let has = pool.gateway.map_or("none".into(), |g| g.to_string());
            return differs("gateway", gw.to_string(), has);
        }
    }
    if let Some(vni) = opts.vni
        && vni != net.vni.get()
    {
        return differs("vni", vni.to_string(), net.vni.get().to_string());
    }
    if opts.mtu.is_some() && opts.mtu != net.mtu {
        let has = net.mtu.map_or("the default".into(), |m| m.to_string());
        return differs("mtu", opts.mtu.unwrap_or_default().to_string(), has);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::spec::SubnetOptions;

    fn network() -> Network {
        serde_json::from_value(serde_json::json!({
            "schema": 1, "id": "a".repeat(64), "name": "my-net", "driver": "overlay",
            "vni": 4242,
            "pools": [{"subnet": "10.0.9.0/24", "gateway": "10.0.9.1"}],
            "created_ms": 0
        }))
        .unwrap()
    }

    #[test]
    fn an_existing_network_must_be_what_the_config_asks_for() {
        let net = network();
        let mut opts = NetworkOptions::default();
        assert!(
            agrees(&net, &opts).is_ok(),
            "nothing asked, nothing to differ"
        );
        opts.subnets = vec![SubnetOptions {
            subnet: "10.0.9.0/24".parse().unwrap(),
            gateway: Some("10.0.9.1".parse().unwrap()),
            ip_range: None,
            aux_addresses: Default::default(),
        }];
        opts.vni = Some(4242);
        assert!(agrees(&net, &opts).is_ok());
        opts.vni = Some(7);
        let e = agrees(&net, &opts).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.context().contains("vni 4242"), "{e}");
        assert!(e.context().contains("asks for 7"), "{e}");
        opts.vni = None;
        opts.subnets[0].subnet = "10.0.8.0/24".parse().unwrap();
        let e = agrees(&net, &opts).unwrap_err();
        assert!(e.context().contains("subnet 10.0.9.0/24"), "{e}");
        opts.subnets.clear();
        opts.mtu = Some(1400);
        assert!(agrees(&net, &opts).unwrap_err().context().contains("mtu"));
    }
}
