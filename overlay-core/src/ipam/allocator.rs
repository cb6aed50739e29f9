//! [`StoreIpam`]: the store-backed allocator, its cache of blocks and its one write primitive.
//!
//! The cache only saves round trips: every write is a compare-and-swap or a transaction on the
//! version the cache holds, so a stale cache costs a lost race and a re-read, never a duplicate.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use super::IpamConfig;
use super::pool::Pool;
use super::records::{self, Block, NetworkPools};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{HostId, NetworkId};
use crate::store::{KvStore, TxnOp, Version};

/// The store-backed [`Ipam`](super::Ipam): host-affine blocks claimed and updated by
/// compare-and-swap. See the [module docs](super) for the design and key layout.
///
/// One `StoreIpam` per host process; `host` names the blocks it claims, so it must be the
/// host's id (two processes may share one, at the cost of racing each other more often).
pub struct StoreIpam {
    pub(super) store: Arc<dyn KvStore>,
    pub(super) host: HostId,
    pub(super) config: IpamConfig,
    cache: Mutex<HashMap<NetworkId, NetState>>,
}

impl std::fmt::Debug for StoreIpam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreIpam")
            .field("store", &self.store.backend())
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

/// What this process knows of one network: its pools (immutable while they exist) and the
/// blocks of each pool it has seen.
pub(super) struct NetState {
    pub(super) pools: Arc<Vec<Pool>>,
    /// Version of `ipam/networks/<net>`, checked when a block is claimed.
    pub(super) version: Version,
    pub(super) blocks: HashMap<String, PoolBlocks>,
}

/// Cached blocks of one pool.
#[derive(Default)]
pub(super) struct PoolBlocks {
    /// Whether `blocks` came from a listing (so a missing index is unclaimed, as of then).
    pub(super) listed: bool,
    pub(super) blocks: BTreeMap<u64, (Block, Version)>,
    /// Block of this process's most recent dynamic allocation, where the next search starts.
    pub(super) last: Option<u64>,
}

/// The outcome of a conditional write.
pub(super) enum Written {
    /// Committed.
    Done,
    /// A condition failed: someone else wrote first. Nothing was changed.
    Lost,
}

