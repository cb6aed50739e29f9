//! `overlay-docker`: the host's agent as a Docker network and IPAM driver, speaking
//! libnetwork's remote driver protocol on a unix socket in the engine's plugin directory, so
//! that the seed's own commands work on an engine:
//!
//! ```text
//! docker network create --driver ovl --ipam-driver ovl --subnet 10.0.9.0/24 my-net
//! docker run -d --net my-net --name zookeeper1 busybox …
//! ```
//!
//! Networks are the cluster's overlay networks, found by name; addresses come from the
//! global IPAM, so two engines never hand out the same one; the container's interface is a
//! veth made by the agent on the network's bridge, which the engine moves into the container.
//! See [`plugin`] for the mapping, and `docs/docker.md` for both scopes.

pub mod engine;
pub mod error;
pub mod options;
pub mod plugin;
pub mod protocol;
pub mod server;

pub use engine::Engine;
pub use plugin::{Plugin, Scope, ScopeSetting};
