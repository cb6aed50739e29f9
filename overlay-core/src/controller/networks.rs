//! Network lifecycle: create (name and VNI claimed atomically), list, look up, inspect, remove.

use std::sync::Arc;
use std::time::Duration;

use super::Controller;
use super::inspect::{NetworkInspect, NetworkSummary};
use super::spec::{AddressPool, NetworkOptions, validate_network_name};
use crate::error::{Error, ErrorKind, Result};
use crate::ipam::{DefaultPool, Family, Ipam, IpamConfig, PoolRequest, StoreIpam};
use crate::model::HostId;
use crate::model::{Claim, Endpoint, Network, NetworkId, PoolConfig, Record, SCHEMA, Vni, keys};
use crate::store::KvStore;
use crate::store::{TxnOp, Version};

/// VNIs handed out when a network asks for none start here, as Docker's did.
const FIRST_AUTO_VNI: u32 = 256;

/// A name or VNI claim whose network record has not appeared after this long belongs to a
/// creator that died half-way, and may be taken over.
const STALE_CLAIM: Duration = Duration::from_secs(60);

/// How often a create retries after losing an automatic VNI to another host.
const CREATE_ATTEMPTS: usize = 8;

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Decodes every record of a listing, logging and skipping what does not decode.
pub(crate) fn decode_all<T: Record>(kvs: &[crate::store::KeyValue]) -> Vec<(T, Version)> {
    kvs.iter()
        .filter_map(|kv| match T::decode(&kv.key, &kv.value) {
            Ok(r) => Some((r, kv.version)),
            Err(e) => {
                tracing::warn!(key = %kv.key, error = %e, "skipping a record");
                None
            }
        })
        .collect()
}

fn pool_requests(opts: &NetworkOptions) -> Result<Vec<PoolRequest>> {
    let op = "create network";
    let mut requests: Vec<PoolRequest> = opts
        .subnets
        .iter()
        .map(|s| {
            PoolRequest::Subnet(PoolConfig {
                subnet: s.subnet,
                gateway: s.gateway,
                ip_range: s.ip_range,
                aux_addresses: s.aux_addresses.clone(),
            })
        })
        .collect();
    let has = |f: Family| opts.subnets.iter().any(|s| Family::of_net(&s.subnet) == f);
    if opts.ipv6 && !has(Family::V6) {
        return Err(
            Error::invalid(op, "IPv6 is enabled but no IPv6 subnet is given")
                .with_hint("add an IPv6 subnet such as fd00:1::/64"),
        );
    }
    if !opts.ipv6 && has(Family::V6) {
        return Err(
            Error::invalid(op, "an IPv6 subnet is given but IPv6 is not enabled")
                .with_hint("set ipv6 to true, or drop the IPv6 subnet"),
        );
    }
    if !has(Family::V4) {
        requests.insert(0, PoolRequest::Default(Family::V4));
    }
    Ok(requests)
}

/// The IPAM settings for a list of default pools (none: Docker's 10.0.0.0/8 in /24s).
pub(super) fn ipam_config(default_pools: Option<&[AddressPool]>) -> IpamConfig {
    let default_pools = match default_pools {
        Some(list) => list
            .iter()
            .map(|p| DefaultPool {
                base: p.base,
                len: p.size,
            })
            .collect(),
        None => vec![DefaultPool::docker_v4()],
    };
    IpamConfig {
        default_pools,
        ..IpamConfig::default()
    }
}

/// Cluster-wide network administration, over the store and the IPAM only: no host agent, no
/// kernel state. What a command line uses for `network create|ls|inspect|rm`; every
/// [`Controller`] has one.
#[derive(Clone)]
pub struct Networks {
    store: Arc<dyn KvStore>,
    ipam: Arc<dyn Ipam>,
}

impl std::fmt::Debug for Networks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networks").finish_non_exhaustive()
    }
}

impl Networks {
    /// Administration over an open store and IPAM.
    pub fn new(store: Arc<dyn KvStore>, ipam: Arc<dyn Ipam>) -> Self {
        Networks { store, ipam }
    }

    /// Opens the cluster store at `url` for network administration; networks created without
    /// a subnet take theirs from `default_pools` (default: Docker's 10.0.0.0/8 in /24s).
    pub async fn open(url: &str, default_pools: Option<&[AddressPool]>) -> Result<Networks> {
        let store = crate::store::connect_str(url).await?;
        let cfg = ipam_config(default_pools);
        // Pool claims do not depend on the host: any id will do for an administrator.
        let admin = HostId::new("admin")?;
        let ipam: Arc<dyn Ipam> = Arc::new(StoreIpam::new(store.clone(), admin, cfg));
        Ok(Networks { store, ipam })
    }

