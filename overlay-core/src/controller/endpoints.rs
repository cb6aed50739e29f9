//! Connecting and disconnecting containers, taking them over after a restart, and name lookups
//! that the agent cannot answer from its watched networks.

use std::collections::BTreeSet;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::Controller;
use super::attach::{Attachment, attachment};
use super::checks::connect_preconditions;
use super::inspect::ContainerInspect;
use super::networks::decode_all;
use super::rollback::Rollback;
use super::spec::ContainerSpec;
use crate::agent::local::{LocalEndpoint, entry_for, make_hosts_dir};
use crate::agent::{endpoint_removal, names_of};
use crate::dataplane::{AttachSpec, SandboxSpec};
use crate::error::{Error, ErrorKind, Result};
use crate::ipam::{AddressRequest, Family, Want};
use crate::model::{Endpoint, EndpointId, MacAddr, Network, NetworkId, Record, SCHEMA, keys};
use crate::store::{TxnOp, Version};

/// A container's endpoint, found through its uniqueness key ([`Controller::connected`]).
pub(super) struct Connected {
    /// The endpoint record's key.
    pub(super) key: String,
    /// The record's version, for a compare-and-swap.
    pub(super) version: Version,
    /// The record.
    pub(super) ep: Endpoint,
}

/// Adds what only this host knows of its endpoint `entry` to its inspect entry.
pub(super) fn with_gateway(
    mut out: ContainerInspect,
    entry: Option<&LocalEndpoint>,
    pool_prefix: u8,
) -> ContainerInspect {
    if let Some(g) = entry.and_then(|e| e.gateway.as_ref()) {
        out.gateway_address = format!("{}/{pool_prefix}", g.ip);
        out.ports = g.ports.iter().map(ToString::to_string).collect();
    }
    out
}

impl Controller {
    fn sandbox_spec(&self, net: &Network) -> Result<SandboxSpec> {
        Ok(self.agent()?.config().sandbox_spec(net))
    }

    /// The first `ethN` the container does not use on another network (its interfaces, on
    /// the overlay and the gateway, are in this host's own record of it).
    fn next_ifname(&self, container_id: &str, taken: Option<&str>) -> Result<String> {
        let agent = self.agent()?;
        let mut used: BTreeSet<String> = BTreeSet::new();
        for e in agent.local().of_container(container_id) {
            used.insert(e.ifname);
            used.extend(e.gateway.map(|g| g.ifname));
        }
        used.extend(taken.map(str::to_string));
        Ok((0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !used.contains(n))
            .unwrap_or_default())
    }

    async fn allocate(
        &self,
        network: &NetworkId,
        owner: EndpointId,
        undo: &mut Rollback,
        want: Want,
        sticky: Option<&str>,
    ) -> Result<IpNet> {
        let request = AddressRequest {
            want,
            owner: owner.to_string(),
            sticky: sticky.map(str::to_string),
        };
        let alloc = self.inner.ipam.request(network, &request).await?;
        undo.address(alloc.address.addr());
        Ok(alloc.address)
    }

    /// The endpoint's addresses from the global IPAM: the asked ones or any, IPv6 too when
    /// the network has it (the same ones again for a sticky name).
    async fn allocate_all(
        &self,
        net: &Network,
        c: &ContainerSpec,
        id: EndpointId,
        undo: &mut Rollback,
    ) -> Result<(Option<Ipv4Net>, Option<Ipv6Net>)> {
        let sticky = c.sticky.then_some(c.name.as_str());
        let v4 = self
            .allocate(
                &net.id,
                id,
                undo,
                c.ipv4
                    .map_or(Want::Any(Family::V4), |ip| Want::Specific(ip.into())),
                sticky,
            )
            .await?;
        let v6 = if net.ipv6 {
            let want = c
                .ipv6
                .map_or(Want::Any(Family::V6), |ip| Want::Specific(ip.into()));
            Some(self.allocate(&net.id, id, undo, want, sticky).await?)
        } else {
            None
        };
        let ipv4 = match v4 {
            IpNet::V4(a) => Some(a),
            IpNet::V6(_) => None,
        };
        let ipv6 = match v6 {
            Some(IpNet::V6(a)) => Some(a),
            _ => None,
        };
        Ok((ipv4, ipv6))
    }

