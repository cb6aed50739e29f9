//! Requesting and releasing addresses inside blocks.

use std::net::IpAddr;

use ipnet::IpNet;

use super::allocator::{StoreIpam, Written};
use super::networks::lost;
use super::plan::Step;
use super::pool::{Family, Pool};
use super::records::{self, Block, Entry};
use super::{AddressRequest, Allocation, Want};
use crate::error::{Error, ErrorKind, Result};
use crate::model::NetworkId;
use crate::store::{TxnOp, Version};

pub(super) const OP_REQUEST: &str = "request address";
const OP_RELEASE: &str = "release address";

/// The end of one request in one pool.
pub(super) enum Outcome {
    /// Handed out.
    Got(Allocation),
    /// The pool has no free address.
    Exhausted,
    /// A sticky request lost a race: the caller re-reads the sticky index and tries again.
    Lost,
}

/// Checks an owner or sticky key: it becomes part of stored values and, for sticky keys, of a
/// store key.
pub(super) fn check_name(what: &str, s: &str) -> Result<()> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        return Ok(());
    }
    Err(
        Error::invalid(OP_REQUEST, format!("{what} {s:?} is not valid")).with_hint(
            "use 1 to 128 letters, digits, '_', '-' or '.', starting with a letter or digit",
        ),
    )
}

pub(super) fn allocation(pool: &Pool, ip: IpAddr, owner: &str, sticky: Option<&str>) -> Allocation {
    Allocation {
        address: IpNet::new_assert(ip, pool.subnet().prefix_len()),
        gateway: pool.config().gateway,
        owner: owner.to_string(),
        sticky: sticky.map(str::to_string),
    }
}

impl StoreIpam {
    pub(super) async fn request_impl(
        &self,
        net: &NetworkId,
        req: &AddressRequest,
    ) -> Result<Allocation> {
        check_name("owner", &req.owner)?;
        if let Some(key) = &req.sticky {
            check_name("sticky key", key)?;
        }
        let (pools, net_version) = self.network(net).await.map_err(|e| e.with_op(OP_REQUEST))?;
        if let Some(key) = &req.sticky {
            return self
                .request_sticky(net, &pools, net_version, req, key)
                .await;
        }
        match req.want {
            Want::Specific(ip) => {
                let pool = pool_of(net, &pools, ip)?;
                let retry = self.config.retry;
                for attempt in 1..=retry.max_attempts {
                    match self
                        .try_specific(net, net_version, pool, ip, &req.owner, None, Vec::new())
                        .await?
                    {
                        Outcome::Got(a) => return Ok(a),
                        _ => retry.wait(attempt).await,
                    }
                }
                Err(lost(
                    OP_REQUEST,
                    retry.max_attempts,
                    &format!("the block of {ip}"),
                ))
            }
            Want::Any(family) => {
                match self
                    .request_any(net, net_version, &pools, family, &req.owner, None)
                    .await?
                {
                    Outcome::Got(a) => Ok(a),
                    // Only sticky requests report lost races; the others retry inside.
                    _ => Err(Error::internal(
                        OP_REQUEST,
                        "a plain request reported a lost race",
                    )),
                }
            }
        }
    }

    /// Any address of `family`, trying the network's pools in order.
    pub(super) async fn request_any(
        &self,
        net: &NetworkId,
        net_version: Version,
        pools: &[Pool],
        family: Family,
        owner: &str,
        sticky: Option<&str>,
    ) -> Result<Outcome> {
        let candidates: Vec<&Pool> = pools.iter().filter(|p| p.family() == family).collect();
        if candidates.is_empty() {
            return Err(Error::invalid(
                OP_REQUEST,
                format!("network {} has no {family} pool", net.short()),
            )
            .with_hint("request an address of a family the network has a pool for"));
        }
        for pool in &candidates {
            match self
                .request_in_pool(net, net_version, pool, owner, sticky)
                .await?
            {
                Outcome::Got(a) => return Ok(Outcome::Got(a)),
                Outcome::Lost => return Ok(Outcome::Lost),
                Outcome::Exhausted => {}
            }
        }
        let names: Vec<String> = candidates
            .iter()
            .map(|p| format!("{} ({} usable)", p.subnet(), p.dynamic_count()))
            .collect();
        Err(Error::new(
            ErrorKind::Conflict,
            OP_REQUEST,
            format!(
                "no free address left in {family} pool {} of network {}: every usable address is \
                 held or reserved",
                names.join(", "),
                net.short()
            ),
        )
        .with_hint(
            "release addresses, drop sticky reservations, run the collector, or give the network \
             a larger pool",
        ))
    }

