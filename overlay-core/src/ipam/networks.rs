//! Claiming and releasing a network's pools through the registry key.

use ipnet::IpNet;

use super::PoolRequest;
use super::allocator::StoreIpam;
use super::defaults::{overlaps, pick_default};
use super::pool::{Family, Pool};
use super::records::{self, NetworkPools, REGISTRY_KEY, RegisteredPool, Registry};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{NetworkId, PoolConfig, SCHEMA};
use crate::store::TxnOp;

const OP_ADD: &str = "add address pools";
const OP_RELEASE: &str = "release address pools";

fn describe(p: &RegisteredPool) -> String {
    format!(
        "{} of network {:?} ({})",
        p.subnet,
        p.name,
        p.network.short()
    )
}

impl StoreIpam {
    pub(super) async fn add_pools_impl(
        &self,
        net: &NetworkId,
        name: &str,
        requests: &[PoolRequest],
    ) -> Result<Vec<PoolConfig>> {
        if requests.is_empty() {
            return Err(Error::invalid(
                OP_ADD,
                format!("no pool was requested for network {name:?}"),
            )
            .with_hint("request at least one pool: a subnet, or a default pool of a family"));
        }
        // Validate the explicit pools before any I/O, and check they do not overlap each other.
        let mut explicit: Vec<Option<Pool>> = Vec::with_capacity(requests.len());
        for r in requests {
            explicit.push(match r {
                PoolRequest::Subnet(cfg) => {
                    Some(Pool::new(cfg, self.block_bits(cfg)).map_err(|e| e.with_op(OP_ADD))?)
                }
                PoolRequest::Default(_) => None,
            });
        }
        let given: Vec<IpNet> = explicit.iter().flatten().map(Pool::subnet).collect();
        for (i, a) in given.iter().enumerate() {
            if let Some(b) = given[i + 1..].iter().find(|b| overlaps(a, b)) {
                return Err(Error::invalid(
                    OP_ADD,
                    format!("the requested subnets {a} and {b} of network {name:?} overlap"),
                )
                .with_hint("give each pool of a network its own, disjoint subnet"));
            }
            if let Some(r) = self.config.reserved.iter().find(|r| overlaps(a, r)) {
                return Err(Error::invalid(
                    OP_ADD,
                    format!(
                        "subnet {a} of network {name:?} overlaps {r}, which this host keeps for \
                         its gateway bridge"
                    ),
                )
                .with_hint("pick a subnet outside the gateway pool, or move the gateway pool"));
            }
        }
        let retry = self.config.retry;
        for attempt in 1..=retry.max_attempts {
            let current = self.store.get(REGISTRY_KEY).await?;
            let (mut registry, version) = match &current {
                Some(kv) => (
                    records::decode::<Registry>(REGISTRY_KEY, &kv.value)?,
                    Some(kv.version),
                ),
                None => (
                    Registry {
                        schema: SCHEMA,
                        pools: Vec::new(),
                    },
                    None,
                ),
            };
            if registry.pools.iter().any(|p| p.network == *net) {
                return Err(self.already_has_pools(net, &registry));
            }
            let mut configs = Vec::with_capacity(requests.len());
            for (req, pool) in requests.iter().zip(&explicit) {
                let pool = match pool {
                    Some(p) => p.clone(),
                    None => {
                        let PoolRequest::Default(family) = req else {
                            continue;
                        };
                        self.pick_default_pool(*family, name, &registry)?
                    }
                };
                let subnet = pool.subnet();
                if let Some(hit) = registry.pools.iter().find(|p| overlaps(&p.subnet, &subnet)) {
                    let what = if hit.subnet == subnet {
                        "is already the pool"
                    } else {
                        "overlaps pool"
                    };
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        OP_ADD,
                        format!("subnet {subnet} of network {name:?} ({}) {what} {}", net.short(), describe(hit)),
                    )
                    .with_hint("pick a subnet no other network uses, or omit it to get a free default pool"));
                }
                registry.pools.push(RegisteredPool {
                    network: *net,
                    name: name.to_string(),
                    subnet,
                });
                configs.push(pool.config().clone());
            }
            let record = NetworkPools {
                schema: SCHEMA,
                network: *net,
                name: name.to_string(),
                pools: configs.clone(),
            };
            let value = records::encode(&registry);
            let ops = [
                match version {
                    Some(v) => TxnOp::Update {
                        key: REGISTRY_KEY.into(),
                        value,
                        version: v,
                    },
                    None => TxnOp::Create {
                        key: REGISTRY_KEY.into(),
                        value,
                    },
                },
                TxnOp::Create {
                    key: records::network_key(net),
                    value: records::encode(&record),
                },
            ];
            match self.store.txn(&ops).await {
                Ok(_) => {
                    self.forget(net);
                    return Ok(configs);
                }
                Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::AlreadyExists) => {
                    if self.store.get(&records::network_key(net)).await?.is_some() {
                        return Err(Error::new(
                            ErrorKind::AlreadyExists,
                            OP_ADD,
                            format!(
                                "network {name:?} ({}) has address pools already",
                                net.short()
                            ),
                        )
                        .with_hint("release the network's pools first, or use them as they are"));
                    }
                    retry.wait(attempt).await;
                }
                Err(e) => return Err(e.with_op(OP_ADD)),
            }
        }
        Err(lost(OP_ADD, retry.max_attempts, "the pool registry"))
    }

    fn already_has_pools(&self, net: &NetworkId, registry: &Registry) -> Error {
        let have: Vec<String> = registry
            .pools
            .iter()
            .filter(|p| p.network == *net)
            .map(|p| p.subnet.to_string())
            .collect();
        Error::new(
            ErrorKind::AlreadyExists,
            OP_ADD,
            format!(
                "network {} has address pools already: {}",
                net.short(),
                have.join(", ")
            ),
        )
        .with_hint("release the network's pools first, or use them as they are")
    }

    /// A default subnet of `family` that overlaps no network's pool now.
    pub(super) async fn suggest_subnet_impl(&self, family: Family) -> Result<ipnet::IpNet> {
        let registry = match self.store.get(REGISTRY_KEY).await? {
            Some(kv) => records::decode::<Registry>(REGISTRY_KEY, &kv.value)?,
            None => Registry {
                schema: SCHEMA,
                pools: Vec::new(),
            },
        };
        Ok(self
            .pick_default_pool(family, "the new network", &registry)?
            .subnet())
    }

    fn pick_default_pool(&self, family: Family, name: &str, registry: &Registry) -> Result<Pool> {
        let list = &self.config.default_pools;
        if !list.iter().any(|d| Family::of_net(&d.base) == family) {
            return Err(Error::invalid(
                OP_ADD,
                format!("no default {family} pools are configured"),
            )
            .with_hint(
                "give the network a subnet, or add default pools to IpamConfig::default_pools",
            ));
        }
        let taken: Vec<IpNet> = registry
            .pools
            .iter()
            .map(|p| p.subnet)
            .chain(self.config.reserved.iter().copied())
            .collect();
        let subnet = pick_default(list, family, &taken).ok_or_else(|| {
            let ranges: Vec<String> = list.iter().map(|d| format!("/{}s of {}", d.len, d.base)).collect();
            Error::new(
                ErrorKind::Conflict,
                OP_ADD,
                format!(
                    "no default {family} pool is free for network {name:?}: every one of {} overlaps \
                     another network's pool or a range this host keeps",
                    ranges.join(", ")
                ),
            )
            .with_hint("remove unused networks, give this one a subnet, or configure more default pools")
        })?;
        let cfg = PoolConfig::new(subnet);
        Pool::new(&cfg, self.block_bits(&cfg))
    }

    pub(super) async fn release_pools_impl(&self, net: &NetworkId) -> Result<bool> {
        let retry = self.config.retry;
        let net_key = records::network_key(net);
        let mut released = false;
        for attempt in 1..=retry.max_attempts {
            let current = self.store.get(REGISTRY_KEY).await?;
            let had_record = self.store.get(&net_key).await?.is_some();
            let mut ops = Vec::with_capacity(2);
            if let Some(kv) = &current {
                let mut registry: Registry = records::decode(REGISTRY_KEY, &kv.value)?;
                let before = registry.pools.len();
                registry.pools.retain(|p| p.network != *net);
                if registry.pools.len() != before {
                    ops.push(TxnOp::Update {
                        key: REGISTRY_KEY.into(),
                        value: records::encode(&registry),
                        version: kv.version,
                    });
                }
            }
            if ops.is_empty() && !had_record {
                break;
            }
            ops.push(TxnOp::Delete {
                key: net_key.clone(),
            });
            match self.store.txn(&ops).await {
                Ok(_) => {
                    released = true;
                    break;
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    if attempt == retry.max_attempts {
                        return Err(lost(OP_RELEASE, attempt, "the pool registry"));
                    }
                    retry.wait(attempt).await;
                }
                Err(e) => return Err(e.with_op(OP_RELEASE)),
            }
        }
        self.forget(net);
        // The subnets are free now; what is left below is unreachable state. Remove it here,
        // and leave any failure to the collector, which removes state of pool-less networks.
        for prefix in [
            format!("{}{net}/", records::BLOCKS_PREFIX),
            format!("{}{net}/", records::STICKY_PREFIX),
        ] {
            if let Err(e) = self.delete_prefix(&prefix).await {
                tracing::warn!(%prefix, error = %e, "leaving released IPAM state to the collector");
            }
        }
        Ok(released)
    }

    /// Deletes every key below `prefix`; returns how many.
    pub(super) async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let listing = self.store.list(prefix).await?;
        for kv in &listing.kvs {
            self.store.delete(&kv.key).await?;
        }
        Ok(listing.kvs.len())
    }
}

/// The error after every retry of a compare-and-swap was lost.
pub(super) fn lost(op: &'static str, attempts: u32, what: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        op,
        format!("{what} kept changing under this request: {attempts} attempts lost the race"),
    )
    .with_hint(
        "the store is heavily contended; retry later, or raise IpamConfig::retry.max_attempts",
    )
}
