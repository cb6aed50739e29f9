//! The remote driver protocol's messages, as libnetwork (Docker 20.10) sends and reads them:
//! one JSON object per `POST /<Interface>.<Method>`, field names in Go's capitals. Fields a
//! driver does not use are not decoded, and unknown fields are ignored, as Docker's own
//! drivers do, so that a newer engine's additions do not break an older plugin.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `Plugin.Activate`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Activate {
    /// The plugin kinds served here.
    pub implements: Vec<&'static str>,
}

/// `NetworkDriver.GetCapabilities`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Capabilities {
    /// `global` (networks live in the engines' cluster store) or `local`.
    pub scope: &'static str,
    /// Where the network's connectivity reaches: always `global`, across hosts.
    pub connectivity_scope: &'static str,
}

/// One pool of `CreateNetwork`: `{"AddressSpace", "Pool", "Gateway", "AuxAddresses"}`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamData {
    /// The IPAM's address space the pool came from.
    pub address_space: String,
    /// The subnet, `10.0.9.0/24`.
    pub pool: String,
    /// The gateway with the subnet's prefix, `10.0.9.1/24`.
    pub gateway: String,
    /// Named addresses (`--aux-address`), each with the prefix.
    pub aux_addresses: Option<BTreeMap<String, String>>,
}

/// `NetworkDriver.CreateNetwork`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateNetwork {
    /// The engine's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// `com.docker.network.generic` (the `-o` options), `com.docker.network.enable_ipv6`,
    /// `com.docker.network.internal`.
    #[serde(default)]
    pub options: BTreeMap<String, Value>,
    /// The IPv4 pools.
    #[serde(default, rename = "IPv4Data")]
    pub ipv4_data: Option<Vec<IpamData>>,
    /// The IPv6 pools.
    #[serde(default, rename = "IPv6Data")]
    pub ipv6_data: Option<Vec<IpamData>>,
}

/// A request naming a network only (`DeleteNetwork`).
#[derive(Debug, Clone, Deserialize)]
pub struct NetworkRef {
    /// The engine's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

/// A request naming an endpoint (`DeleteEndpoint`, `EndpointOperInfo`, `Leave`,
/// `ProgramExternalConnectivity`, `RevokeExternalConnectivity`).
#[derive(Debug, Clone, Deserialize)]
pub struct EndpointRef {
    /// The engine's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The engine's endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// The interface of `CreateEndpoint`, asked and answered.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointInterface {
    /// IPv4 address with prefix, or empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// IPv6 address with prefix, or empty.
    #[serde(rename = "AddressIPv6", skip_serializing_if = "String::is_empty")]
    pub address_ipv6: String,
    /// MAC, or empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

/// `NetworkDriver.CreateEndpoint`.
#[derive(Debug, Clone, Deserialize)]
pub struct CreateEndpoint {
    /// The engine's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The engine's endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    /// The addresses the IPAM handed out, and a MAC if the user gave one.
    #[serde(rename = "Interface", default)]
    pub interface: Option<EndpointInterface>,
}

/// `NetworkDriver.CreateEndpoint`'s answer: only what the engine did not give.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateEndpointReply {
    /// The MAC, when the engine gave none.
    pub interface: Option<EndpointInterface>,
}

/// `NetworkDriver.Join`.
#[derive(Debug, Clone, Deserialize)]
pub struct Join {
    /// The engine's network id.
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    /// The engine's endpoint id.
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
}

/// The interface the engine moves into the container: `SrcName` here, renamed
/// `DstPrefix` + a number there.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct InterfaceName {
    /// Its name in the host's namespace.
    pub src_name: String,
    /// Its name's prefix in the container (`eth`).
    pub dst_prefix: &'static str,
}

/// `NetworkDriver.Join`'s answer. No `Gateway`: the engine then gives the container its way
/// out itself (`eth1` on `docker_gwbridge`, with its NAT and published ports), as Docker's
/// own overlay does.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct JoinReply {
    /// The interface to move.
    pub interface_name: InterfaceName,
    /// Whether the engine should leave the container without a gateway network: set on
    /// internal networks.
    pub disable_gateway_service: bool,
}

