//! The agent's side of the embedded resolver ([`crate::dns`]): a resolver per network with
//! containers on this host, started when its sandbox is and started again when the sandbox is
//! rebuilt in a new namespace; and the names it serves, made again from the views whenever a
//! network is reconciled.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{Shared, State};
use crate::dataplane::{Netns, NetnsId};
use crate::dns::names::NetNames;
use crate::dns::server::{Handler, Names, NetworkResolver, ResolverThread};
use crate::dns::upstream::Upstreams;
use crate::error::Result;
use crate::model::{Network, NetworkId};

/// How the host's resolver forwards names that are not its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DnsSettings {
    /// The resolvers names are forwarded to, tried in order.
    pub(crate) upstreams: Vec<SocketAddr>,
    /// The namespace queries are forwarded from (the host's); `None`: the agent's own.
    pub(crate) host_netns: Option<std::path::PathBuf>,
}

/// The resolvers of this host's networks and the names they serve.
pub(super) struct Resolvers {
    names: Arc<Names>,
    upstreams: Arc<Upstreams>,
    running: tokio::sync::Mutex<HashMap<NetworkId, (NetworkResolver, NetnsId)>>,
    thread: ResolverThread,
}

impl Resolvers {
    pub(super) fn new(settings: &DnsSettings) -> Result<Resolvers> {
        let host = settings
            .host_netns
            .as_deref()
            .map(Netns::open_path)
            .transpose()?;
        Ok(Resolvers {
            names: Arc::default(),
            upstreams: Arc::new(Upstreams::new(settings.upstreams.clone())),
            running: tokio::sync::Mutex::default(),
            thread: ResolverThread::start(host.as_ref())?,
        })
    }
}

/// The address `net`'s resolver answers on, with its subnet's prefix: the IPv4 gateway (a
/// subnet too small for one has no resolver).
fn resolver_net(net: &Network) -> Option<IpNet> {
    net.pools
        .iter()
        .filter(|p| p.subnet.addr().is_ipv4())
        .find_map(|p| IpNet::new(p.gateway?, p.subnet.prefix_len()).ok())
}

/// The address `net`'s resolver answers on.
pub(crate) fn resolver_address(net: &Network) -> Option<IpAddr> {
    resolver_net(net).map(|n| n.addr())
}

/// The addresses of `net`'s sandbox bridge: the resolver's.
pub(super) fn bridge_addresses(net: &Network) -> Vec<IpNet> {
    resolver_net(net).into_iter().collect()
}

/// Makes the names of network `id` (and the list of local containers) current, from the
/// views in `st`. Cheap enough to run at every reconcile: it walks one network's endpoints
/// and this host's own.
pub(super) fn refresh(shared: &Shared, st: &State, id: &NetworkId) {
    let Some(dns) = &shared.dns else { return };
    let live = shared.live.borrow();
    // A network already served is brought up to date in place; only a new or gone one makes
    // a new directory.
    let known = dns.names.current().network(id);
    let names = match (st.nets.get(id), known) {
        (Some(ns), Some(names)) => {
            let living = ns.view.endpoints().filter(|e| live.contains(&e.host));
            names.sync(&ns.network, living);
            Some(names)
        }
        (Some(ns), None) => {
            let living = ns.view.endpoints().filter(|e| live.contains(&e.host));
            Some(Arc::new(NetNames::new(&ns.network, living)))
        }
        (None, _) => None,
    };
    let local: Vec<(&str, NetworkId, Vec<IpAddr>)> = st
        .nets
        .values()
        .flat_map(|ns| ns.view.endpoints().filter(|e| shared.is_local(e)))
        .map(|e| (e.container_id.as_str(), e.network, e.addresses().collect()))
        .collect();
    dns.names
        .update(|d| d.with_network(*id, names).with_clients(local.into_iter()));
}

/// Starts `net`'s resolver in its sandbox, unless one runs in the sandbox's namespace already.
pub(super) async fn ensure(shared: &Shared, net: &Network) {
    let Some(dns) = &shared.dns else { return };
    let Some(ip) = resolver_address(net) else {
        return;
    };
    let dp = &shared.dataplane;
    let current = match dp.sandbox_netns(&net.id).await {
        Ok(Some(ns)) => ns,
        Ok(None) => return,
        Err(e) => {
            tracing::warn!(network = %net.name, error = %e, "cannot find the sandbox for its resolver");
            return;
        }
    };
    let mut running = dns.running.lock().await;
    if running.get(&net.id).is_some_and(|(_, ns)| *ns == current) {
        return;
    }
    if let Some((old, _)) = running.remove(&net.id) {
        old.stop().await;
    }
    let started = async {
        let sockets = dp
            .sandbox_sockets(&net.id, SocketAddr::new(ip, crate::dns::PORT))
            .await?;
        let handler = Handler {
            network: net.id,
            names: dns.names.clone(),
            upstreams: dns.upstreams.clone(),
        };
        let r = NetworkResolver::start(&dns.thread, sockets.udp, sockets.tcp, handler)?;
        Ok::<_, crate::Error>((r, sockets.netns))
    };
    match started.await {
        Ok((r, ns)) => {
            tracing::debug!(network = %net.name, address = %r.address(), "resolver started");
            running.insert(net.id, (r, ns));
        }
        Err(e) => {
            tracing::warn!(network = %net.name, error = %e, "cannot start the network's resolver")
        }
    }
}

/// Stops network `id`'s resolver, keeping its names, before its sandbox is rebuilt: the
/// resolver's sockets would keep the lost namespace alive, and with it the vxlan device whose
/// VNI the new sandbox needs. [`ensure`] starts it again.
pub(super) async fn release(shared: &Shared, id: &NetworkId) {
    let Some(dns) = &shared.dns else { return };
    let old = dns.running.lock().await.remove(id);
    if let Some((r, _)) = old {
        r.stop().await;
    }
}

/// Stops network `id`'s resolver and forgets its names (the network left this host).
pub(super) async fn stop(shared: &Shared, id: &NetworkId) {
    release(shared, id).await;
    if let Some(dns) = &shared.dns {
        dns.names.update(|d| d.without_network(id));
    }
}

/// The `resolv.conf` of a local container that joined `nets` on this host: the resolver
/// address and search domain of each that has a resolver; `None` when resolvers are off.
pub(super) fn resolv_conf_for(shared: &Shared, nets: &[&Network]) -> Option<String> {
    shared.dns.as_ref()?;
    let mut servers = Vec::new();
    let mut search = Vec::new();
    for net in nets {
        if let Some(ip) = resolver_address(net) {
            servers.push(ip);
            search.push(net.name.clone());
        }
    }
    Some(crate::dns::resolv::render(&servers, &search))
}
