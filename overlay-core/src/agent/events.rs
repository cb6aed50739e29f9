//! Changes a controller reports to its embedder, as they are seen through the store's watches.

use serde::{Deserialize, Serialize};

/// A change of networks or endpoints anywhere in the cluster, as seen by this host. Endpoint
/// events are reported for networks that have containers on this host.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControllerEvent {
    /// A network was created (on any host).
    NetworkCreated {
        /// Full network id.
        id: String,
        /// Network name.
        name: String,
    },
    /// A network was removed.
    NetworkRemoved {
        /// Full network id.
        id: String,
        /// Network name.
        name: String,
    },
    /// A container joined a network.
    EndpointUp {
        /// Network id.
        network: String,
        /// Container id.
        container_id: String,
        /// Container name.
        name: String,
        /// Its address, without prefix length.
        ip: String,
        /// The host it runs on.
        host: String,
    },
    /// A container left a network (or its host was reclaimed).
    EndpointDown {
        /// Network id.
        network: String,
        /// Container id.
        container_id: String,
        /// Container name.
        name: String,
        /// The host it ran on.
        host: String,
    },
}

impl ControllerEvent {
    /// The event of an endpoint coming up.
    pub(crate) fn up(ep: &crate::model::Endpoint) -> Self {
        let ip = ep
            .ipv4
            .map(|a| a.addr().to_string())
            .or_else(|| ep.ipv6.map(|a| a.addr().to_string()))
            .unwrap_or_default();
        ControllerEvent::EndpointUp {
            network: ep.network.to_string(),
            container_id: ep.container_id.clone(),
            name: ep.name.clone(),
            ip,
            host: ep.host.to_string(),
        }
    }

    /// The event of an endpoint going away.
    pub(crate) fn down(ep: &crate::model::Endpoint) -> Self {
        ControllerEvent::EndpointDown {
            network: ep.network.to_string(),
            container_id: ep.container_id.clone(),
            name: ep.name.clone(),
            host: ep.host.to_string(),
        }
    }
}
