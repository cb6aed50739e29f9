//! Sticky reservations: an address kept for a key (the endpoint's name) across releases.
//!
//! The index key `ipam/sticky/<net>/<family>/<key>` and the block entry it points to are written
//! in one transaction each time, so they never disagree: an entry `held` with sticky key K or
//! `reserved` for K exists exactly when the index of K exists.

use super::addresses::{OP_REQUEST, Outcome, check_name, pool_of};
use super::allocator::{StoreIpam, Written};
use super::networks::lost;
use super::pool::{Family, Pool};
use super::records::{self, Block, Entry, StickyIndex};
use super::{AddressRequest, Allocation, Reservation, Want};
use crate::error::{Error, ErrorKind, Result};
use crate::model::{NetworkId, SCHEMA};
use crate::store::{TxnOp, Version};

const OP_DROP: &str = "drop sticky reservation";

impl StoreIpam {
    pub(super) async fn request_sticky(
        &self,
        net: &NetworkId,
        pools: &[Pool],
        net_version: Version,
        req: &AddressRequest,
        key: &str,
    ) -> Result<Allocation> {
        let family = req.family();
        let index_key = records::sticky_key(net, family, key);
        let retry = self.config.retry;
        for attempt in 1..=retry.max_attempts {
            let outcome = match self.store.get(&index_key).await? {
                None => match req.want {
                    Want::Specific(ip) => {
                        let pool = pool_of(net, pools, ip)?;
                        let value = records::encode(&StickyIndex { schema: SCHEMA, ip });
                        let create = TxnOp::Create {
                            key: index_key.clone(),
                            value,
                        };
                        self.try_specific(
                            net,
                            net_version,
                            pool,
                            ip,
                            &req.owner,
                            Some(key),
                            vec![create],
                        )
                        .await?
                    }
                    Want::Any(f) => {
                        self.request_any(net, net_version, pools, f, &req.owner, Some(key))
                            .await?
                    }
                },
                Some(kv) => {
                    let index: StickyIndex = records::decode(&index_key, &kv.value)?;
                    if let Want::Specific(ip) = req.want
                        && ip != index.ip
                    {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            OP_REQUEST,
                            format!(
                                "sticky key {key:?} holds {} but {ip} was requested",
                                index.ip
                            ),
                        )
                        .with_hint("request the reserved address, or drop the reservation first"));
                    }
                    let pool = pool_of(net, pools, index.ip)?;
                    let check = TxnOp::Check {
                        key: index_key.clone(),
                        version: Some(kv.version),
                    };
                    self.try_specific(
                        net,
                        net_version,
                        pool,
                        index.ip,
                        &req.owner,
                        Some(key),
                        vec![check],
                    )
                    .await
                    .map_err(|e| {
                        if e.kind() == ErrorKind::Conflict {
                            e.with_hint(
                                "the address reserved under this key is in use by another \
                                     endpoint; disconnect it, or use another name",
                            )
                        } else {
                            e
                        }
                    })?
                }
            };
            match outcome {
                Outcome::Got(a) => return Ok(a),
                Outcome::Lost => retry.wait(attempt).await,
                Outcome::Exhausted => {
                    return Err(Error::internal(
                        OP_REQUEST,
                        "an exhausted pool was not reported",
                    ));
                }
            }
        }
        Err(lost(
            OP_REQUEST,
            retry.max_attempts,
            &format!("sticky key {key:?}"),
        ))
    }

    pub(super) async fn drop_reservation_impl(
        &self,
        net: &NetworkId,
        family: Family,
        key: &str,
    ) -> Result<bool> {
        check_name("sticky key", key).map_err(|e| e.with_op(OP_DROP))?;
        let (pools, net_version) = self.network(net).await.map_err(|e| e.with_op(OP_DROP))?;
        let index_key = records::sticky_key(net, family, key);
        let retry = self.config.retry;
        for attempt in 1..=retry.max_attempts {
            let Some(kv) = self.store.get(&index_key).await? else {
                return Ok(false);
            };
            let index: StickyIndex = records::decode(&index_key, &kv.value)?;
            let pool = pool_of(net, &pools, index.ip).map_err(|e| e.with_op(OP_DROP))?;
            let offset = pool.offset_of(index.ip).unwrap_or_default();
            let (bi, inner) = pool.block_of(offset);
            let pool_id = pool.key_id();
            let drop_index = TxnOp::DeleteIf {
                key: index_key.clone(),
                version: kv.version,
            };
            let Some((mut block, version)) = self.fetch_block(net, &pool_id, bi).await? else {
                // No block: nothing is kept for the key; the index alone is stale.
                match self.store.compare_and_delete(&index_key, kv.version).await {
                    Ok(()) => return Ok(true),
                    Err(e) if e.kind() == ErrorKind::Conflict => continue,
                    Err(e) => return Err(e),
                }
            };
            match block.entries.get_mut(&inner) {
                Some(Entry::Reserved { key: k, .. }) if k == key => {
                    block.entries.remove(&inner);
                }
                Some(Entry::Held { sticky, .. }) if sticky.as_deref() == Some(key) => {
                    *sticky = None
                }
                _ => {}
            }
            match self
                .write_block(
                    net,
                    net_version,
                    &pool_id,
                    bi,
                    &block,
                    Some(version),
                    vec![drop_index],
                )
                .await?
            {
                Written::Done => return Ok(true),
                Written::Lost => retry.wait(attempt).await,
            }
        }
        Err(lost(
            OP_DROP,
            retry.max_attempts,
            &format!("sticky key {key:?}"),
        ))
    }

    pub(super) async fn reservations_impl(&self, net: &NetworkId) -> Result<Vec<Reservation>> {
        let (pools, _) = self.network(net).await?;
        let mut out = Vec::new();
        for pool in pools.iter() {
            let listing = self
                .store
                .list(&records::blocks_prefix(net, &pool.key_id()))
                .await?;
            for kv in listing.kvs {
                let Some(index) = kv
                    .key
                    .rsplit('/')
                    .next()
                    .and_then(|s| s.parse::<u64>().ok())
                else {
                    continue;
                };
                let block: Block = records::decode(&kv.key, &kv.value)?;
                for (inner, entry) in &block.entries {
                    let ip = pool.addr_at(pool.offset_in_block(index, *inner));
                    match entry {
                        Entry::Held {
                            owner,
                            sticky: Some(k),
                            ..
                        } => out.push(Reservation {
                            key: k.clone(),
                            ip,
                            holder: Some(owner.clone()),
                            until_ms: None,
                        }),
                        Entry::Reserved { key, until_ms } => out.push(Reservation {
                            key: key.clone(),
                            ip,
                            holder: None,
                            until_ms: Some(*until_ms),
                        }),
                        Entry::Held { .. } => {}
                    }
                }
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key).then(a.ip.cmp(&b.ip)));
        Ok(out)
    }
}