    /// Connects a container to a network: an address from the global IPAM (the same one again
    /// for a sticky name), the host's sandbox if absent, a veth born in the container's
    /// namespace, and the endpoint record other hosts converge on. The answer says what the
    /// container got: its interface, MAC, addresses with their prefixes, and its way out.
    ///
    /// Cancel-safe: the work runs in a task of its own, so a caller that stops waiting (a
    /// dropped future, a Python Ctrl-C) leaves it to complete, or to roll back on a failure;
    /// [`Controller::close`] waits for it. Never half a connect.
    pub async fn connect(&self, network: &str, c: &ContainerSpec) -> Result<Attachment> {
        let (this, network, c) = (self.clone(), network.to_string(), c.clone());
        self.detached("connect", async move {
            this.connect_now(&network, &c, None).await
        })
        .await
    }

    /// Runs a mutation to its end in a task of its own, counted as in flight until then.
    pub(super) async fn detached<T: Send + 'static>(
        &self,
        op: &'static str,
        work: impl std::future::Future<Output = Result<T>> + Send + 'static,
    ) -> Result<T> {
        let in_flight = self.inner.in_flight.clone().read_owned().await;
        let task = tokio::spawn(async move {
            let _in_flight = in_flight;
            work.await
        });
        task.await.map_err(|e| {
            Error::internal(op, format!("the {op} task failed: {e}"))
                .with_hint("a bug: please report it with the agent's log")
        })?
    }

    /// Connects `c` to `network`. With `handoff`, its addresses are already held by that
    /// owner, which becomes the endpoint's id, and the interface is left in this host's
    /// namespace for the runtime to move ([`Controller::connect_handoff`]).
    pub(super) async fn connect_now(
        &self,
        network: &str,
        c: &ContainerSpec,
        handoff: Option<super::handoff::Plan>,
    ) -> Result<Attachment> {
        let op = "connect";
        c.validate()?;
        let (net, net_version) = self.lookup(network).await?;
        let gateway_pool = ipnet::IpNet::from(self.agent()?.config().gateway.pool);
        connect_preconditions(&net, c, gateway_pool)?;
        let netns = c.netns.path();
        if !netns.exists() {
            return Err(Error::new(
                ErrorKind::NotFound,
                op,
                format!("namespace {} does not exist", netns.display()),
            )
            .with_hint("start the container first, or pass the path of its network namespace"));
        }
        let store = &self.inner.store;
        if store.get(&keys::container(&net.id, &c.id)).await?.is_some() {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                op,
                format!(
                    "container {:?} is already connected to network {:?}",
                    c.id, net.name
                ),
            )
            .with_hint("disconnect it first"));
        }
        let ifname = match &c.ifname {
            Some(n) => n.clone(),
            None => self.next_ifname(&c.id, None)?,
        };
        let id = handoff.map_or_else(EndpointId::random, |p| p.owner);
        // Until the agent has taken the endpoint in, no disconnect, heal or collection of this
        // network on this host runs: a concurrent leave of the last other endpoint would
        // otherwise remove the sandbox under the new interface.
        let agent = self.agent()?;
        let _network = agent.lock_network(&net.id).await;
        // Each change of the steps registers its undo as soon as it is made; a failure
        // undoes them all, newest first (see [`Rollback`]), before it returns.
        let mut undo = Rollback::new(net.id, id);
        let result = self
            .connect_steps(&net, net_version, c, ifname, id, handoff, &mut undo)
            .await;
        if result.is_err() {
            undo.run(self).await;
        }
        match result {
            Ok(ep) => {
                // The entry was written by the steps above, under the network's lock.
                let Some(entry) = agent.local().get(&ep.id) else {
                    return Err(Error::internal(
                        op,
                        format!("the host state of endpoint {} is missing", ep.id),
                    )
                    .with_hint("a bug: please report it with the agent's log"));
                };
                let out = attachment(agent.config(), &net, &entry, &ep);
                agent.join(&net, ep).await;
                agent.write_files_now(&c.id);
                Ok(out)
            }
            Err(e) => Err(e.with_op(op)),
        }
    }

    /// Address, kernel state and endpoint record, in that order, each change registered in
    /// `undo` right after it is made.
    #[allow(clippy::too_many_arguments)]
    async fn connect_steps(
        &self,
        net: &Network,
        net_version: crate::store::Version,
        c: &ContainerSpec,
        ifname: String,
        id: EndpointId,
        plan: Option<super::handoff::Plan>,
        undo: &mut Rollback,
    ) -> Result<Endpoint> {
        let handoff = plan.is_some();
        let (ipv4, ipv6) = match plan {
            Some(_) => super::handoff::held_addresses(net, c)?,
            None => self.allocate_all(net, c, id, undo).await?,
        };
        let mac = match (plan.and_then(|p| p.mac), ipv4) {
            (Some(mac), _) => mac,
            (None, Some(a)) => MacAddr::from_ipv4(a.addr()),
            (None, None) => MacAddr::from_hash(id.as_bytes()),
        };
        let dp = &self.inner.dataplane;
        dp.ensure_sandbox(&self.sandbox_spec(net)?).await?;
        let netns = c.netns.path();
        undo.interface(netns.clone(), ifname.clone());
        let attach = AttachSpec {
            netns: netns.clone(),
            ifname: ifname.clone(),
            ipv4,
            ipv6,
            mac: Some(mac),
            mtu: None,
            handoff,
        };
        // The gateway's addresses and ports are the whole host's: held from choosing them
        // until this endpoint's entry holds them and the firewall has them (or, on a failure,
        // until they are given back). The container's two interfaces are made at once (each
        // is a veth pair born in its namespace).
        let agent = self.agent()?;
        undo.hold_gateway(agent.lock_gateway().await);
        // A runtime that moves the interface itself gives the container its way out too.
        let gw_ifname = if net.internal || handoff {
            None
        } else {
            Some(self.next_ifname(&c.id, Some(&ifname))?)
        };
        let (attached, gateway) = tokio::join!(dp.attach(&net.id, &attach), async {
            match &gw_ifname {
                Some(gw) => agent
                    .prepare_gateway(&c.id, &netns, gw, &c.publish)
                    .await
                    .map(Some),
                None => Ok(None),
            }
        });
        if gw_ifname.is_some() {
            let made = gateway
                .as_ref()
                .ok()
                .and_then(Option::as_ref)
                .filter(|p| p.made)
                .map(|p| p.gateway.ifname.clone());
            undo.gateway(netns.clone(), made);
        }
        attached?;
        let gateway = gateway?;
        // This host's own record of the container, before the cluster's: a crash between the
        // two leaves an entry without a record, which the next start undoes.
        let local = agent.local().clone();
        let mut entry = entry_for(id, net.id, &c.id, &netns, &ifname, c.hosts_file.as_deref())?;
        if let Some(h) = &c.hosts_file {
            entry.hosts_dir_made = make_hosts_dir(h)?;
        }
        if let Some(r) = &c.resolv_conf {
            entry.resolv_conf = Some(r.clone());
            entry.resolv_dir_made = make_hosts_dir(r)?;
        }
        entry.gateway = gateway.as_ref().map(|p| p.gateway.clone());
        entry.owner = c.owner.clone();
        entry.handoff = handoff;
        local.insert(entry)?;
        undo.entry();
        if gateway.is_some() {
            agent.publish_gateway().await?;
        }
        let ep = Endpoint {
            schema: SCHEMA,
            id,
            network: net.id,
            container_id: c.id.clone(),
            name: c.name.clone(),
            aliases: c.aliases.clone(),
            ipv4,
            ipv6,
            mac,
            host: self.inner.host.id.clone(),
            vtep: self.inner.host.advertise,
            sticky: c.sticky,
            ifname: ifname.clone(),
        };
        let own = id.to_string().into_bytes();
        let ops = [
            TxnOp::Check {
                key: keys::network(&net.id),
                version: Some(net_version),
            },
            TxnOp::Create {
                key: keys::container(&net.id, &c.id),
                value: own.clone(),
            },
            TxnOp::Create {
                key: keys::endpoint_name(&net.id, &c.name),
                value: own,
            },
            TxnOp::Create {
                key: keys::endpoint(&net.id, &id),
                value: ep.encode(),
            },
        ];
        if let Err(e) = self.inner.store.txn(&ops).await {
            return Err(self.explain_publish_failure(net, c, e).await);
        }
        Ok(ep)
    }

    /// Turns a failed endpoint transaction into the error a user can act on.
    async fn explain_publish_failure(&self, net: &Network, c: &ContainerSpec, e: Error) -> Error {
        let store = &self.inner.store;
        match e.kind() {
            ErrorKind::AlreadyExists => {
                if let Ok(Some(_)) = store.get(&keys::container(&net.id, &c.id)).await {
                    return Error::new(
                        ErrorKind::AlreadyExists,
                        "connect",
                        format!(
                            "container {:?} is already connected to network {:?}",
                            c.id, net.name
                        ),
                    );
                }
                Error::new(
                    ErrorKind::AlreadyExists,
                    "connect",
                    format!(
                        "another container named {:?} is on network {:?}",
                        c.name, net.name
                    ),
                )
                .with_hint("container names must be unique on a network; pick another name")
            }
            ErrorKind::Conflict => Error::new(
                ErrorKind::NotFound,
                "connect",
                format!("network {:?} was removed or is being removed", net.name),
            ),
            _ => e,
        }
    }

    /// Disconnects a container of this host from a network: the endpoint record goes (other
    /// hosts remove its peer and names), the veth goes, and the address is released — or kept
    /// reserved for the name if the endpoint was sticky. Cancel-safe as
    /// [`connect`](Controller::connect) is.
    pub async fn disconnect(&self, network: &str, container_id: &str) -> Result<()> {
        let (this, network, id) = (self.clone(), network.to_string(), container_id.to_string());
        self.detached("disconnect", async move {
            this.disconnect_now(&network, &id).await
        })
        .await
    }

    async fn disconnect_now(&self, network: &str, container_id: &str) -> Result<()> {
        let op = "disconnect";
        let (net, _) = self.lookup(network).await?;
        let store = &self.inner.store;
        let Connected { version, ep, .. } = self.connected(op, &net, container_id).await?;
        let agent = self.agent()?;
        let _network = agent.lock_network(&net.id).await;
        let ops = endpoint_removal(store.as_ref(), &ep, version).await?;
        store.txn(&ops).await.map_err(|e| e.with_op(op))?;
        self.release_local(&net, &ep).await;
        Ok(())
    }

    /// The endpoint of this host's container `container_id` on `net`, for `op`: NotFound if
    /// the container is not connected to it, InvalidArgument if it runs on another host.
    pub(super) async fn connected(
        &self,
        op: &'static str,
        net: &Network,
        container_id: &str,
    ) -> Result<Connected> {
        let store = &self.inner.store;
        let ckey = keys::container(&net.id, container_id);
        crate::store::validate_key(&ckey)
            .map_err(|_| Error::invalid(op, format!("container id {container_id:?} is invalid")))?;
        let not_connected = || {
            Error::new(
                ErrorKind::NotFound,
                op,
                format!(
                    "container {container_id:?} is not connected to network {:?}",
                    net.name
                ),
            )
        };
        let kv = crate::store::get_confirmed(store.as_ref(), &ckey)
            .await?
            .ok_or_else(not_connected)?;
        let id: EndpointId = String::from_utf8_lossy(&kv.value).parse()?;
        let key = keys::endpoint(&net.id, &id);
        let Some(ekv) = crate::store::get_confirmed(store.as_ref(), &key).await? else {
            // A uniqueness key without its endpoint: a leftover; clear it.
            let _ = store.compare_and_delete(&ckey, kv.version).await;
            return Err(not_connected());
        };
        let ep = Endpoint::decode(&key, &ekv.value)?;
        if ep.host != self.inner.host.id {
            return Err(Error::invalid(
                op,
                format!("container {container_id:?} runs on host {}", ep.host),
            )
            .with_hint(format!("{op} it on the host it runs on")));
        }
        Ok(Connected {
            key,
            version: ekv.version,
            ep,
        })
    }

    /// Undoes the kernel and IPAM side of a local endpoint whose record is gone.
    async fn release_local(&self, net: &Network, ep: &Endpoint) {
        let local = self.agent().ok().and_then(|a| a.local().get(&ep.id));
        if let Some(entry) = &local {
            self.detach_entry(entry).await;
        }
        // A handed-off endpoint's addresses are its runtime's, released through the IPAM face.
        let runtime_held = local.as_ref().is_some_and(|e| e.handoff);
        for ip in ep.addresses().filter(|_| !runtime_held) {
            if let Err(e) = self
                .inner
                .ipam
                .release(&net.id, ip, &ep.id.to_string())
                .await
            {
                tracing::warn!(%ip, error = %e, "could not release an address; the collector will");
            }
        }
        if let Ok(agent) = self.agent() {
            agent.leave(&net.id, &ep.id).await;
            if let Err(e) = agent.local().remove(&ep.id) {
                tracing::warn!(container = %ep.name, error = %e, "could not remove the endpoint's host state");
            }
            if let Some(entry) = &local {
                agent.release_gateway(entry).await;
            }
        }
    }

    /// Removes the container's interface, if its namespace is still the one connected.
    async fn detach_entry(&self, entry: &LocalEndpoint) {
        if !entry.namespace_alive() {
            return;
        }
        if let Err(e) = self
            .inner
            .dataplane
            .detach(&entry.network, &entry.netns, &entry.ifname)
            .await
        {
            tracing::warn!(container = %entry.container_id, error = %e, "could not remove the container's interface");
        }
    }

    /// Takes over this host's endpoints after a restart, from this host's own state: those
    /// whose container namespace is still the one connected are re-attached (idempotently)
    /// and watched again; the others are removed. A record naming this host that this host's
    /// state does not know was not made here (forged, or its state was lost with a reboot,
    /// which took the namespaces too): it is removed, and nothing it names is opened.
    pub(super) async fn recover(&self) -> Result<()> {
        let me = &self.inner.host.id;
        let agent = self.agent()?;
        let local = agent.local().clone();
        let listing = self.inner.store.list(keys::ENDPOINTS).await?;
        let mut records = std::collections::BTreeMap::new();
        for (ep, version) in decode_all::<Endpoint>(&listing.kvs) {
            if ep.host == *me {
                records.insert(ep.id, (ep, version));
            }
        }
        for entry in local.all() {
            if !records.contains_key(&entry.endpoint) {
                // Disconnected (or reclaimed) while the agent was down, or a connect that
                // crashed before publishing: undo what is left in the kernel.
                self.detach_entry(&entry).await;
                if let Err(e) = local.remove(&entry.endpoint) {
                    tracing::warn!(error = %e, "could not remove stale host state");
                }
                agent.release_gateway(&entry).await;
            }
        }
        for (ep, version) in records.into_values() {
            let Ok((net, _)) = self.lookup(&ep.network.to_string()).await else {
                continue;
            };
            let entry = local.get(&ep.id);
            let alive = entry.as_ref().is_some_and(LocalEndpoint::namespace_alive);
            if !alive {
                match &entry {
                    Some(_) => {
                        tracing::info!(container = %ep.name, "container went away while the agent was down")
                    }
                    None => tracing::warn!(
                        container = %ep.name,
                        endpoint = %ep.id,
                        "an endpoint record names this host but this host never made it; removing it"
                    ),
                }
                if let Ok(ops) = endpoint_removal(self.inner.store.as_ref(), &ep, version).await
                    && self.inner.store.txn(&ops).await.is_ok()
                {
                    self.release_local(&net, &ep).await;
                }
                continue;
            }
            let Some(entry) = entry else { continue };
            if entry.handoff {
                // The runtime moved its interface into the container; nothing to make again.
                agent.join(&net, ep).await;
                continue;
            }
            let attach = entry.attach_spec(&ep);
            let dp = &self.inner.dataplane;
            if let Err(e) = async {
                dp.ensure_sandbox(&self.sandbox_spec(&net)?).await?;
                dp.attach(&net.id, &attach).await
            }
            .await
            {
                tracing::warn!(container = %ep.name, error = %e, "could not restore the container's interface");
            }
            agent.join(&net, ep).await;
        }
        agent.restore_gateway().await;
        Ok(())
    }

    /// Name lookup over the whole store, for names on networks without local containers.
    pub(super) async fn resolve_from_store(&self, name: &str) -> Result<Vec<IpAddr>> {
        let store = &self.inner.store;
        let nets = store.list(keys::NETWORKS).await?;
        let mut out = BTreeSet::new();
        for (net, _) in decode_all::<Network>(&nets.kvs) {
            let eps = store.list(&keys::endpoints(&net.id)).await?;
            for (ep, _) in decode_all::<Endpoint>(&eps.kvs) {
                if names_of(&ep, &net.name).any(|n| n == name) {
                    out.extend(ep.addresses());
                }
            }
        }
        if out.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                "resolve",
                format!("no container answers to {name:?}"),
            )
            .with_hint("use a container name or alias, or name.network"));
        }
        Ok(out.into_iter().collect())
    }
}