impl StoreIpam {
    /// An allocator over `store` for host `host`.
    pub fn new(store: Arc<dyn KvStore>, host: HostId, config: IpamConfig) -> StoreIpam {
        StoreIpam {
            store,
            host,
            config,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The store this allocator writes to.
    pub fn store(&self) -> &Arc<dyn KvStore> {
        &self.store
    }

    /// The configuration.
    pub fn config(&self) -> &IpamConfig {
        &self.config
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<NetworkId, NetState>> {
        // The cache holds no invariant a panicking holder could break halfway: recover it.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn block_bits(&self, pool: &crate::model::PoolConfig) -> u8 {
        let bits = if pool.subnet.addr().is_ipv4() {
            self.config.block_host_bits_v4
        } else {
            self.config.block_host_bits_v6
        };
        bits.min(super::MAX_BLOCK_HOST_BITS)
    }

    /// The network's pools and the version of their record: from the cache, or one read.
    pub(super) async fn network(&self, net: &NetworkId) -> Result<(Arc<Vec<Pool>>, Version)> {
        if let Some(s) = self.lock().get(net) {
            return Ok((s.pools.clone(), s.version));
        }
        let key = records::network_key(net);
        let Some(kv) = self.store.get(&key).await? else {
            return Err(no_pools(net));
        };
        let rec: NetworkPools = records::decode(&key, &kv.value)?;
        let pools = rec
            .pools
            .iter()
            .map(|p| Pool::new(p, self.block_bits(p)))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| e.with_op("load network pools"))?;
        let pools = Arc::new(pools);
        let mut cache = self.lock();
        let state = cache.entry(*net).or_insert_with(|| NetState {
            pools: pools.clone(),
            version: kv.version,
            blocks: HashMap::new(),
        });
        Ok((state.pools.clone(), state.version))
    }

    /// Forgets what is cached of `net` (after its pools were released or replaced).
    pub(super) fn forget(&self, net: &NetworkId) {
        self.lock().remove(net);
    }

    /// Runs `f` on the cached blocks of one pool of a network already loaded.
    pub(super) fn with_blocks<T>(
        &self,
        net: &NetworkId,
        pool_id: &str,
        f: impl FnOnce(&mut PoolBlocks) -> T,
    ) -> Option<T> {
        let mut cache = self.lock();
        let state = cache.get_mut(net)?;
        Some(f(state.blocks.entry(pool_id.to_string()).or_default()))
    }

    /// Lists every block of a pool (one round trip) and replaces the cached ones.
    pub(super) async fn list_blocks(&self, net: &NetworkId, pool_id: &str) -> Result<()> {
        let prefix = records::blocks_prefix(net, pool_id);
        let listing = self.store.list(&prefix).await?;
        let mut blocks = BTreeMap::new();
        for kv in listing.kvs {
            let Some(Ok(index)) = kv.key.strip_prefix(&prefix).map(str::parse::<u64>) else {
                tracing::warn!(key = %kv.key, "ignoring a key that is not a block index");
                continue;
            };
            blocks.insert(
                index,
                (records::decode::<Block>(&kv.key, &kv.value)?, kv.version),
            );
        }
        self.with_blocks(net, pool_id, |pb| {
            pb.blocks = blocks;
            pb.listed = true;
        });
        Ok(())
    }

    /// Reads one block (one round trip) into the cache; `None` if it is not claimed.
    pub(super) async fn fetch_block(
        &self,
        net: &NetworkId,
        pool_id: &str,
        index: u64,
    ) -> Result<Option<(Block, Version)>> {
        let key = records::block_key(net, pool_id, index);
        let got = match self.store.get(&key).await? {
            Some(kv) => Some((records::decode::<Block>(&key, &kv.value)?, kv.version)),
            None => None,
        };
        self.with_blocks(net, pool_id, |pb| match &got {
            Some(b) => {
                pb.blocks.insert(index, b.clone());
            }
            None => {
                pb.blocks.remove(&index);
            }
        });
        Ok(got)
    }

    /// The block: from the cache unless `fresh`, else (or when not cached) read from the
    /// store. The flag says whether it came from the cache, so a caller about to conclude
    /// something without writing (an address is taken, or not held) can check it afresh:
    /// only a successful conditional write proves a cached block current.
    pub(super) async fn block(
        &self,
        net: &NetworkId,
        pool_id: &str,
        index: u64,
        fresh: bool,
    ) -> Result<(Option<(Block, Version)>, bool)> {
        if !fresh
            && let Some(b) = self
                .with_blocks(net, pool_id, |pb| pb.blocks.get(&index).cloned())
                .flatten()
        {
            return Ok((Some(b), true));
        }
        Ok((self.fetch_block(net, pool_id, index).await?, false))
    }

    /// Writes `block` at `index` if it is still at `version` (`None`: if it is still unclaimed
    /// and the network's pools are still at `net_version`), together with `extra` ops, in one
    /// round trip. A lost race is [`Written::Lost`]; the cache is updated on success.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write_block(
        &self,
        net: &NetworkId,
        net_version: Version,
        pool_id: &str,
        index: u64,
        block: &Block,
        version: Option<Version>,
        extra: Vec<TxnOp>,
    ) -> Result<Written> {
        let key = records::block_key(net, pool_id, index);
        let value = records::encode(block);
        let result = match version {
            Some(v) if extra.is_empty() => self.store.compare_and_swap(&key, &value, v).await,
            _ => {
                let mut ops = Vec::with_capacity(extra.len() + 2);
                ops.push(match version {
                    Some(v) => TxnOp::Update {
                        key,
                        value,
                        version: v,
                    },
                    None => TxnOp::Create { key, value },
                });
                if version.is_none() {
                    ops.push(TxnOp::Check {
                        key: records::network_key(net),
                        version: Some(net_version),
                    });
                }
                ops.extend(extra);
                self.store
                    .txn(&ops)
                    .await
                    .map(|r| r.versions[0].unwrap_or_default())
            }
        };
        match result {
            Ok(new_version) => {
                self.with_blocks(net, pool_id, |pb| {
                    let newer = pb.blocks.get(&index).is_none_or(|(_, v)| *v < new_version);
                    if newer {
                        pb.blocks.insert(index, (block.clone(), new_version));
                    }
                });
                Ok(Written::Done)
            }
            Err(e) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::AlreadyExists) => {
                Ok(Written::Lost)
            }
            Err(e) => Err(e),
        }
    }

    /// After a lost claim: whether the network still has its pools (one read). If not, the
    /// cache is dropped and the error says so.
    pub(super) async fn check_network_alive(
        &self,
        net: &NetworkId,
        version: Version,
    ) -> Result<()> {
        match self.store.get(&records::network_key(net)).await? {
            Some(kv) if kv.version == version => Ok(()),
            Some(_) => {
                self.forget(net);
                Err(Error::new(
                    ErrorKind::Conflict,
                    "ipam",
                    format!(
                        "the pools of network {} were replaced during this request",
                        net.short()
                    ),
                )
                .with_hint("retry the request: it will use the network's new pools"))
            }
            None => {
                self.forget(net);
                Err(no_pools(net))
            }
        }
    }
}

/// The error for a network without pools.
pub(super) fn no_pools(net: &NetworkId) -> Error {
    Error::new(
        ErrorKind::NotFound,
        "ipam",
        format!(
            "network {} has no address pools (it was never given any, or they were released)",
            net.short()
        ),
    )
    .with_hint("add the network's pools first (Ipam::add_pools), or check the network id")
}