    /// Any address of one pool. A sticky request returns [`Outcome::Lost`] on a lost race.
    async fn request_in_pool(
        &self,
        net: &NetworkId,
        net_version: Version,
        pool: &Pool,
        owner: &str,
        sticky: Option<&str>,
    ) -> Result<Outcome> {
        let pool_id = pool.key_id();
        let host = self.host.as_str();
        let retry = self.config.retry;
        let mut fresh = false;
        let mut spread = false;
        let mut lost_claims = 0;
        let mut attempt = 0;
        // Counts one attempt lost to a concurrent writer; an error once they are all spent.
        let lose_one = |attempt: &mut u32| {
            *attempt += 1;
            if *attempt >= retry.max_attempts {
                return Err(lost(
                    OP_REQUEST,
                    *attempt,
                    &format!("pool {}", pool.subnet()),
                ));
            }
            Ok(())
        };
        loop {
            let now = records::now_ms();
            let entry = Entry::Held {
                owner: owner.to_string(),
                since_ms: now,
                sticky: sticky.map(str::to_string),
            };
            let step = self
                .with_blocks(net, &pool_id, |pb| {
                    pb.plan_any(pool, host, &entry, now, fresh, spread)
                })
                .unwrap_or(Step::List);
            let plan = match step {
                Step::Write(plan) => plan,
                Step::Exhausted => return Ok(Outcome::Exhausted),
                Step::Held { index, inner } => {
                    // Seen in the cache only: confirm on a fresh read before handing it out
                    // again (a collector may have freed it meanwhile).
                    let fresh = self.fetch_block(net, &pool_id, index).await?;
                    let still = fresh.is_some_and(|(b, _)| {
                        matches!(b.entries.get(&inner), Some(Entry::Held { owner: o, sticky: s, .. })
                            if o == owner && s.as_deref() == sticky)
                    });
                    if still {
                        let ip = pool.addr_at(pool.offset_in_block(index, inner));
                        return Ok(Outcome::Got(allocation(pool, ip, owner, sticky)));
                    }
                    lose_one(&mut attempt)?;
                    continue;
                }
                Step::List => {
                    if fresh {
                        // Listed in this request already and the cache still cannot tell:
                        // the network was dropped from the cache meanwhile.
                        lose_one(&mut attempt)?;
                        self.network(net).await?;
                    }
                    self.list_blocks(net, &pool_id).await?;
                    fresh = true;
                    continue;
                }
            };
            let ip = pool.addr_at(pool.offset_in_block(plan.index, plan.inner));
            let mut extra = Vec::new();
            if let Some(k) = &plan.displaced
                && Some(k.as_str()) != sticky
            {
                extra.push(TxnOp::Delete {
                    key: records::sticky_key(net, pool.family(), k),
                });
            }
            if let Some(k) = sticky {
                let value = records::encode(&records::StickyIndex {
                    schema: crate::model::SCHEMA,
                    ip,
                });
                let key = records::sticky_key(net, pool.family(), k);
                extra.push(if plan.displaced.as_deref() == Some(k) {
                    TxnOp::Put { key, value }
                } else {
                    TxnOp::Create { key, value }
                });
            }
            let claimed = plan.version.is_none();
            match self
                .write_block(
                    net,
                    net_version,
                    &pool_id,
                    plan.index,
                    &plan.block,
                    plan.version,
                    extra,
                )
                .await?
            {
                Written::Done => {
                    self.with_blocks(net, &pool_id, |pb| pb.last = Some(plan.index));
                    return Ok(Outcome::Got(allocation(pool, ip, owner, sticky)));
                }
                Written::Lost => {
                    lose_one(&mut attempt)?;
                    if claimed {
                        // Someone claimed that block first, or the network lost its pools.
                        // The first time, read just that block (a listing of the whole pool
                        // costs far more; on ZooKeeper one read per block); if the cache
                        // proves stale again, list, so a stale cache cannot use up every
                        // attempt one block at a time.
                        lost_claims += 1;
                        let exists = if lost_claims == 1 {
                            self.fetch_block(net, &pool_id, plan.index).await?.is_some()
                        } else {
                            self.list_blocks(net, &pool_id).await?;
                            fresh = true;
                            self.with_blocks(net, &pool_id, |pb| {
                                pb.blocks.contains_key(&plan.index)
                            })
                            .unwrap_or(false)
                        };
                        if exists {
                            spread = true;
                        } else {
                            self.check_network_alive(net, net_version).await?;
                        }
                    } else {
                        self.fetch_block(net, &pool_id, plan.index).await?;
                    }
                    if sticky.is_some() {
                        return Ok(Outcome::Lost);
                    }
                    retry.wait(attempt).await;
                }
            }
        }
    }

