//! The result an ADD prints: the container's interfaces, addresses, routes and resolver, in
//! the configuration's version (0.4.0 adds each address's `version`).

use overlay_core::Attachment;
use serde::Serialize;

#[derive(Debug, Serialize)]
struct Interface {
    name: String,
    mac: String,
    sandbox: String,
}

#[derive(Debug, Serialize)]
struct Ip {
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'static str>,
    address: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gateway: Option<String>,
    interface: usize,
}

#[derive(Debug, Serialize)]
struct Route {
    dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gw: Option<String>,
}

#[derive(Debug, Serialize)]
struct Dns {
    nameservers: Vec<String>,
    search: Vec<String>,
}

#[derive(Debug, Serialize)]
struct ResultDoc {
    #[serde(rename = "cniVersion")]
    cni_version: String,
    interfaces: Vec<Interface>,
    ips: Vec<Ip>,
    routes: Vec<Route>,
    dns: Dns,
}

/// The result document of attachment `a` in `version`.
pub fn to_result(a: &Attachment, version: &str) -> serde_json::Value {
    let legacy = version == "0.4.0";
    let sandbox = a.netns.display().to_string();
    let mut interfaces = vec![Interface {
        name: a.ifname.clone(),
        mac: a.mac.to_string(),
        sandbox: sandbox.clone(),
    }];
    let family = |a: &ipnet::IpNet| legacy.then_some(if a.addr().is_ipv4() { "4" } else { "6" });
    let mut ips: Vec<Ip> = a
        .addresses
        .iter()
        .map(|x| Ip {
            version: family(&x.address),
            address: x.address.to_string(),
            gateway: x.gateway.map(|g| g.to_string()),
            interface: 0,
        })
        .collect();
    let mut routes = Vec::new();
    if let Some(up) = &a.uplink {
        interfaces.push(Interface {
            name: up.ifname.clone(),
            mac: up.mac.to_string(),
            sandbox,
        });
        ips.push(Ip {
            version: family(&up.address),
            address: up.address.to_string(),
            gateway: Some(up.gateway.to_string()),
            interface: 1,
        });
        routes.push(Route {
            dst: "0.0.0.0/0".into(),
            gw: Some(up.gateway.to_string()),
        });
    }
    let dns = match a.resolver {
        Some(server) => Dns {
            nameservers: vec![server.to_string()],
            search: vec![a.network.clone()],
        },
        None => Dns {
            nameservers: vec![],
            search: vec![],
        },
    };
    serde_json::to_value(ResultDoc {
        cni_version: version.to_string(),
        interfaces,
        ips,
        routes,
        dns,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Attachment {
        serde_json::from_value(serde_json::json!({
            "network": "my-net", "network_id": "a".repeat(64), "container_id": "c1",
            "name": "zookeeper1", "endpoint_id": "b".repeat(64),
            "netns": "/run/netns/cni-1234", "ifname": "eth0", "mac": "02:42:0a:00:00:03",
            "addresses": [{"address": "10.0.0.3/24", "gateway": "10.0.0.1"}],
            "uplink": {"ifname": "eth1", "mac": "02:42:ac:12:00:02",
                       "address": "172.18.0.2/16", "gateway": "172.18.0.1"},
            "resolver": "10.0.0.1"
        }))
        .unwrap()
    }

    #[test]
    fn the_seed_container_as_cni_reports_it() {
        let r = to_result(&seed(), "1.1.0");
        assert_eq!(r["cniVersion"], "1.1.0");
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["interfaces"][1]["sandbox"], "/run/netns/cni-1234");
        assert_eq!(r["ips"][0]["address"], "10.0.0.3/24");
        assert_eq!(r["ips"][0]["gateway"], "10.0.0.1");
        assert_eq!(r["ips"][1]["interface"], 1);
        assert!(
            r["ips"][0].get("version").is_none(),
            "1.x results carry no version"
        );
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(r["routes"][0]["gw"], "172.18.0.1");
        assert_eq!(r["dns"]["nameservers"][0], "10.0.0.1");
        assert_eq!(r["dns"]["search"][0], "my-net");
    }

    #[test]
    fn version_0_4_0_and_internal_networks() {
        let mut a = seed();
        a.uplink = None;
        let r = to_result(&a, "0.4.0");
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 1);
        assert_eq!(
            r["routes"].as_array().unwrap().len(),
            0,
            "no way out, no route"
        );
    }
}