    /// The store this administration works on.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// Closes the store session.
    pub async fn close(&self) -> Result<()> {
        self.store.close().await
    }

    /// Creates an overlay network visible to every host with the same id. Name and VNI are
    /// claimed in one store transaction, so two hosts racing one name get exactly one network
    /// and one [`ErrorKind::AlreadyExists`].
    pub async fn create_network(
        &self,
        name: &str,
        opts: &NetworkOptions,
    ) -> Result<NetworkInspect> {
        let op = "create network";
        validate_network_name(name)?;
        let wanted_vni = opts.vni.map(Vni::new).transpose()?;
        if let Some(mtu) = opts.mtu {
            crate::model::checked_mtu(op, mtu)?;
        }
        let requests = pool_requests(opts)?;
        let id = NetworkId::random();
        let vni = self.claim_name_and_vni(name, id, wanted_vni).await?;
        let store = &self.store;
        let pools = match self.ipam.add_pools(&id, name, &requests).await {
            Ok(p) => p,
            Err(e) => {
                self.release_claims(name, vni, id).await;
                return Err(e.with_op(op));
            }
        };
        let network = Network {
            schema: SCHEMA,
            id,
            name: name.to_string(),
            driver: "overlay".into(),
            vni,
            pools,
            ipv6: opts.ipv6,
            internal: opts.internal,
            labels: opts.labels.clone(),
            options: Default::default(),
            mtu: opts.mtu,
            created_ms: now_ms(),
            removing: false,
        };
        if let Err(e) = store.create(&keys::network(&id), &network.encode()).await {
            let _ = self.ipam.release_pools(&id).await;
            self.release_claims(name, vni, id).await;
            return Err(e.with_op(op));
        }
        Ok(NetworkInspect::build(&network, &[]))
    }

