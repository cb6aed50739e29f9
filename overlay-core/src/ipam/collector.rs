//! The collector: frees what dead owners left, expires reservations, removes released state;
//! and the store's view of a network's allocations.

use std::collections::HashSet;
use std::net::IpAddr;
use std::str::FromStr;

use super::allocator::StoreIpam;
use super::pool::Family;
use super::records::{self, BLOCKS_PREFIX, Block, Entry, NETWORKS_PREFIX, STICKY_PREFIX};
use super::{CollectReport, Holding};
use crate::error::{ErrorKind, Result};
use crate::model::NetworkId;
use crate::store::{KeyValue, TxnOp};

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `<net>/<pool>/<index>` of a block key, with the pool's family.
fn parse_block_key(key: &str) -> Option<(NetworkId, Family, &str)> {
    let mut parts = key.strip_prefix(BLOCKS_PREFIX)?.split('/');
    let net = NetworkId::from_str(parts.next()?).ok()?;
    let pool = parts.next()?;
    let addr = IpAddr::from_str(pool.rsplit_once('-')?.0).ok()?;
    Some((net, Family::of(&addr), pool))
}

impl StoreIpam {
    pub(super) async fn collect_impl(
        &self,
        live_owners: &HashSet<String>,
    ) -> Result<CollectReport> {
        let op = "collect addresses";
        let now = records::now_ms();
        let owner_deadline = now.saturating_sub(millis(self.config.owner_grace));
        let until_ms = now.saturating_add(millis(self.config.reservation_grace));
        let max_ops = self.store.capabilities().max_txn_ops.max(2);
        let mut report = CollectReport::default();

        let networks: HashSet<NetworkId> = self
            .store
            .list(NETWORKS_PREFIX)
            .await
            .map_err(|e| e.with_op(op))?
            .kvs
            .iter()
            .filter_map(|kv| NetworkId::from_str(kv.key.strip_prefix(NETWORKS_PREFIX)?).ok())
            .collect();

        for kv in self
            .store
            .list(BLOCKS_PREFIX)
            .await
            .map_err(|e| e.with_op(op))?
            .kvs
        {
            let Some((net, family, _)) = parse_block_key(&kv.key) else {
                continue;
            };
            if !networks.contains(&net) {
                self.remove_orphan(&kv, &mut report).await?;
                continue;
            }
            let mut block: Block = match records::decode(&kv.key, &kv.value) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(key = %kv.key, error = %e, "collector skips an unreadable block");
                    report.skipped += 1;
                    continue;
                }
            };
            let mut ops = Vec::new();
            let (mut reclaimed, mut expired) = (0, 0);
            let inners: Vec<u64> = block.entries.keys().copied().collect();
            for inner in inners {
                let Some(entry) = block.entries.get(&inner) else {
                    continue;
                };
                match entry {
                    Entry::Held {
                        owner,
                        since_ms,
                        sticky,
                    } if !live_owners.contains(owner) && *since_ms <= owner_deadline => {
                        match sticky.clone() {
                            Some(key) => {
                                block
                                    .entries
                                    .insert(inner, Entry::Reserved { key, until_ms });
                            }
                            None => {
                                block.entries.remove(&inner);
                            }
                        }
                        reclaimed += 1;
                    }
                    // Leave room for the block's own update in the transaction.
                    Entry::Reserved {
                        key,
                        until_ms: until,
                    } if *until <= now && ops.len() + 1 < max_ops => {
                        ops.push(TxnOp::Delete {
                            key: records::sticky_key(&net, family, key),
                        });
                        block.entries.remove(&inner);
                        expired += 1;
                    }
                    _ => {}
                }
            }
            if reclaimed + expired == 0 {
                continue;
            }
            ops.insert(
                0,
                TxnOp::Update {
                    key: kv.key.clone(),
                    value: records::encode(&block),
                    version: kv.version,
                },
            );
            match self.store.txn(&ops).await {
                Ok(_) => {
                    report.reclaimed += reclaimed;
                    report.expired += expired;
                }
                Err(e) if e.kind() == ErrorKind::Conflict => report.skipped += 1,
                Err(e) => return Err(e.with_op(op)),
            }
        }

        for kv in self
            .store
            .list(STICKY_PREFIX)
            .await
            .map_err(|e| e.with_op(op))?
            .kvs
        {
            // The listing includes the prefix itself if someone wrote it: no network there.
            let net = kv
                .key
                .strip_prefix(STICKY_PREFIX)
                .and_then(|rest| rest.split('/').next())
                .and_then(|s| NetworkId::from_str(s).ok());
            if net.is_some_and(|n| !networks.contains(&n)) {
                self.remove_orphan(&kv, &mut report).await?;
            }
        }
        if report != CollectReport::default() {
            tracing::info!(?report, "IPAM collector freed state");
        }
        Ok(report)
    }

    async fn remove_orphan(&self, kv: &KeyValue, report: &mut CollectReport) -> Result<()> {
        match self.store.compare_and_delete(&kv.key, kv.version).await {
            Ok(()) => report.orphans += 1,
            Err(e) if e.kind() == ErrorKind::Conflict => report.skipped += 1,
            Err(e) => return Err(e.with_op("collect addresses")),
        }
        Ok(())
    }

    pub(super) async fn allocations_impl(&self, net: &NetworkId) -> Result<Vec<Holding>> {
        let (pools, _) = self.network(net).await?;
        let mut out = Vec::new();
        for pool in pools.iter() {
            let prefix = records::blocks_prefix(net, &pool.key_id());
            for kv in self.store.list(&prefix).await?.kvs {
                let Some(Ok(index)) = kv.key.strip_prefix(&prefix).map(str::parse::<u64>) else {
                    continue;
                };
                let block: Block = records::decode(&kv.key, &kv.value)?;
                for (inner, entry) in block.entries {
                    if let Entry::Held {
                        owner,
                        since_ms,
                        sticky,
                    } = entry
                    {
                        out.push(Holding {
                            ip: pool.addr_at(pool.offset_in_block(index, inner)),
                            owner,
                            since_ms,
                            sticky,
                            block_host: block.host.clone(),
                        });
                    }
                }
            }
        }
        out.sort_by_key(|h| h.ip);
        Ok(out)
    }
}