/// `NetworkDriver.EndpointOperInfo`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct OperInfo {
    /// Free-form facts `docker network inspect` does not show but `docker inspect` of the
    /// endpoint's driver info does.
    pub value: BTreeMap<String, String>,
}

/// `IpamDriver.GetCapabilities`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamCapabilities {
    /// Ask the engine for the endpoint's MAC with each address request: it ties an
    /// endpoint's IPv4 and IPv6 addresses to one owner.
    #[serde(rename = "RequiresMACAddress")]
    pub requires_mac_address: bool,
}

/// `IpamDriver.GetDefaultAddressSpaces`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressSpaces {
    /// For local-scope networks.
    pub local_default_address_space: &'static str,
    /// For global-scope networks.
    pub global_default_address_space: &'static str,
}

/// `IpamDriver.RequestPool`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestPool {
    /// The address space asked for.
    pub address_space: String,
    /// `--subnet`, or empty.
    pub pool: String,
    /// `--ip-range`, or empty.
    pub sub_pool: String,
    /// `--ipam-opt`.
    pub options: Option<BTreeMap<String, String>>,
    /// Whether it is the IPv6 pool.
    #[serde(rename = "V6")]
    pub v6: bool,
}

/// `IpamDriver.RequestPool`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct PoolReply {
    /// The id the engine passes back with each address request, on every host.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The subnet.
    pub pool: String,
    /// Nothing more.
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleasePool`.
#[derive(Debug, Clone, Deserialize)]
pub struct ReleasePool {
    /// The pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

/// `IpamDriver.RequestAddress`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct RequestAddress {
    /// The pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// A specific address (`--ip`, `--gateway`), or empty.
    pub address: String,
    /// `RequestAddressType` (the gateway's), `com.docker.network.endpoint.macaddress`.
    pub options: Option<BTreeMap<String, String>>,
}

/// `IpamDriver.RequestAddress`'s answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AddressReply {
    /// The address with the pool's prefix.
    pub address: String,
    /// Nothing more.
    pub data: BTreeMap<String, String>,
}

/// `IpamDriver.ReleaseAddress`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ReleaseAddress {
    /// The pool.
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    /// The address, without prefix.
    pub address: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_docker_20_10_sends() {
        // Bodies as logged from docker.io 20.10.24 (see the crate's tests).
        let c: CreateNetwork = serde_json::from_str(
            r#"{"NetworkID":"8618aaf2","Options":{"com.docker.network.enable_ipv6":true,
            "com.docker.network.generic":{"mtu":"1400","vni":"4242"}},
            "IPv4Data":[{"AddressSpace":"g","Gateway":"10.0.9.1/24","Pool":"10.0.9.0/24"}],
            "IPv6Data":[]}"#,
        )
        .unwrap();
        assert_eq!(c.ipv4_data.unwrap()[0].gateway, "10.0.9.1/24");
        let e: CreateEndpoint = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.0.9.129/24",
            "AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.portmap":[]}}"#,
        )
        .unwrap();
        assert_eq!(e.interface.unwrap().address, "10.0.9.129/24");
        let r: RequestAddress =
            serde_json::from_str(r#"{"PoolID":"p","Address":"","Options":null}"#).unwrap();
        assert!(r.options.is_none());
        let reply = serde_json::to_value(JoinReply {
            interface_name: InterfaceName {
                src_name: "ovl0123".into(),
                dst_prefix: "eth",
            },
            disable_gateway_service: false,
        })
        .unwrap();
        assert_eq!(reply["InterfaceName"]["SrcName"], "ovl0123");
        let reply = serde_json::to_value(CreateEndpointReply {
            interface: Some(EndpointInterface {
                mac_address: "02:42:0a:00:09:02".into(),
                ..Default::default()
            }),
        })
        .unwrap();
        assert_eq!(
            reply,
            serde_json::json!({"Interface": {"MacAddress": "02:42:0a:00:09:02"}})
        );
    }
}
