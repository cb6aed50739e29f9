//! The network configuration a runtime feeds on stdin.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use overlay_core::document::parse_text;
use overlay_core::model::PortMapping;
use overlay_core::{NetworkOptions, SubnetOptions};
use serde::Deserialize;

use crate::SUPPORTED_VERSIONS;
use crate::error::{CniError, Code};

/// Where the host's agent listens unless the configuration says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/overlay/agent.sock";

/// How to create the overlay network when it does not exist yet; honoured by the first ADD
/// and checked against the network by the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// Its subnet.
    pub subnet: Option<IpNet>,
    /// Its gateway (where its resolver answers).
    pub gateway: Option<IpAddr>,
    /// Its VXLAN id.
    pub vni: Option<u32>,
    /// Its MTU.
    pub mtu: Option<u32>,
}

/// `create` as written: addresses as text, so that a bad one is named with its field.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateOptionsDoc {
    #[serde(default)]
    subnet: Option<String>,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    vni: Option<u32>,
    #[serde(default)]
    mtu: Option<u32>,
}

impl CreateOptionsDoc {
    fn check(self) -> overlay_core::Result<CreateOptions> {
        const OP: &str = "read create options";
        Ok(CreateOptions {
            subnet: self
                .subnet
                .map(|t| parse_text(OP, "create.subnet", &t))
                .transpose()?,
            gateway: self
                .gateway
                .map(|t| parse_text(OP, "create.gateway", &t))
                .transpose()?,
            vni: self.vni,
            mtu: self.mtu,
        })
    }
}

impl CreateOptions {
    /// The options of the overlay network these create.
    pub fn network_options(&self) -> NetworkOptions {
        let mut opts = NetworkOptions::default();
        if let Some(subnet) = self.subnet {
            let mut one = SubnetOptions::new(subnet);
            one.gateway = self.gateway;
            opts = opts.subnet(one);
        }
        opts.vni = self.vni;
        opts.mtu = self.mtu;
        opts
    }
}

/// One of `runtimeConfig.portMappings`, as the `portMappings` capability words it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PortMappingDoc {
    host_port: u16,
    container_port: u16,
    #[serde(default)]
    protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    host_ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RuntimeConfigDoc {
    /// Podman: network name → the container's names on it.
    #[serde(default)]
    aliases: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    port_mappings: Vec<PortMappingDoc>,
}

/// One entry of GC's `cni.dev/valid-attachments`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
struct ValidAttachmentDoc {
    #[serde(rename = "containerID")]
    container_id: String,
    ifname: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NetConfDoc {
    cni_version: String,
    name: String,
    #[serde(rename = "type")]
    kind: String,
    /// The overlay network; default: `name`.
    #[serde(default)]
    network: Option<String>,
    #[serde(default)]
    socket: Option<PathBuf>,
    /// Read as a value first, so that a bad subnet is an invalid configuration (7), not a
    /// document that does not decode (6).
    #[serde(default)]
    create: Option<serde_json::Value>,
    #[serde(default)]
    runtime_config: RuntimeConfigDoc,
    #[serde(default)]
    prev_result: Option<serde_json::Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    valid_attachments: Option<Vec<ValidAttachmentDoc>>,
}

/// A checked network configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConf {
    /// The configuration's version: results and errors are written in it.
    pub cni_version: String,
    /// The CNI network's name.
    pub name: String,
    /// The overlay network to attach to.
    pub network: String,
    /// The agent's socket.
    pub socket: PathBuf,
    /// How to create the network if it is missing.
    pub create: Option<CreateOptions>,
    /// The container's names on the network (from `runtimeConfig.aliases`).
    pub aliases: Vec<String>,
    /// Ports to publish (from `runtimeConfig.portMappings`).
    pub ports: Vec<PortMapping>,
    /// The result of the ADD being deleted or checked.
    pub prev_result: Option<serde_json::Value>,
    /// GC's `cni.dev/valid-attachments`: (container id, interface) of every attachment the
    /// runtime still uses.
    pub valid_attachments: Option<Vec<(String, String)>>,
}

