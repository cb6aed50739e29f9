//! The data model: identifiers, value types and the records kept in the cluster store.

mod ids;
pub mod keys;
mod ports;
pub(crate) use ids::is_plain_name;
mod records;

pub use ids::{EndpointId, HostId, MacAddr, NetworkId, Vni};
pub use ports::{PortMapping, PortProto};
pub use records::{Claim, Endpoint, Holder, Host, Network, PoolConfig, Record, SCHEMA};

/// The MTUs an interface may have here: IPv4's minimum (RFC 791) up to the 16-bit length field.
pub(crate) const MTU_RANGE: std::ops::RangeInclusive<u32> = 68..=65_535;

/// `mtu` if it is in [`MTU_RANGE`], else an InvalidArgument of `op` that says the range: the
/// one check every place that takes an MTU makes, so they all refuse and word it alike.
pub(crate) fn checked_mtu(op: &'static str, mtu: u32) -> crate::Result<u32> {
    if MTU_RANGE.contains(&mtu) {
        return Ok(mtu);
    }
    Err(
        crate::Error::invalid(op, format!("MTU {mtu} is outside 68..=65535"))
            .with_hint("use an MTU between 68 and 65535, or none to derive it from the underlay"),
    )
}
