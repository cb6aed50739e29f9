//! The store key layout (DESIGN.md §3), in one place so every layer agrees on it.
//!
//! ```text
//! networks/<net-id>                 Network record
//! names/<name>                      Claim: the network holding the name (create-only)
//! vnis/<vni>                        Claim: the network holding the VNI (create-only)
//! endpoints/<net-id>/<ep-id>        Endpoint record
//! containers/<net-id>/<container>   endpoint id of a container on a network (create-only:
//!                                   a container joins a network once)
//! epnames/<net-id>/<name>           endpoint id holding a container name on a network
//!                                   (create-only: names resolve to one container)
//! hosts/<host-id>                   Host record, ephemeral
//! ipam/...                          the IPAM's own state
//! ```

use super::{EndpointId, HostId, NetworkId, Vni};

/// Prefix of network records.
pub const NETWORKS: &str = "networks";
/// Prefix of host records.
pub const HOSTS: &str = "hosts";
/// Prefix of VNI claims.
pub const VNIS: &str = "vnis";
/// Prefix of every endpoint record.
pub const ENDPOINTS: &str = "endpoints";

/// `networks/<id>`
pub fn network(id: &NetworkId) -> String {
    format!("{NETWORKS}/{id}")
}

/// `names/<name>`
pub fn name(name: &str) -> String {
    format!("names/{name}")
}

/// `vnis/<vni>`
pub fn vni(vni: Vni) -> String {
    format!("{VNIS}/{vni}")
}

/// `endpoints/<net-id>`: the prefix of one network's endpoints.
pub fn endpoints(network: &NetworkId) -> String {
    format!("{ENDPOINTS}/{network}")
}

/// `endpoints/<net-id>/<ep-id>`
pub fn endpoint(network: &NetworkId, endpoint: &EndpointId) -> String {
    format!("{ENDPOINTS}/{network}/{endpoint}")
}

/// `containers/<net-id>/<container-id>`
pub fn container(network: &NetworkId, container_id: &str) -> String {
    format!("containers/{network}/{container_id}")
}

/// `epnames/<net-id>/<name>`
pub fn endpoint_name(network: &NetworkId, name: &str) -> String {
    format!("epnames/{network}/{name}")
}

/// `hosts/<host-id>`
pub fn host(id: &HostId) -> String {
    format!("{HOSTS}/{id}")
}
