//! What `docker network create` asked for, as the engine passes it to `CreateNetwork`,
//! turned into the controller's [`NetworkOptions`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use overlay_core::{Error, ErrorKind};
use overlay_core::{NetworkOptions, SubnetOptions};
use serde_json::Value;

use crate::error::{DriverError, DriverResult};
use crate::protocol::{CreateNetwork, IpamData};

/// The address space of this plugin's IPAM, in both of the engine's scopes.
pub const ADDRESS_SPACE: &str = "overlay";

/// The `-o` options this driver takes.
const DRIVER_OPTIONS: [&str; 2] = ["vni", "mtu"];

/// The options of `req`; `ranges` holds the `--ip-range` of each subnet, as `RequestPool`
/// saw it (the engine does not pass it again).
pub fn network_options(
    req: &CreateNetwork,
    ranges: &BTreeMap<IpNet, IpNet>,
) -> DriverResult<NetworkOptions> {
    let mut opts = NetworkOptions::default();
    let pools = req
        .ipv4_data
        .iter()
        .flatten()
        .chain(req.ipv6_data.iter().flatten());
    for data in pools {
        opts.subnets.push(subnet(data, ranges)?);
    }
    opts.ipv6 = flag(&req.options, "com.docker.network.enable_ipv6");
    opts.internal = flag(&req.options, "com.docker.network.internal");
    let generic = match req.options.get("com.docker.network.generic") {
        Some(Value::Object(m)) => m.clone(),
        _ => Default::default(),
    };
    for (key, value) in &generic {
        let text = value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string);
        let number = || {
            text.parse::<u32>().map_err(|_| {
                invalid(format!(
                    "option {key}={text} is not a number (give -o {key}=N with a decimal N)"
                ))
            })
        };
        match key.as_str() {
            "vni" => opts.vni = Some(number()?),
            "mtu" => opts.mtu = Some(number()?),
            other => {
                return Err(invalid(format!(
                    "this driver has no option {other:?} (it takes -o {})",
                    DRIVER_OPTIONS.join(", -o ")
                )));
            }
        }
    }
    Ok(opts)
}

fn subnet(data: &IpamData, ranges: &BTreeMap<IpNet, IpNet>) -> DriverResult<SubnetOptions> {
    if data.address_space != ADDRESS_SPACE {
        return Err(invalid(format!(
            "the network's addresses come from another IPAM (address space {:?}); Docker's \
             own IPAM is per engine, so two hosts would hand out the same address \
             (create the network with --ipam-driver set to this plugin too)",
            data.address_space
        )));
    }
    let subnet: IpNet = data
        .pool
        .parse()
        .map_err(|_| invalid(format!("pool {:?} is not a subnet", data.pool)))?;
    let gateway = match data.gateway.as_str() {
        "" => None,
        g => Some(address(g)?),
    };
    let mut aux_addresses = BTreeMap::new();
    for (name, a) in data.aux_addresses.iter().flatten() {
        aux_addresses.insert(name.clone(), address(a)?);
    }
    let mut one = SubnetOptions::new(subnet);
    one.gateway = gateway;
    one.ip_range = ranges.get(&subnet).copied();
    one.aux_addresses = aux_addresses;
    Ok(one)
}

/// An address as the engine writes it: with or without the subnet's prefix.
pub fn address(text: &str) -> DriverResult<IpAddr> {
    let bare = text.split('/').next().unwrap_or_default();
    bare.parse()
        .map_err(|_| invalid(format!("{text:?} is not an IP address")))
}

fn flag(options: &BTreeMap<String, Value>, key: &str) -> bool {
    match options.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    }
}

fn invalid(msg: String) -> DriverError {
    DriverError::from(Error::new(
        ErrorKind::InvalidArgument,
        "create network",
        msg,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: &str) -> CreateNetwork {
        serde_json::from_str(body).unwrap()
    }

    #[test]
    fn docker_options_become_network_options() {
        let req = request(
            r#"{"NetworkID":"n","Options":{"com.docker.network.enable_ipv6":true,
            "com.docker.network.internal":true,
            "com.docker.network.generic":{"mtu":"1400","vni":"4242"}},
            "IPv4Data":[{"AddressSpace":"overlay","Gateway":"10.0.9.1/24","Pool":"10.0.9.0/24",
              "AuxAddresses":{"router":"10.0.9.5/24"}}],
            "IPv6Data":[{"AddressSpace":"overlay","Gateway":"fd00:9::1/64","Pool":"fd00:9::/64"}]}"#,
        );
        let mut ranges = BTreeMap::new();
        ranges.insert(
            "10.0.9.0/24".parse().unwrap(),
            "10.0.9.128/25".parse().unwrap(),
        );
        let o = network_options(&req, &ranges).unwrap();
        assert_eq!(
            (o.vni, o.mtu, o.ipv6, o.internal),
            (Some(4242), Some(1400), true, true)
        );
        assert_eq!(o.subnets.len(), 2);
        assert_eq!(o.subnets[0].gateway, Some("10.0.9.1".parse().unwrap()));
        assert_eq!(
            o.subnets[0].ip_range,
            Some("10.0.9.128/25".parse().unwrap())
        );
        assert_eq!(
            o.subnets[0].aux_addresses["router"],
            "10.0.9.5".parse::<IpAddr>().unwrap()
        );
        assert_eq!(o.subnets[1].ip_range, None);
    }

    #[test]
    fn bad_options_are_refused_with_what_to_do() {
        let ok_pool = r#""IPv4Data":[{"AddressSpace":"overlay","Pool":"10.0.9.0/24"}]"#;
        let e = network_options(
            &request(&format!(
                r#"{{"NetworkID":"n","Options":{{"com.docker.network.generic":{{"color":"red"}}}},{ok_pool}}}"#
            )),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.err.contains("no option \"color\""), "{}", e.err);
        assert_eq!(e.status, 400);
        let e = network_options(
            &request(&format!(
                r#"{{"NetworkID":"n","Options":{{"com.docker.network.generic":{{"vni":"lots"}}}},{ok_pool}}}"#
            )),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.err.contains("vni=lots is not a number"), "{}", e.err);
        let e = network_options(
            &request(
                r#"{"NetworkID":"n","IPv4Data":[{"AddressSpace":"LocalDefault","Pool":"172.19.0.0/16"}]}"#,
            ),
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.err.contains("--ipam-driver"), "{}", e.err);
    }
}