    /// One attempt at exactly `ip` of `pool`, with `extra` ops written in the same
    /// transaction. A lost race re-reads the block and gives [`Outcome::Lost`].
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn try_specific(
        &self,
        net: &NetworkId,
        net_version: Version,
        pool: &Pool,
        ip: IpAddr,
        owner: &str,
        sticky: Option<&str>,
        extra: Vec<TxnOp>,
    ) -> Result<Outcome> {
        let offset = pool.offset_of(ip).ok_or_else(|| {
            Error::internal(
                OP_REQUEST,
                format!("{ip} was routed to pool {} that lacks it", pool.subnet()),
            )
        })?;
        if let Some(why) = pool.reserved(offset) {
            return Err(Error::invalid(
                OP_REQUEST,
                format!(
                    "{ip} is {why} of pool {} and is never handed out",
                    pool.subnet()
                ),
            )
            .with_hint("request another address of the pool, or any address"));
        }
        let (index, inner) = pool.block_of(offset);
        let pool_id = pool.key_id();
        let mut fresh = false;
        loop {
            let now = records::now_ms();
            let (current, cached) = self.block(net, &pool_id, index, fresh).await?;
            // Refusals and repeats are decided on a fresh read, never on the cache alone.
            if cached && block_refuses_or_repeats(current.as_ref(), inner, sticky, now) {
                fresh = true;
                continue;
            }
            let (mut block, version) = match current {
                Some((b, v)) => (b, Some(v)),
                None => (Block::new(self.host.as_str()), None),
            };
            let mut ops = extra.clone();
            match block.entries.get(&inner) {
                None => {}
                Some(Entry::Held {
                    owner: o,
                    sticky: s,
                    ..
                }) if o == owner && s.as_deref() == sticky => {
                    return Ok(Outcome::Got(allocation(pool, ip, owner, sticky)));
                }
                Some(Entry::Held { owner: o, .. }) => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        OP_REQUEST,
                        format!("{ip} of pool {} is held by {o:?}", pool.subnet()),
                    )
                    .with_hint("request another address, or release it from its holder first"));
                }
                Some(Entry::Reserved { key, .. }) if Some(key.as_str()) == sticky => {}
                Some(e @ Entry::Reserved { key, until_ms }) => {
                    if e.expired_reservation(now).is_none() {
                        return Err(Error::new(
                            ErrorKind::Conflict,
                            OP_REQUEST,
                            format!(
                                "{ip} of pool {} is reserved for sticky key {key:?} for {} more seconds",
                                pool.subnet(),
                                until_ms.saturating_sub(now).div_ceil(1000)
                            ),
                        )
                        .with_hint("request another address, or drop that reservation first"));
                    }
                    ops.push(TxnOp::Delete {
                        key: records::sticky_key(net, pool.family(), key),
                    });
                }
            }
            block.entries.insert(
                inner,
                Entry::Held {
                    owner: owner.to_string(),
                    since_ms: now,
                    sticky: sticky.map(str::to_string),
                },
            );
            match self
                .write_block(net, net_version, &pool_id, index, &block, version, ops)
                .await?
            {
                Written::Done => return Ok(Outcome::Got(allocation(pool, ip, owner, sticky))),
                Written::Lost => {
                    if version.is_none() {
                        self.check_network_alive(net, net_version).await?;
                    }
                    self.fetch_block(net, &pool_id, index).await?;
                    return Ok(Outcome::Lost);
                }
            }
        }
    }

    pub(super) async fn release_impl(
        &self,
        net: &NetworkId,
        ip: IpAddr,
        owner: &str,
    ) -> Result<bool> {
        let (pools, net_version) = self.network(net).await.map_err(|e| e.with_op(OP_RELEASE))?;
        let pool = pool_of(net, &pools, ip).map_err(|e| e.with_op(OP_RELEASE))?;
        let Some(offset) = pool.offset_of(ip) else {
            return Ok(false);
        };
        let (index, inner) = pool.block_of(offset);
        let pool_id = pool.key_id();
        let retry = self.config.retry;
        let mut fresh = false;
        let mut attempt = 0;
        while attempt < retry.max_attempts {
            let (current, cached) = self.block(net, &pool_id, index, fresh).await?;
            let held_by_owner = current.as_ref().is_some_and(|(b, _)| {
                matches!(b.entries.get(&inner), Some(Entry::Held { owner: o, .. }) if o == owner)
            });
            // "Not held" and "held by another" are decided on a fresh read only.
            if cached && !held_by_owner {
                fresh = true;
                continue;
            }
            attempt += 1;
            let Some((mut block, version)) = current else {
                return Ok(false);
            };
            let mut ops = Vec::new();
            match block.entries.get(&inner) {
                Some(Entry::Held {
                    owner: o, sticky, ..
                }) if o == owner => match sticky {
                    Some(key) => {
                        let until_ms = records::now_ms().saturating_add(
                            u64::try_from(self.config.reservation_grace.as_millis())
                                .unwrap_or(u64::MAX),
                        );
                        block.entries.insert(
                            inner,
                            Entry::Reserved {
                                key: key.clone(),
                                until_ms,
                            },
                        );
                    }
                    None => {
                        block.entries.remove(&inner);
                    }
                },
                Some(Entry::Held { owner: o, .. }) => {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        OP_RELEASE,
                        format!(
                            "{ip} of pool {} is held by {o:?}, not by {owner:?}",
                            pool.subnet()
                        ),
                    )
                    .with_hint("release an address with the owner that requested it"));
                }
                _ => return Ok(false),
            }
            // A zero grace means "not sticky after all": free it and drop the index now.
            if let Some(Entry::Reserved { key, until_ms }) = block.entries.get(&inner)
                && *until_ms <= records::now_ms()
            {
                ops.push(TxnOp::Delete {
                    key: records::sticky_key(net, pool.family(), key),
                });
                block.entries.remove(&inner);
            }
            match self
                .write_block(
                    net,
                    net_version,
                    &pool_id,
                    index,
                    &block,
                    Some(version),
                    ops,
                )
                .await?
            {
                Written::Done => return Ok(true),
                Written::Lost => {
                    self.fetch_block(net, &pool_id, index).await?;
                    retry.wait(attempt).await;
                }
            }
        }
        Err(lost(
            OP_RELEASE,
            retry.max_attempts,
            &format!("the block of {ip}"),
        ))
    }
}

/// Whether a specific request for `inner` would end without a write (the address is taken,
/// reserved for another key, or already held by this very owner) according to `current`.
fn block_refuses_or_repeats(
    current: Option<&(Block, Version)>,
    inner: u64,
    sticky: Option<&str>,
    now: u64,
) -> bool {
    match current.and_then(|(b, _)| b.entries.get(&inner)) {
        None => false,
        Some(Entry::Held { .. }) => true,
        Some(Entry::Reserved { key, .. }) if Some(key.as_str()) == sticky => false,
        Some(e) => e.expired_reservation(now).is_none(),
    }
}

/// The pool of the network that contains `ip`.
pub(super) fn pool_of<'a>(net: &NetworkId, pools: &'a [Pool], ip: IpAddr) -> Result<&'a Pool> {
    pools
        .iter()
        .find(|p| p.offset_of(ip).is_some())
        .ok_or_else(|| {
            let subnets: Vec<String> = pools.iter().map(|p| p.subnet().to_string()).collect();
            Error::invalid(
                OP_REQUEST,
                format!(
                    "{ip} is outside every pool of network {} ({})",
                    net.short(),
                    subnets.join(", ")
                ),
            )
            .with_hint("request an address inside one of the network's subnets")
        })
}