impl NetConf {
    /// Parses and checks the configuration `bytes`: a supported `cniVersion` (else code 1),
    /// a decodable document (else 6), a sane network (else 7).
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        // The version first, so that every later error is written in it.
        let version = serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
            .unwrap_or_else(|| crate::CURRENT_VERSION.to_string());
        let doc: NetConfDoc = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(
                &version,
                Code::Decode,
                format!("the network configuration does not decode: {e}"),
                "give a JSON object with cniVersion, name and type",
            )
        })?;
        if !SUPPORTED_VERSIONS.contains(&doc.cni_version.as_str()) {
            return Err(CniError::new(
                crate::CURRENT_VERSION,
                Code::IncompatibleVersion,
                format!("cniVersion {:?} is not supported", doc.cni_version),
                format!("use one of {}", SUPPORTED_VERSIONS.join(", ")),
            ));
        }
        let v = doc.cni_version.clone();
        let invalid =
            |msg: String, hint: &str| CniError::new(&v, Code::InvalidConfig, msg, hint.to_string());
        if doc.kind != "overlay-cni" {
            return Err(invalid(
                format!("type {:?} is not this plugin's", doc.kind),
                "set \"type\": \"overlay-cni\"",
            ));
        }
        let network = doc.network.clone().unwrap_or_else(|| doc.name.clone());
        if network.is_empty() {
            return Err(invalid(
                "the network name is empty".into(),
                "set \"name\" (or \"network\") to the overlay network's name",
            ));
        }
        let v_for_create = doc.cni_version.clone();
        let create = match &doc.create {
            None => None,
            Some(v) => {
                let doc = serde_json::from_value::<CreateOptionsDoc>(v.clone()).map_err(|e| {
                    invalid(
                        format!("create options: {e}"),
                        "give create as {\"subnet\": \"10.0.9.0/24\", \"gateway\": \"10.0.9.1\", \"vni\": 4242, \"mtu\": 1450}, each optional",
                    )
                })?;
                Some(
                    doc.check()
                        .map_err(|e| CniError::from_core(&v_for_create, &e))?,
                )
            }
        };
        if let Some(c) = &create
            && c.gateway.is_some()
            && c.subnet.is_none()
        {
            return Err(invalid(
                "create.gateway is given without create.subnet".into(),
                "give the subnet the gateway belongs to, or drop the gateway",
            ));
        }
        let aliases = doc
            .runtime_config
            .aliases
            .get(&doc.name)
            .cloned()
            .unwrap_or_default();
        let ports = doc
            .runtime_config
            .port_mappings
            .iter()
            .map(|p| {
                let host_ip = p.host_ip.as_deref().filter(|h| !h.is_empty());
                let proto = p.protocol.as_deref().unwrap_or("tcp");
                let text = match host_ip {
                    Some(ip) => format!("{ip}:{}:{}/{proto}", p.host_port, p.container_port),
                    None => format!("{}:{}/{proto}", p.host_port, p.container_port),
                };
                text.parse::<PortMapping>().map_err(|e| {
                    invalid(
                        format!("port mapping {text:?}: {e}"),
                        "give hostPort, containerPort, protocol tcp or udp, an IPv4 hostIP",
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(NetConf {
            cni_version: doc.cni_version,
            name: doc.name,
            network,
            socket: doc.socket.unwrap_or_else(|| DEFAULT_SOCKET.into()),
            create,
            aliases,
            ports,
            prev_result: doc.prev_result,
            valid_attachments: doc.valid_attachments.map(|list| {
                list.into_iter()
                    .map(|a| (a.container_id, a.ifname))
                    .collect()
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_podman_config() {
        let c = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "my-net", "type": "overlay-cni",
                 "create": {"subnet": "10.0.9.0/24", "vni": 4242},
                 "runtimeConfig": {
                   "aliases": {"my-net": ["zookeeper1", "3cfba8da9b6f"]},
                   "portMappings": [{"hostPort": 2181, "containerPort": 2181, "protocol": "tcp", "hostIP": ""}]
                 }}"#,
        )
        .unwrap();
        assert_eq!(c.network, "my-net");
        assert_eq!(c.socket, PathBuf::from(DEFAULT_SOCKET));
        assert_eq!(c.aliases, ["zookeeper1", "3cfba8da9b6f"]);
        assert_eq!(c.ports.len(), 1);
        assert_eq!(c.ports[0].to_string(), "2181:2181/tcp");
        let opts = c.create.unwrap().network_options();
        assert_eq!(opts.vni, Some(4242));
        assert_eq!(opts.subnets[0].subnet.to_string(), "10.0.9.0/24");
        let gc = NetConf::parse(
            br#"{"cniVersion": "1.1.0", "name": "my-net", "type": "overlay-cni",
                 "cni.dev/valid-attachments": [{"containerID": "c1", "ifname": "eth0"}]}"#,
        )
        .unwrap();
        assert_eq!(
            gc.valid_attachments,
            Some(vec![("c1".to_string(), "eth0".to_string())])
        );
    }

    #[test]
    fn versions_and_shapes_are_checked() {
        let e = NetConf::parse(br#"{"cniVersion": "0.3.1", "name": "n", "type": "overlay-cni"}"#)
            .unwrap_err();
        assert_eq!(e.code, 1);
        let e = NetConf::parse(br#"{"cniVersion": "1.1.0", "name": "n"}"#).unwrap_err();
        assert_eq!((e.code, e.cni_version.as_str()), (6, "1.1.0"));
        let e = NetConf::parse(br#"{"cniVersion": "1.1.0", "name": "n", "type": "bridge"}"#)
            .unwrap_err();
        assert_eq!(e.code, 7);
        let e = NetConf::parse(
            br#"{"cniVersion": "0.4.0", "name": "n", "type": "overlay-cni",
                 "runtimeConfig": {"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "sctp"}]}}"#,
        )
        .unwrap_err();
        assert_eq!((e.code, e.cni_version.as_str()), (7, "0.4.0"));
        let e = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "n", "type": "overlay-cni", "create": {"colour": 1}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 7, "unknown create options are refused");
        assert!(e.msg.contains("colour"), "{}", e.msg);
        let e = NetConf::parse(
            br#"{"cniVersion": "1.0.0", "name": "n", "type": "overlay-cni", "create": {"gateway": "10.0.0.1"}}"#,
        )
        .unwrap_err();
        assert_eq!(e.code, 7);
    }
}
