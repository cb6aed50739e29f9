//! What the controller reports, in Docker's shapes: `docker network ls` rows and the
//! `docker network inspect` document, so tools written for Docker read them unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::{Endpoint, Network};

/// Docker's option key for the VXLAN id of an overlay network.
pub const VXLANID_OPTION: &str = "com.docker.network.driver.overlay.vxlanid_list";

/// Docker's option key for the MTU of a network.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// One row of `network ls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSummary {
    /// Full 64-hex id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    pub name: String,
    /// Always `overlay`.
    pub driver: String,
    /// Always `global`.
    pub scope: String,
}

impl NetworkSummary {
    /// The row of a network record.
    pub fn of(n: &Network) -> Self {
        NetworkSummary {
            id: n.id.to_string(),
            name: n.name.clone(),
            driver: n.driver.clone(),
            scope: "global".into(),
        }
    }
}

/// `IPAM.Config[]` of inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamConfigEntry {
    /// Subnet in CIDR form.
    pub subnet: String,
    /// Gateway address.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gateway: Option<String>,
    /// Allocation range, when one was given.
    #[serde(rename = "IPRange", skip_serializing_if = "Option::is_none", default)]
    pub ip_range: Option<String>,
    /// Reserved auxiliary addresses.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub auxiliary_addresses: BTreeMap<String, String>,
}

/// `IPAM` of inspect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamInspect {
    /// Always `default`.
    pub driver: String,
    /// One entry per pool.
    pub config: Vec<IpamConfigEntry>,
}

/// One entry of `Containers` in inspect, keyed by container id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    /// Container name.
    pub name: String,
    /// Endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// MAC of the container's interface.
    pub mac_address: String,
    /// `10.0.0.2/24`, or empty.
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: String,
    /// `fd00::2/64`, or empty.
    #[serde(rename = "IPv6Address")]
    pub ipv6_address: String,
    /// The host the container runs on (an addition to Docker's shape).
    pub host: String,
    /// The container's address on its host's gateway bridge (`172.18.0.2/16`), shown by the
    /// host it runs on (an addition: Docker lists it under `docker_gwbridge`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub gateway_address: String,
    /// The ports this endpoint publishes on its host (`2181:2181/tcp`), shown by the host it
    /// runs on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

impl ContainerInspect {
    /// The entry of endpoint `ep`, as its record says (the host-local fields empty).
    pub fn of(ep: &crate::model::Endpoint) -> ContainerInspect {
        ContainerInspect {
            name: ep.name.clone(),
            endpoint_id: ep.id.to_string(),
            mac_address: ep.mac.to_string(),
            ipv4_address: ep.ipv4.map(|a| a.to_string()).unwrap_or_default(),
            ipv6_address: ep.ipv6.map(|a| a.to_string()).unwrap_or_default(),
            host: ep.host.to_string(),
            gateway_address: String::new(),
            ports: Vec::new(),
        }
    }

    /// The entry of attachment `a` of host `host`, the host-local fields (gateway address,
    /// ports) included: what the C, Python and JSON-lines faces answer a connect with.
    pub fn of_attachment(a: &super::Attachment, host: &crate::model::HostId) -> ContainerInspect {
        ContainerInspect {
            name: a.name.clone(),
            endpoint_id: a.endpoint_id.to_string(),
            mac_address: a.mac.to_string(),
            ipv4_address: a.ipv4().map(|x| x.to_string()).unwrap_or_default(),
            ipv6_address: a.ipv6().map(|x| x.to_string()).unwrap_or_default(),
            host: host.to_string(),
            gateway_address: a
                .uplink
                .as_ref()
                .map(|u| u.address.to_string())
                .unwrap_or_default(),
            ports: a.ports.iter().map(ToString::to_string).collect(),
        }
    }
}

