//! What a host's resolver knows: the names of every network with containers on this host, and
//! which local container each query comes from. A [`Directory`] is an immutable snapshot; the
//! agent makes a new one when a view changes and swaps it in whole, so a query never waits for
//! an update and an update never waits for a query.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use ipnet::IpNet;

use crate::model::{Endpoint, EndpointId, Network, NetworkId};

/// The names of one network's living endpoints, kept current in place: a change of one
/// endpoint changes its names only, so that a connect on a host with a thousand containers
/// does not rebuild a thousand containers' names. Queries read under a lock held only for the
/// lookup; an update holds it for one pass over the network's endpoints that compares, and
/// allocates only for what changed.
#[derive(Debug, Default)]
pub(crate) struct NetNames(RwLock<Zone>);

#[derive(Debug, Default)]
struct Zone {
    /// The network's name, lowercased: the zone `NAME.network` names live in.
    zone: String,
    /// No query arriving on this network is forwarded.
    internal: bool,
    subnets: Vec<IpNet>,
    /// `name`, `name.network`, and each alias in both forms (lowercased) → addresses, sorted.
    forward: HashMap<String, Vec<IpAddr>>,
    /// Address → `name.network`.
    reverse: HashMap<IpAddr, String>,
    /// What each endpoint put in, to take it out again, and the pass that last saw it.
    held: HashMap<EndpointId, Held>,
    pass: u64,
}

#[derive(Debug, PartialEq, Eq)]
struct Held {
    name: String,
    aliases: Vec<String>,
    ips: Vec<IpAddr>,
    pass: u64,
}