    /// Claims `names/<name>` and `vnis/<vni>` together; picks the lowest free VNI from 256 when
    /// none is wanted, retrying if another host takes it first.
    async fn claim_name_and_vni(
        &self,
        name: &str,
        id: NetworkId,
        wanted: Option<Vni>,
    ) -> Result<Vni> {
        let op = "create network";
        let store = &self.store;
        for _ in 0..CREATE_ATTEMPTS {
            let vni = match wanted {
                Some(v) => v,
                None => self.next_free_vni().await?,
            };
            let claim = Claim {
                schema: SCHEMA,
                network: id,
                created_ms: now_ms(),
            }
            .encode();
            let ops = [
                TxnOp::Create {
                    key: keys::name(name),
                    value: claim.clone(),
                },
                TxnOp::Create {
                    key: keys::vni(vni),
                    value: claim,
                },
            ];
            match store.txn(&ops).await {
                Ok(_) => return Ok(vni),
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e.with_op(op)),
            }
            // Find out which claim is taken, and whether its holder is alive or a crash leftover.
            if let Some(holder) = self.live_claim(&keys::name(name)).await? {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    op,
                    format!(
                        "a network named {name:?} already exists (id {})",
                        holder.short()
                    ),
                ));
            }
            if let Some(holder) = self.live_claim(&keys::vni(vni)).await?
                && wanted.is_some()
            {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    op,
                    format!("VNI {vni} is already used by network {}", holder.short()),
                )
                .with_hint("pick another VNI, or leave it out to get a free one"));
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            op,
            format!(
                "could not claim a VNI for {name:?}: \
            other hosts kept taking the free ones"
            ),
        ))
    }

    /// The network holding a claim, `None` if the claim is absent or was a stale leftover
    /// (which is then removed so the next attempt can take it).
    async fn live_claim(&self, key: &str) -> Result<Option<NetworkId>> {
        let store = &self.store;
        let Some(kv) = store.get(key).await? else {
            return Ok(None);
        };
        let claim = match Claim::decode(key, &kv.value) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(key, error = %e, "replacing an unreadable claim");
                let _ = store.compare_and_delete(key, kv.version).await;
                return Ok(None);
            }
        };
        if store.get(&keys::network(&claim.network)).await?.is_some() {
            return Ok(Some(claim.network));
        }
        let age = now_ms().saturating_sub(claim.created_ms);
        if age < u64::try_from(STALE_CLAIM.as_millis()).unwrap_or(u64::MAX) {
            // Another host is creating that network right now.
            return Ok(Some(claim.network));
        }
        tracing::warn!(key, network = %claim.network.short(), "taking over a stale claim");
        let _ = store.compare_and_delete(key, kv.version).await;
        Ok(None)
    }

    async fn next_free_vni(&self) -> Result<Vni> {
        let listing = self.store.list(keys::VNIS).await?;
        let used: std::collections::BTreeSet<u32> = listing
            .kvs
            .iter()
            .filter_map(|kv| kv.key.rsplit('/').next()?.parse().ok())
            .collect();
        let free = (FIRST_AUTO_VNI..=Vni::MAX).find(|v| !used.contains(v));
        free.map(Vni::new).unwrap_or_else(|| {
            Err(
                Error::new(ErrorKind::Conflict, "create network", "every VNI is in use")
                    .with_hint("remove unused networks"),
            )
        })
    }

    /// Undoes the claims of a create that failed half-way; best effort, a leftover is taken
    /// over later as stale.
    async fn release_claims(&self, name: &str, vni: Vni, id: NetworkId) {
        let store = &self.store;
        for key in [keys::name(name), keys::vni(vni)] {
            if let Ok(Some(kv)) = store.get(&key).await
                && Claim::decode(&key, &kv.value).is_ok_and(|c| c.network == id)
            {
                let _ = store.compare_and_delete(&key, kv.version).await;
            }
        }
    }

    /// Every network of the cluster, as `docker network ls` shows them, sorted by name. Current
    /// on every backend: a network another host created a moment ago is listed (the seed's
    /// `network ls` on host 2), so a store whose reads may lag is synced first.
    pub async fn networks(&self) -> Result<Vec<NetworkSummary>> {
        if !self.store.capabilities().current_reads {
            self.store.sync().await?;
        }
        let listing = self.store.list(keys::NETWORKS).await?;
        let mut rows: Vec<_> = decode_all::<Network>(&listing.kvs)
            .iter()
            .filter(|(n, _)| !n.removing)
            .map(|(n, _)| NetworkSummary::of(n))
            .collect();
        rows.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(rows)
    }

    /// Finds a network by name, full id, or unique id prefix, with its record's version. A
    /// network another host created a moment ago is found on every backend: on a store whose
    /// reads may lag, "not found" is asked again after a sync (the store's read contract).
    pub(crate) async fn lookup(&self, name_or_id: &str) -> Result<(Network, Version)> {
        match self.lookup_once(name_or_id).await {
            Err(e)
                if e.kind() == ErrorKind::NotFound && !self.store.capabilities().current_reads =>
            {
                self.store.sync().await?;
                self.lookup_once(name_or_id).await
            }
            found => found,
        }
    }

    async fn lookup_once(&self, name_or_id: &str) -> Result<(Network, Version)> {
        let op = "find network";
        let store = &self.store;
        let not_found = || {
            Error::new(
                ErrorKind::NotFound,
                op,
                format!("no network named or with id {name_or_id:?}"),
            )
            .with_hint("list networks to see their names and ids")
        };
        if name_or_id.is_empty() {
            return Err(Error::invalid(op, "the network name or id is empty"));
        }
        let get = |id: NetworkId| async move {
            let key = keys::network(&id);
            match store.get(&key).await? {
                Some(kv) => Network::decode(&key, &kv.value).map(|n| Some((n, kv.version))),
                None => Ok(None),
            }
        };
        if let Ok(id) = name_or_id.parse::<NetworkId>() {
            return get(id).await?.ok_or_else(not_found);
        }
        if crate::model::is_plain_name(name_or_id, 128)
            && let Some(kv) = store.get(&keys::name(name_or_id)).await?
            && let Ok(claim) = Claim::decode(&kv.key, &kv.value)
            && let Some((n, v)) = get(claim.network).await?
            && n.name == name_or_id
        {
            return Ok((n, v));
        }
        if name_or_id.len() < 64 && name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let prefix = name_or_id.to_ascii_lowercase();
            let listing = store.list(keys::NETWORKS).await?;
            let mut hits: Vec<_> = decode_all::<Network>(&listing.kvs)
                .into_iter()
                .filter(|(n, _)| n.id.to_string().starts_with(&prefix))
                .collect();
            return match hits.len() {
                0 => Err(not_found()),
                1 => Ok(hits.remove(0)),
                n => Err(Error::invalid(
                    op,
                    format!("id prefix {name_or_id:?} matches {n} networks"),
                )
                .with_hint("give more digits of the id, or the name")),
            };
        }
        Err(not_found())
    }

    /// The endpoints of a network on every host.
    pub(crate) async fn endpoints_of(&self, id: &NetworkId) -> Result<Vec<(Endpoint, Version)>> {
        let listing = self.store.list(&keys::endpoints(id)).await?;
        Ok(decode_all::<Endpoint>(&listing.kvs))
    }

    /// `docker network inspect`: the network and every container on it, on every host.
    pub async fn inspect(&self, name_or_id: &str) -> Result<NetworkInspect> {
        let (network, _) = self.lookup(name_or_id).await?;
        let endpoints: Vec<Endpoint> = self
            .endpoints_of(&network.id)
            .await?
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        Ok(NetworkInspect::build(&network, &endpoints))
    }

    /// Removes a network and returns its last record. Refused with [`ErrorKind::Conflict`]
    /// while containers are connected (they are listed). The network is first marked as being
    /// removed, so a connect racing the removal fails instead of leaving an endpoint behind.
    pub async fn remove_network(&self, name_or_id: &str) -> Result<Network> {
        let op = "remove network";
        let store = &self.store;
        let (mut network, mut version) = self.lookup(name_or_id).await?;
        let key = keys::network(&network.id);
        let was_removing = network.removing;
        if !network.removing {
            network.removing = true;
            version = store
                .compare_and_swap(&key, &network.encode(), version)
                .await
                .map_err(|e| {
                    e.with_op(op)
                        .with_hint("the network changed meanwhile; retry")
                })?;
        }
        let endpoints = self.endpoints_of(&network.id).await?;
        if !endpoints.is_empty() {
            if !was_removing {
                network.removing = false;
                let _ = store
                    .compare_and_swap(&key, &network.encode(), version)
                    .await;
            }
            let names: Vec<String> = endpoints
                .iter()
                .map(|(e, _)| format!("{} on {}", e.name, e.host))
                .collect();
            return Err(Error::new(
                ErrorKind::Conflict,
                op,
                format!(
                    "network {:?} still has containers: {}",
                    network.name,
                    names.join(", ")
                ),
            )
            .with_hint("disconnect them first"));
        }
        match self.ipam.release_pools(&network.id).await {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e.with_op(op)),
        }
        let mut ops = vec![TxnOp::DeleteIf { key, version }];
        for claim_key in [keys::name(&network.name), keys::vni(network.vni)] {
            if let Some(kv) = store.get(&claim_key).await?
                && Claim::decode(&claim_key, &kv.value).is_ok_and(|c| c.network == network.id)
            {
                ops.push(TxnOp::DeleteIf {
                    key: claim_key,
                    version: kv.version,
                });
            }
        }
        store.txn(&ops).await.map_err(|e| e.with_op(op))?;
        Ok(network)
    }
}

