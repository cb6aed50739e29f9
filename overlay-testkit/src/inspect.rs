//! Reading the JSON answers of a connect or an inspect, as Docker shapes them.

use std::net::IpAddr;

use serde_json::Value;

/// The IPv4 address, without its prefix, of an endpoint entry: a connect's answer over the
/// agent's protocol, or a member of an inspect's `Containers` (Docker's `"IPv4Address":
/// "10.0.0.2/24"`). Panics, showing the entry, if it has none.
pub fn ip_of(entry: &Value) -> IpAddr {
    let cidr = entry["IPv4Address"]
        .as_str()
        .unwrap_or_else(|| panic!("no IPv4Address in {entry}"));
    cidr.split('/')
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("IPv4Address {cidr:?} is not ADDRESS/PREFIX"))
}
