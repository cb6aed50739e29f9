//! What a connect checks before it touches anything: the container against the network it
//! joins, as one pure function, so that a refused connect changes nothing and every refusal
//! is tested without a store or a kernel (netavark validates before it acts, too).

use ipnet::IpNet;

use super::spec::ContainerSpec;
use crate::error::{Error, ErrorKind, Result};
use crate::model::Network;

/// Whether container `c` may join `net` on a host whose gateway pool is `gateway_pool`.
pub(super) fn connect_preconditions(
    net: &Network,
    c: &ContainerSpec,
    gateway_pool: IpNet,
) -> Result<()> {
    let op = "connect";
    if net.removing {
        return Err(Error::new(
            ErrorKind::NotFound,
            op,
            format!("network {:?} is being removed", net.name),
        ));
    }
    if net.internal && !c.publish.is_empty() {
        return Err(Error::invalid(
            op,
            format!(
                "network {:?} is internal: nothing on it is published",
                net.name
            ),
        )
        .with_hint("drop the published ports, or use a network that is not internal"));
    }
    // A network made on a host with another gateway pool may cover this host's: its
    // containers' routes would then clash with the gateway bridge's.
    if let Some(p) = net.pools.iter().find(|p| {
        !net.internal
            && (p.subnet.contains(&gateway_pool.network())
                || gateway_pool.contains(&p.subnet.network()))
    }) {
        return Err(Error::invalid(
            op,
            format!(
                "subnet {} of network {:?} overlaps this host's gateway pool {gateway_pool}",
                p.subnet, net.name
            ),
        )
        .with_hint("set gateway_pool on this host to a range no overlay network uses"));
    }
    if c.ipv6.is_some() && !net.ipv6 {
        return Err(
            Error::invalid(op, format!("network {:?} has no IPv6", net.name))
                .with_hint("drop the IPv6 address, or use a network created with IPv6"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::spec::NetnsRef;

    fn network(extra: serde_json::Value) -> Network {
        let serde_json::Value::Object(extra) = extra else {
            panic!("network(): extra fields must be an object, got {extra}");
        };
        let mut doc = serde_json::json!({
            "schema": 1, "id": "a".repeat(64), "name": "my-net", "driver": "overlay",
            "vni": 4242,
            "pools": [{"subnet": "10.0.9.0/24", "gateway": "10.0.9.1"}],
            "created_ms": 0
        });
        for (k, v) in extra {
            doc[k] = v;
        }
        serde_json::from_value(doc).unwrap()
    }

    fn zk() -> ContainerSpec {
        ContainerSpec::new("c1", "zookeeper1", NetnsRef::Pid(1))
    }

    const POOL: &str = "172.18.0.0/16";

    fn refused(net: &Network, c: &ContainerSpec) -> Error {
        connect_preconditions(net, c, POOL.parse().unwrap()).unwrap_err()
    }

    #[test]
    fn a_plain_container_joins_a_plain_network() {
        let net = network(serde_json::json!({}));
        connect_preconditions(&net, &zk(), POOL.parse().unwrap()).unwrap();
        let c = zk()
            .ipv4("10.0.9.7".parse::<std::net::Ipv4Addr>().unwrap())
            .publish("2181:2181".parse().unwrap());
        connect_preconditions(&net, &c, POOL.parse().unwrap()).unwrap();
    }

    #[test]
    fn a_network_being_removed_is_not_found() {
        let e = refused(&network(serde_json::json!({"removing": true})), &zk());
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(e.context().contains("being removed"), "{e}");
    }

    #[test]
    fn an_internal_network_publishes_nothing() {
        let net = network(serde_json::json!({"internal": true}));
        connect_preconditions(&net, &zk(), POOL.parse().unwrap()).unwrap();
        let e = refused(&net, &zk().publish("2181:2181".parse().unwrap()));
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.context().contains("internal"), "{e}");
    }

    #[test]
    fn a_subnet_over_the_gateway_pool_is_refused_unless_internal() {
        let over = serde_json::json!({"pools": [{"subnet": "172.18.5.0/24"}]});
        let e = refused(&network(over.clone()), &zk());
        assert!(
            e.context().contains("overlaps this host's gateway pool"),
            "{e}"
        );
        let wide = serde_json::json!({"pools": [{"subnet": "172.0.0.0/8"}]});
        assert!(
            refused(&network(wide), &zk())
                .context()
                .contains("overlaps")
        );
        let mut internal = over;
        internal["internal"] = true.into();
        connect_preconditions(&network(internal), &zk(), POOL.parse().unwrap()).unwrap();
    }

    #[test]
    fn an_ipv6_address_needs_an_ipv6_network() {
        let net = network(serde_json::json!({}));
        let e = refused(
            &net,
            &zk().ipv6("fd00::2".parse::<std::net::Ipv6Addr>().unwrap()),
        );
        assert!(e.context().contains("has no IPv6"), "{e}");
    }
}