impl Controller {
    /// Creates an overlay network visible to every host with the same id; see
    /// [`Networks::create_network`].
    pub async fn create_network(
        &self,
        name: &str,
        opts: &NetworkOptions,
    ) -> Result<NetworkInspect> {
        self.inner.networks.create_network(name, opts).await
    }

    /// Every network of the cluster, sorted by name.
    pub async fn networks(&self) -> Result<Vec<NetworkSummary>> {
        self.inner.networks.networks().await
    }

    /// `docker network inspect`: the network and every container on it, on every host.
    pub async fn inspect(&self, name_or_id: &str) -> Result<NetworkInspect> {
        let mut out = self.inner.networks.inspect(name_or_id).await?;
        // What only this host knows of its own containers: their gateway address and ports.
        if let Ok(agent) = self.agent() {
            let prefix = agent.config().gateway.pool.prefix_len();
            let local = agent.local().all();
            for c in out.containers.values_mut() {
                let entry = local
                    .iter()
                    .find(|e| e.endpoint.to_string() == c.endpoint_id);
                *c = super::endpoints::with_gateway(c.clone(), entry, prefix);
            }
        }
        Ok(out)
    }

    /// Removes a network (refused while containers are connected) and this host's sandbox
    /// of it, if one was left behind.
    pub async fn remove_network(&self, name_or_id: &str) -> Result<()> {
        let network = self.inner.networks.remove_network(name_or_id).await?;
        if let Err(e) = self.inner.dataplane.remove_sandbox(&network.id).await {
            tracing::warn!(network = %network.name, error = %e, "could not remove a leftover sandbox");
        }
        Ok(())
    }

    pub(crate) async fn lookup(&self, name_or_id: &str) -> Result<(Network, Version)> {
        self.inner.networks.lookup(name_or_id).await
    }
}
