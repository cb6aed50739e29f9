//! What a controller reports about its host and the cluster: the changes it sees
//! ([`ControllerEvent`]) and its health ([`Health`]).
//!
//! Plain data, below both the agent that produces it and the controller that hands it out, so
//! that neither imports from the other's side.

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

/// The state of one background task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskHealth {
    /// The task (`hosts`, `networks`, `sweep`, `network my-net`).
    pub name: String,
    /// `running`, `failing` (it retries a failed store call) or `restarting` (it panicked).
    pub state: String,
    /// The last failure while not `running`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How often it was restarted after a panic.
    pub restarts: u32,
}

/// A host's health, as [`Controller::health`](crate::Controller::health) reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// The host id.
    pub host: String,
    /// Whether the store answered a read just now.
    pub store_reachable: bool,
    /// Why it did not, if it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// When the last sweep (reclaim, collector, heal) completed, ms since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sweep_ms: Option<u64>,
    /// Every background task.
    pub tasks: Vec<TaskHealth>,
    /// The requests this host's store client made since it was opened, by kind (this health
    /// call's own read among them); absent for a store that does not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_requests: Option<crate::store::RequestCounts>,
    /// Whether the store answers and every task is running.
    pub healthy: bool,
}
