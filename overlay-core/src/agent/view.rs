//! A host's view of one network's endpoints, kept from a listing plus watch deltas.
//!
//! Records that do not decode (corrupt, foreign, newer schema) are logged with their key and
//! skipped: one bad record must never stop an agent or another host's convergence.

use std::collections::{BTreeMap, BTreeSet};

use crate::dataplane::Peer;
use crate::model::keys::endpoint as endpoint_key;
use crate::model::{Endpoint, EndpointId, HostId, NetworkId, Record};
use crate::store::{KeyValue, WatchEvent};

/// What changed in a view after applying an event or a fresh listing.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Change {
    /// Endpoints that appeared or changed.
    pub(crate) up: Vec<Endpoint>,
    /// Endpoints that went away (as they were).
    pub(crate) down: Vec<Endpoint>,
    /// The store lost history: the caller must re-list and [`NetworkView::replace`].
    pub(crate) resync: bool,
}

impl Change {
    /// Whether the endpoint set changed (names or peers may need an update).
    pub(crate) fn changed(&self) -> bool {
        !self.up.is_empty() || !self.down.is_empty()
    }
}

/// Endpoints of one network, by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct NetworkView {
    endpoints: BTreeMap<EndpointId, Endpoint>,
}

impl NetworkView {
    /// Decodes an endpoint record, logging and dropping what does not decode or belongs to
    /// another network.
    fn decode(network: &NetworkId, kv: &KeyValue) -> Option<Endpoint> {
        match Endpoint::decode(&kv.key, &kv.value) {
            Ok(ep) if ep.network == *network && kv.key == endpoint_key(network, &ep.id) => Some(ep),
            Ok(_) => {
                tracing::warn!(key = %kv.key, "skipping an endpoint record filed under the wrong key");
                None
            }
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping an endpoint record");
                None
            }
        }
    }

    /// Replaces the whole view with a fresh listing.
    pub(crate) fn replace(&mut self, network: &NetworkId, kvs: &[KeyValue]) -> Change {
        let fresh: BTreeMap<_, _> = kvs
            .iter()
            .filter_map(|kv| Self::decode(network, kv))
            .map(|ep| (ep.id, ep))
            .collect();
        let up = fresh
            .values()
            .filter(|ep| self.endpoints.get(&ep.id) != Some(*ep))
            .cloned()
            .collect();
        let down = self
            .endpoints
            .values()
            .filter(|ep| !fresh.contains_key(&ep.id))
            .cloned()
            .collect();
        self.endpoints = fresh;
        Change {
            up,
            down,
            resync: false,
        }
    }

    /// Adds or replaces an endpoint this host just published, ahead of its watch event;
    /// returns whether the view changed (so the caller reports it: the watch will not).
    pub(crate) fn insert(&mut self, ep: &Endpoint) -> bool {
        self.endpoints.insert(ep.id, ep.clone()).as_ref() != Some(ep)
    }

    /// Applies one watch event.
    pub(crate) fn apply(&mut self, network: &NetworkId, event: &WatchEvent) -> Change {
        match event {
            WatchEvent::Put(kv) => match Self::decode(network, kv) {
                Some(ep) if self.endpoints.get(&ep.id) == Some(&ep) => Change::default(),
                Some(ep) => {
                    self.endpoints.insert(ep.id, ep.clone());
                    Change {
                        up: vec![ep],
                        ..Change::default()
                    }
                }
                // A record that stopped decoding no longer describes a live endpoint.
                None => self.remove_key(&kv.key),
            },
            WatchEvent::Delete { key, .. } => self.remove_key(key),
            WatchEvent::Resync { .. } => Change {
                resync: true,
                ..Change::default()
            },
        }
    }

    /// Removes the endpoint stored under `key`.
    pub(crate) fn remove_key(&mut self, key: &str) -> Change {
        let id = key
            .rsplit('/')
            .next()
            .and_then(|s| s.parse::<EndpointId>().ok());
        let gone = id.and_then(|id| self.endpoints.remove(&id));
        Change {
            down: gone.into_iter().collect(),
            ..Change::default()
        }
    }

    /// The endpoint `id`, if the view has it.
    pub(crate) fn get(&self, id: &EndpointId) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    /// Every endpoint, local and remote.
    pub(crate) fn endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// The peers this host must program: endpoints on other hosts that are alive.
    pub(crate) fn remote_peers(&self, me: &HostId, live: &BTreeSet<HostId>) -> BTreeSet<Peer> {
        self.endpoints
            .values()
            .filter(|ep| ep.host != *me && live.contains(&ep.host))
            .flat_map(|ep| {
                ep.addresses().map(|ip| Peer {
                    ip,
                    mac: ep.mac,
                    vtep: ep.vtep,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::MacAddr;
    use crate::model::SCHEMA;
    use crate::model::keys::endpoints as endpoints_prefix;

    fn ep(net: NetworkId, host: &str, ip: &str) -> Endpoint {
        let ipv4: ipnet::Ipv4Net = ip.parse().unwrap();
        Endpoint {
            schema: SCHEMA,
            id: EndpointId::random(),
            network: net,
            container_id: format!("c-{ip}"),
            name: format!("n{}", ipv4.addr().octets()[3]),
            aliases: vec![],
            ipv4: Some(ipv4),
            ipv6: None,
            mac: MacAddr::from_ipv4(ipv4.addr()),
            host: HostId::new(host).unwrap(),
            vtep: if host == "h1" {
                "192.0.2.1"
            } else {
                "192.0.2.2"
            }
            .parse()
            .unwrap(),
            sticky: false,
            ifname: "eth0".into(),
        }
    }

    fn kv(e: &Endpoint, version: u64) -> KeyValue {
        KeyValue {
            key: endpoint_key(&e.network, &e.id),
            value: e.encode(),
            version,
        }
    }

    #[test]
    fn deltas_and_bad_records() {
        let net = NetworkId::random();
        let (a, b) = (ep(net, "h1", "10.0.0.2/24"), ep(net, "h2", "10.0.0.3/24"));
        let mut v = NetworkView::default();
        assert_eq!(v.replace(&net, &[kv(&a, 1)]).up, vec![a.clone()]);
        assert!(
            !v.replace(&net, &[kv(&a, 1)]).changed(),
            "same listing changes nothing"
        );
        let put = WatchEvent::Put(kv(&b, 2));
        assert_eq!(
            v.apply(&net, &put),
            Change {
                up: vec![b.clone()],
                ..Change::default()
            }
        );
        assert!(
            !v.apply(&net, &put).changed(),
            "a repeated event changes nothing"
        );

        let me = HostId::new("h1").unwrap();
        let live: BTreeSet<_> = [HostId::new("h1").unwrap(), HostId::new("h2").unwrap()].into();
        let peers = v.remote_peers(&me, &live);
        assert_eq!(peers.len(), 1);
        assert_eq!(peers.first().unwrap().vtep, b.vtep);
        assert!(
            v.remote_peers(&me, &[me.clone()].into()).is_empty(),
            "dead hosts give no peers"
        );

        // Corrupt, foreign and newer-schema records are skipped, never fatal.
        let foreign = KeyValue {
            key: format!("{}/zzz", endpoints_prefix(&net)),
            value: b"{".to_vec(),
            version: 3,
        };
        assert!(!v.apply(&net, &WatchEvent::Put(foreign)).changed());
        let mut newer = serde_json::to_value(&a).unwrap();
        newer["schema"] = 99.into();
        let newer = KeyValue {
            key: endpoint_key(&net, &a.id),
            value: serde_json::to_vec(&newer).unwrap(),
            version: 4,
        };
        let gone = v.apply(&net, &WatchEvent::Put(newer));
        assert_eq!(gone.down, vec![a], "an endpoint that stops decoding goes");
        assert_eq!(v.endpoints().count(), 1);

        let del = WatchEvent::Delete {
            key: endpoint_key(&net, &b.id),
            version: 5,
        };
        assert_eq!(v.apply(&net, &del).down, vec![b]);
        assert_eq!(v.endpoints().count(), 0);
        assert!(
            v.apply(
                &net,
                &WatchEvent::Resync {
                    reason: "gap".into()
                }
            )
            .resync
        );
    }
}
