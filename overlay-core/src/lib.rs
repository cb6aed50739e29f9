//! Core of `overlay`: multi-host VXLAN overlay networking in the manner of Docker 1.9, as a
//! library.
//!
//! Hosts share a cluster store ([`store`]): etcd, ZooKeeper, Consul, or the embedded file store
//! for a single host. Networks created on one host are seen with the same id on every host;
//! containers attached to them get addresses from one global IPAM and reach each other over
//! VXLAN.
//!
//! Layers point one way: controller → {store, ipam, dataplane, agent}; everyone reads
//! [`model`] and [`error`].

pub mod agent;
pub mod controller;
pub mod dataplane;
pub mod dns;
pub mod error;
pub mod ipam;
pub mod model;
pub mod retry;
pub mod store;

pub use error::{Error, ErrorKind, Result};

/// Version of this library.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
