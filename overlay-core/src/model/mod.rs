//! The data model: identifiers, value types and the records kept in the cluster store.

mod ids;
pub mod keys;
mod ports;
pub(crate) use ids::is_plain_name;
mod records;

pub use ids::{EndpointId, HostId, MacAddr, NetworkId, Vni};
pub use ports::{PortMapping, PortProto};
pub use records::{Claim, Endpoint, Holder, Host, Network, PoolConfig, Record, SCHEMA};