/// `docker network inspect NAME`, one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkInspect {
    /// Name.
    pub name: String,
    /// Full id.
    pub id: String,
    /// Always `global`.
    pub scope: String,
    /// Always `overlay`.
    pub driver: String,
    /// Whether IPv6 is on.
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    /// Address pools.
    #[serde(rename = "IPAM")]
    pub ipam: IpamInspect,
    /// No route out of the overlay.
    pub internal: bool,
    /// Containers on every host, by container id.
    pub containers: BTreeMap<String, ContainerInspect>,
    /// Driver options, with the VNI under [`VXLANID_OPTION`].
    pub options: BTreeMap<String, String>,
    /// User labels.
    pub labels: BTreeMap<String, String>,
}

impl NetworkInspect {
    /// Builds the document from a network record and its endpoints on every host.
    pub fn build(n: &Network, endpoints: &[Endpoint]) -> Self {
        let config = n
            .pools
            .iter()
            .map(|p| IpamConfigEntry {
                subnet: p.subnet.to_string(),
                gateway: p.gateway.map(|g| g.to_string()),
                ip_range: p.ip_range.map(|r| r.to_string()),
                auxiliary_addresses: p
                    .aux_addresses
                    .iter()
                    .map(|(k, v)| (k.clone(), v.to_string()))
                    .collect(),
            })
            .collect();
        let containers = endpoints
            .iter()
            .map(|ep| (ep.container_id.clone(), ContainerInspect::of(ep)))
            .collect();
        let mut options = n.options.clone();
        options.insert(VXLANID_OPTION.into(), n.vni.to_string());
        if let Some(mtu) = n.mtu {
            options.insert(MTU_OPTION.into(), mtu.to_string());
        }
        NetworkInspect {
            name: n.name.clone(),
            id: n.id.to_string(),
            scope: "global".into(),
            driver: n.driver.clone(),
            enable_ipv6: n.ipv6,
            ipam: IpamInspect {
                driver: "default".into(),
                config,
            },
            internal: n.internal,
            containers,
            options,
            labels: n.labels.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointId, HostId, MacAddr, NetworkId, PoolConfig, SCHEMA, Vni};

    #[test]
    fn docker_shape() {
        let mut pool = PoolConfig::new("10.0.0.0/24".parse().unwrap());
        pool.gateway = Some("10.0.0.1".parse().unwrap());
        let n = Network {
            schema: SCHEMA,
            id: NetworkId::random(),
            name: "my-net".into(),
            driver: "overlay".into(),
            vni: Vni::new(256).unwrap(),
            pools: vec![pool],
            ipv6: false,
            internal: false,
            labels: BTreeMap::new(),
            options: BTreeMap::new(),
            mtu: None,
            created_ms: 0,
            removing: false,
        };
        let ep = Endpoint {
            schema: SCHEMA,
            id: EndpointId::random(),
            network: n.id,
            container_id: "0d790e0dafd8".into(),
            name: "zookeeper3".into(),
            aliases: vec![],
            ipv4: Some("10.0.0.4/24".parse().unwrap()),
            ipv6: None,
            mac: MacAddr::from_ipv4("10.0.0.4".parse().unwrap()),
            host: HostId::new("host1").unwrap(),
            vtep: "192.0.2.1".parse().unwrap(),
            sticky: false,
            ifname: "eth0".into(),
        };
        let doc =
            serde_json::to_value(NetworkInspect::build(&n, std::slice::from_ref(&ep))).unwrap();
        assert_eq!(doc["Name"], "my-net");
        assert_eq!(doc["Id"], n.id.to_string());
        assert_eq!(doc["Scope"], "global");
        assert_eq!(doc["Driver"], "overlay");
        assert_eq!(doc["IPAM"]["Driver"], "default");
        assert_eq!(doc["IPAM"]["Config"][0]["Subnet"], "10.0.0.0/24");
        assert_eq!(doc["IPAM"]["Config"][0]["Gateway"], "10.0.0.1");
        let c = &doc["Containers"]["0d790e0dafd8"];
        assert_eq!(c["EndpointID"], ep.id.to_string());
        assert_eq!(c["MacAddress"], "02:42:0a:00:00:04");
        assert_eq!(c["IPv4Address"], "10.0.0.4/24");
        assert_eq!(c["IPv6Address"], "");
        assert_eq!(doc["Options"][VXLANID_OPTION], "256");
    }
}
