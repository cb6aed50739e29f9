//! The result an ADD prints: the container's interfaces, addresses, routes and resolver, in
//! the configuration's version (0.4.0 adds each address's `version`).

use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;

/// What an ADD made, as the plugin learnt it from the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attached {
    /// The container's namespace, as the runtime gave it.
    pub netns: PathBuf,
    /// The overlay interface inside it.
    pub ifname: String,
    /// Its MAC, `aa:bb:…`.
    pub mac: String,
    /// Its addresses with their prefixes, and the network's gateway of each family.
    pub addresses: Vec<(IpNet, Option<IpAddr>)>,
    /// The gateway interface (name, MAC, address), when the network is not internal; the
    /// default route goes through its gateway.
    pub uplink: Option<(String, String, IpNet, IpAddr)>,
    /// The network's resolver, and the search domain (the network's name).
    pub dns: Option<(IpAddr, String)>,
}

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

impl Attached {
    /// The result document in `version`.
    pub fn to_result(&self, version: &str) -> serde_json::Value {
        let legacy = version == "0.4.0";
        let sandbox = self.netns.display().to_string();
        let mut interfaces = vec![Interface {
            name: self.ifname.clone(),
            mac: self.mac.clone(),
            sandbox: sandbox.clone(),
        }];
        let family = |a: &IpNet| legacy.then_some(if a.addr().is_ipv4() { "4" } else { "6" });
        let mut ips: Vec<Ip> = self
            .addresses
            .iter()
            .map(|(a, gw)| Ip {
                version: family(a),
                address: a.to_string(),
                gateway: gw.map(|g| g.to_string()),
                interface: 0,
            })
            .collect();
        let mut routes = Vec::new();
        if let Some((name, mac, addr, gw)) = &self.uplink {
            interfaces.push(Interface {
                name: name.clone(),
                mac: mac.clone(),
                sandbox,
            });
            ips.push(Ip {
                version: family(addr),
                address: addr.to_string(),
                gateway: Some(gw.to_string()),
                interface: 1,
            });
            routes.push(Route {
                dst: "0.0.0.0/0".into(),
                gw: Some(gw.to_string()),
            });
        }
        let dns = match &self.dns {
            Some((server, search)) => Dns {
                nameservers: vec![server.to_string()],
                search: vec![search.clone()],
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed() -> Attached {
        Attached {
            netns: "/run/netns/cni-1234".into(),
            ifname: "eth0".into(),
            mac: "02:42:0a:00:00:03".into(),
            addresses: vec![(
                "10.0.0.3/24".parse().unwrap(),
                Some("10.0.0.1".parse().unwrap()),
            )],
            uplink: Some((
                "eth1".into(),
                "02:42:ac:12:00:02".into(),
                "172.18.0.2/16".parse().unwrap(),
                "172.18.0.1".parse().unwrap(),
            )),
            dns: Some(("10.0.0.1".parse().unwrap(), "my-net".into())),
        }
    }

    #[test]
    fn the_seed_container_as_cni_reports_it() {
        let r = seed().to_result("1.1.0");
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
        let r = a.to_result("0.4.0");
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 1);
        assert_eq!(
            r["routes"].as_array().unwrap().len(),
            0,
            "no way out, no route"
        );
    }
}