impl NetNames {
    /// The names of `endpoints` (the ones on living hosts) of `network`.
    pub(crate) fn new<'a>(
        network: &Network,
        endpoints: impl Iterator<Item = &'a Endpoint>,
    ) -> Self {
        let names = NetNames::default();
        names.sync(network, endpoints);
        names
    }

    /// Makes the names those of `endpoints` of `network`, changing only what differs.
    pub(crate) fn sync<'a>(
        &self,
        network: &Network,
        endpoints: impl Iterator<Item = &'a Endpoint>,
    ) {
        let mut z = crate::sync::write(&self.0);
        let zone = network.name.to_ascii_lowercase();
        if z.zone != zone {
            // Every `name.network` changes with the zone: start again.
            *z = Zone {
                zone,
                ..Zone::default()
            };
        }
        z.internal = network.internal;
        if z.subnets.len() != network.pools.len()
            || z.subnets
                .iter()
                .zip(&network.pools)
                .any(|(s, p)| *s != p.subnet)
        {
            z.subnets = network.pools.iter().map(|p| p.subnet).collect();
        }
        z.pass += 1;
        let pass = z.pass;
        for ep in endpoints {
            let same = z.held.get_mut(&ep.id).filter(|h| {
                h.name == ep.name
                    && h.aliases == ep.aliases
                    && h.ips.iter().copied().eq(ep.addresses())
            });
            if let Some(h) = same {
                h.pass = pass;
                continue;
            }
            if let Some(old) = z.held.remove(&ep.id) {
                z.take_out(&old);
            }
            let held = Held {
                name: ep.name.clone(),
                aliases: ep.aliases.clone(),
                ips: ep.addresses().collect(),
                pass,
            };
            z.put_in(&held);
            z.held.insert(ep.id, held);
        }
        let gone: Vec<EndpointId> = z
            .held
            .iter()
            .filter(|(_, h)| h.pass != pass)
            .map(|(id, _)| *id)
            .collect();
        for id in gone {
            if let Some(old) = z.held.remove(&id) {
                z.take_out(&old);
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Zone> {
        crate::sync::read(&self.0)
    }
}

impl Zone {
    /// Every key an endpoint's names make, with the name `PTR` answers.
    fn keys(&self, h: &Held) -> (Vec<String>, String) {
        let zone = &self.zone;
        let own = format!("{}.{zone}", h.name.to_ascii_lowercase());
        let keys = std::iter::once(&h.name)
            .chain(&h.aliases)
            .flat_map(|n| {
                let n = n.to_ascii_lowercase();
                [format!("{n}.{zone}"), n]
            })
            .collect();
        (keys, own)
    }

    fn put_in(&mut self, h: &Held) {
        let (keys, own) = self.keys(h);
        for ip in &h.ips {
            self.reverse.insert(*ip, own.clone());
            for key in &keys {
                let ips = self.forward.entry(key.clone()).or_default();
                if let Err(at) = ips.binary_search(ip) {
                    ips.insert(at, *ip);
                }
            }
        }
    }

    fn take_out(&mut self, h: &Held) {
        let (keys, own) = self.keys(h);
        for ip in &h.ips {
            if self.reverse.get(ip) == Some(&own) {
                self.reverse.remove(ip);
            }
            for key in &keys {
                if let Some(ips) = self.forward.get_mut(key) {
                    ips.retain(|x| x != ip);
                    if ips.is_empty() {
                        self.forward.remove(key);
                    }
                }
            }
        }
    }
}

/// What the resolver answers a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The source is no container of this network on this host: nothing is answered for it.
    Refused,
    /// A container's name: its addresses (of either family; the caller keeps those asked for,
    /// and answers none rather than "no such name" when the name has only the other family).
    Addresses(Vec<IpAddr>),
    /// A container's address, asked backwards: its `name.network`.
    Pointer(String),
    /// A name in one of the container's networks' zones (or an address of one of their
    /// subnets) that nothing holds.
    NoSuchName,
    /// Not a name of ours: forwarded upstream, unless the network is internal.
    Elsewhere {
        /// Whether the query may leave the host.
        forward: bool,
    },
}

/// Every network's names on this host, and the local containers that may ask.
#[derive(Debug, Default, Clone)]
pub(crate) struct Directory {
    nets: HashMap<NetworkId, Arc<NetNames>>,
    /// (network a query arrives on, source address) → the networks of the container at that
    /// address, the arriving one first.
    clients: HashMap<(NetworkId, IpAddr), Arc<[NetworkId]>>,
}

impl Directory {
    /// This directory with `id`'s names replaced (or removed, when `names` is `None`).
    pub(crate) fn with_network(
        &self,
        id: NetworkId,
        names: Option<impl Into<Arc<NetNames>>>,
    ) -> Directory {
        let mut next = self.clone();
        match names {
            Some(n) => next.nets.insert(id, n.into()),
            None => next.nets.remove(&id),
        };
        next
    }

    /// The names of network `id`, to bring up to date in place ([`NetNames::sync`]).
    pub(crate) fn network(&self, id: &NetworkId) -> Option<Arc<NetNames>> {
        self.nets.get(id).cloned()
    }

    /// This directory without network `id`: its names and the containers asking on it.
    pub(crate) fn without_network(&self, id: &NetworkId) -> Directory {
        let mut next = self.with_network(*id, None::<Arc<NetNames>>);
        next.clients.retain(|(net, _), _| net != id);
        next
    }

    /// This directory with the local containers replaced: each local endpoint as
    /// (container id, network, its addresses).
    pub(crate) fn with_clients<'a>(
        &self,
        local: impl Iterator<Item = (&'a str, NetworkId, Vec<IpAddr>)>,
    ) -> Directory {
        let local: Vec<_> = local.collect();
        let mut by_container: HashMap<&str, Vec<NetworkId>> = HashMap::new();
        for (container, net, _) in &local {
            let nets = by_container.entry(container).or_default();
            if !nets.contains(net) {
                nets.push(*net);
            }
        }
        let mut next = self.clone();
        next.clients.clear();
        for (container, net, ips) in &local {
            let others = by_container
                .get(container)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let order: Arc<[NetworkId]> = std::iter::once(*net)
                .chain(others.iter().copied().filter(|n| n != net))
                .collect();
            for ip in ips {
                next.clients.insert((*net, *ip), order.clone());
            }
        }
        next
    }

    /// Answers `qname` (lowercased, without the root's trailing dot) asked from `source` on
    /// `network`; `reverse` is the address when `qname` is an `in-addr.arpa`/`ip6.arpa` name.
    pub(crate) fn lookup(
        &self,
        network: &NetworkId,
        source: IpAddr,
        qname: &str,
        reverse: Option<IpAddr>,
    ) -> Lookup {
        let Some(order) = self.clients.get(&(*network, source)) else {
            return Lookup::Refused;
        };
        let joined = order
            .iter()
            .filter_map(|id| self.nets.get(id))
            .map(|n| n.read());
        if let Some(ip) = reverse {
            let mut ours = false;
            for n in joined {
                if let Some(name) = n.reverse.get(&ip) {
                    return Lookup::Pointer(name.clone());
                }
                ours |= n.subnets.iter().any(|s| s.contains(&ip));
            }
            return if ours {
                Lookup::NoSuchName
            } else {
                self.elsewhere(network)
            };
        }
        let mut in_zone = false;
        for n in joined {
            if let Some(ips) = n.forward.get(qname) {
                return Lookup::Addresses(ips.clone());
            }
            in_zone |= qname
                .strip_suffix(n.zone.as_str())
                .is_some_and(|head| head.ends_with('.'));
        }
        if in_zone {
            Lookup::NoSuchName
        } else {
            self.elsewhere(network)
        }
    }

    fn elsewhere(&self, network: &NetworkId) -> Lookup {
        let forward = self.nets.get(network).is_some_and(|n| !n.read().internal);
        Lookup::Elsewhere { forward }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EndpointId, HostId, MacAddr, PoolConfig, SCHEMA, Vni};

    fn network(name: &str, subnet: &str, internal: bool) -> Network {
        Network {
            schema: SCHEMA,
            id: NetworkId::random(),
            name: name.into(),
            driver: "overlay".into(),
            vni: Vni::new(256).unwrap(),
            pools: vec![PoolConfig::new(subnet.parse().unwrap())],
            ipv6: false,
            internal,
            labels: Default::default(),
            options: Default::default(),
            mtu: None,
            created_ms: 0,
            removing: false,
        }
    }

    fn endpoint(
        net: &Network,
        container: &str,
        name: &str,
        ip: &str,
        aliases: &[&str],
    ) -> Endpoint {
        let ipv4: ipnet::Ipv4Net = ip.parse().unwrap();
        Endpoint {
            schema: SCHEMA,
            id: EndpointId::random(),
            network: net.id,
            container_id: container.into(),
            name: name.into(),
            aliases: aliases.iter().map(|a| a.to_string()).collect(),
            ipv4: Some(ipv4),
            ipv6: None,
            mac: MacAddr::from_ipv4(ipv4.addr()),
            host: HostId::new("h1").unwrap(),
            vtep: "192.0.2.1".parse().unwrap(),
            sticky: false,
            ifname: "eth0".into(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_synced_in_place_match_a_fresh_build() {
        let net = network("Front", "10.0.0.0/24", false);
        let mut eps = vec![
            endpoint(&net, "a", "web", "10.0.0.2/24", &["www", "kv"]),
            endpoint(&net, "b", "cache", "10.0.0.3/24", &["kv"]),
            endpoint(&net, "c", "db", "10.0.0.4/24", &[]),
        ];
        let names = NetNames::new(&net, eps.iter());
        let same = |names: &NetNames, eps: &[Endpoint]| {
            let fresh = NetNames::new(&net, eps.iter());
            let (a, b) = (names.read(), fresh.read());
            assert_eq!(a.forward, b.forward);
            assert_eq!(a.reverse, b.reverse);
            assert_eq!(a.held.len(), eps.len());
        };
        same(&names, &eps);
        assert_eq!(names.read().forward["kv"], [ip("10.0.0.2"), ip("10.0.0.3")]);
        // An alias dropped, an endpoint gone, one added.
        eps[0].aliases = vec!["www".into()];
        eps.remove(1);
        eps.push(endpoint(&net, "d", "queue", "10.0.0.5/24", &["kv"]));
        names.sync(&net, eps.iter());
        same(&names, &eps);
        assert_eq!(names.read().forward["kv"], [ip("10.0.0.5")]);
        assert!(!names.read().reverse.contains_key(&ip("10.0.0.3")));
        // A renamed network renames every `name.network`.
        let mut renamed = net.clone();
        renamed.name = "back".into();
        names.sync(&renamed, eps.iter());
        assert!(names.read().forward.contains_key("web.back"));
        assert!(!names.read().forward.contains_key("web.front"));
        names.sync(&renamed, std::iter::empty());
        assert!(names.read().forward.is_empty() && names.read().reverse.is_empty());
    }

    /// Two networks; `a` is on both, `b` only on `front`, `c` only on the internal `back`.
    fn directory() -> (Directory, Network, Network) {
        let front = network("Front", "10.0.0.0/24", false);
        let back = network("back", "10.0.1.0/24", true);
        let eps = [
            endpoint(&front, "a", "web", "10.0.0.2/24", &["www"]),
            endpoint(&back, "a", "web", "10.0.1.2/24", &[]),
            endpoint(&front, "b", "Cache", "10.0.0.3/24", &[]),
            endpoint(&back, "c", "db", "10.0.1.3/24", &[]),
        ];
        let dir = Directory::default()
            .with_network(
                front.id,
                Some(NetNames::new(&front, eps.iter().take(1).chain(&eps[2..3]))),
            )
            .with_network(
                back.id,
                Some(NetNames::new(&back, [&eps[1], &eps[3]].into_iter())),
            )
            .with_clients(eps.iter().map(|e| {
                (
                    e.container_id.as_str(),
                    e.network,
                    e.addresses().collect::<Vec<_>>(),
                )
            }));
        (dir, front, back)
    }

    #[test]
    fn names_of_the_joined_networks_only() {
        let (dir, front, back) = directory();
        let from_a = |q: &str| dir.lookup(&front.id, ip("10.0.0.2"), q, None);
        assert_eq!(from_a("cache"), Lookup::Addresses(vec![ip("10.0.0.3")]));
        assert_eq!(
            from_a("cache.front"),
            Lookup::Addresses(vec![ip("10.0.0.3")])
        );
        assert_eq!(from_a("www.front"), Lookup::Addresses(vec![ip("10.0.0.2")]));
        // a joined back too: its names answer, the arriving network's first.
        assert_eq!(from_a("db.back"), Lookup::Addresses(vec![ip("10.0.1.3")]));
        assert_eq!(from_a("web"), Lookup::Addresses(vec![ip("10.0.0.2")]));
        assert_eq!(
            dir.lookup(&back.id, ip("10.0.1.2"), "web", None),
            Lookup::Addresses(vec![ip("10.0.1.2")])
        );
        // b did not join back: db is not a name it sees, and back's zone is not its own.
        let from_b = |q: &str| dir.lookup(&front.id, ip("10.0.0.3"), q, None);
        assert_eq!(from_b("db"), Lookup::Elsewhere { forward: true });
        assert_eq!(from_b("db.back"), Lookup::Elsewhere { forward: true });
        assert_eq!(from_b("gone.front"), Lookup::NoSuchName);
        assert_eq!(from_b("front"), Lookup::Elsewhere { forward: true });
        assert_eq!(from_b("example.org"), Lookup::Elsewhere { forward: true });
    }

    #[test]
    fn the_source_decides_not_the_query() {
        let (dir, front, back) = directory();
        // An address of front that no local container holds, and a's address asked on the
        // wrong network.
        assert_eq!(
            dir.lookup(&front.id, ip("10.0.0.9"), "cache", None),
            Lookup::Refused
        );
        assert_eq!(
            dir.lookup(&back.id, ip("10.0.0.2"), "cache", None),
            Lookup::Refused
        );
    }

    #[test]
    fn internal_networks_never_forward() {
        let (dir, _, back) = directory();
        let from_c = |q: &str| dir.lookup(&back.id, ip("10.0.1.3"), q, None);
        assert_eq!(from_c("example.org"), Lookup::Elsewhere { forward: false });
        assert_eq!(from_c("web.back"), Lookup::Addresses(vec![ip("10.0.1.2")]));
    }

    #[test]
    fn pointers_inside_the_subnets_and_forwarded_outside() {
        let (dir, front, _) = directory();
        let ptr = |addr: &str| dir.lookup(&front.id, ip("10.0.0.3"), "", Some(ip(addr)));
        assert_eq!(ptr("10.0.0.2"), Lookup::Pointer("web.front".into()));
        assert_eq!(ptr("10.0.0.77"), Lookup::NoSuchName);
        assert_eq!(
            ptr("10.0.1.3"),
            Lookup::Elsewhere { forward: true },
            "not b's network"
        );
        assert_eq!(ptr("192.0.2.1"), Lookup::Elsewhere { forward: true });
    }

    #[test]
    fn a_removed_network_or_container_answers_nothing() {
        let (dir, front, _) = directory();
        let gone = dir.with_network(front.id, Some(NetNames::new(&front, std::iter::empty())));
        assert_eq!(
            gone.lookup(&front.id, ip("10.0.0.2"), "cache", None),
            Lookup::Elsewhere { forward: true }
        );
        assert_eq!(
            gone.lookup(&front.id, ip("10.0.0.2"), "cache.front", None),
            Lookup::NoSuchName
        );
        let no_clients = dir.with_clients(std::iter::empty());
        assert_eq!(
            no_clients.lookup(&front.id, ip("10.0.0.2"), "cache", None),
            Lookup::Refused
        );
    }
}
