//! Core of `overlay`: multi-host VXLAN overlay networking in the manner of Docker 1.9, as a
//! library.
//!
//! Hosts share a cluster store ([`store`]): etcd, ZooKeeper, Consul, or the embedded store for
//! a single host. Networks created on one host are seen with the same id on every host;
//! containers attached to them get addresses from one global IPAM ([`ipam`]) and reach each
//! other over VXLAN ([`dataplane`]).
//!
//! What an embedder uses is flat at the root: one [`Controller`] per host, the options it opens
//! with, the specs it takes ([`NetworkOptions`], [`ContainerSpec`]), the answers it gives
//! ([`Attachment`], [`NetworkInspect`], [`Health`], [`ControllerEvent`]) and one [`Error`]
//! whose [`ErrorKind`] every face shares. The three contracts below it are public modules for
//! those who implement or use them alone: [`store::KvStore`], [`ipam::Ipam`] and
//! [`dataplane::Dataplane`]; [`model`] holds the ids and records they exchange. The host agent
//! (watches, peers, files, heal, collection) is the controller's own and not public.
//!
//! Layers point one way: controller → {agent, store, ipam, dataplane, dns}; everyone reads
//! [`model`] and [`Error`]. `docs/design.md` in the repository draws the map.

mod agent;
mod controller;
pub mod dataplane;
mod dns;
mod error;
pub mod ipam;
pub mod model;
mod report;
mod retry;
pub mod store;
mod sync;

pub use controller::{
    AddressPool, AddressWant, AttachedAddress, Attachment, ContainerInspect, ContainerSpec,
    Controller, ControllerOptions, DEFAULT_STATE_ROOT, DEFAULT_STORE, Handoff, HandoffSpec,
    HeldAddress, IpamConfigEntry, IpamInspect, MTU_OPTION, NetnsRef, NetworkInspect,
    NetworkOptions, NetworkSummary, Networks, RESERVED_NETWORK_NAMES, SubnetOptions, Uplink,
    VXLANID_OPTION, address_owner, document, rpc, validate_network_name,
};
pub use error::{Error, ErrorKind, Result};
pub use report::{ControllerEvent, Health, TaskHealth};

/// Version of this library.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
