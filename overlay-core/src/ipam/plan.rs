//! Planning an "any" request from the cached blocks of a pool: which block, which address.

use super::allocator::PoolBlocks;
use super::pool::Pool;
use super::records::{Block, Entry};
use crate::store::Version;

/// A write that would hand out one address.
pub(super) struct Plan {
    pub(super) index: u64,
    pub(super) inner: u64,
    /// The block with the new entry.
    pub(super) block: Block,
    /// The version it was read at; `None` claims the block.
    pub(super) version: Option<Version>,
    /// Sticky key of an expired reservation this write takes over (its index must go).
    pub(super) displaced: Option<String>,
}

/// What planning an "any" request found.
pub(super) enum Step {
    Write(Plan),
    /// The cache cannot tell; list the pool's blocks and plan again.
    List,
    /// No free address, as of a fresh listing.
    Exhausted,
    /// The owner holds this address already (a retry after a reply was lost): hand it out
    /// again rather than a second one.
    Held {
        index: u64,
        inner: u64,
    },
}

/// Whether `inner` of `block` is unavailable at `now`.
fn taken(block: &Block, inner: u64, now: u64) -> bool {
    block
        .entries
        .get(&inner)
        .is_some_and(|e| e.expired_reservation(now).is_none())
}

impl PoolBlocks {
    /// Plans an "any" request from the cached blocks: first this host's blocks (from the one
    /// it used last), then a new block, then (with a fresh listing) anybody's block.
    ///
    /// `spread`: after a lost claim, pick the new block at random among the first few
    /// unclaimed ones, so hosts that collided do not collide again on the next lowest block.
    pub(super) fn plan_any(
        &self,
        pool: &Pool,
        host: &str,
        entry: &Entry,
        now: u64,
        fresh: bool,
        spread: bool,
    ) -> Step {
        if let Entry::Held { owner, sticky, .. } = entry {
            let same = |e: &Entry| matches!(e, Entry::Held { owner: o, sticky: s, .. } if o == owner && s == sticky);
            for (&index, (block, _)) in &self.blocks {
                if let Some((&inner, _)) = block.entries.iter().find(|(_, e)| same(e)) {
                    return Step::Held { index, inner };
                }
            }
        }
        let pick = |index: u64, block: &Block, version: Option<Version>| -> Option<Plan> {
            let inner = pool.next_dynamic(index, block.cursor, |i| taken(block, i, now))?;
            let displaced = block
                .entries
                .get(&inner)
                .and_then(|e| e.expired_reservation(now))
                .map(str::to_string);
            let mut block = block.clone();
            block.entries.insert(inner, entry.clone());
            block.cursor = Some(inner);
            Some(Plan {
                index,
                inner,
                block,
                version,
                displaced,
            })
        };
        let start = self.last.unwrap_or(0);
        let mine = self
            .blocks
            .range(start..)
            .chain(self.blocks.range(..start))
            .filter(|(_, (b, _))| b.host == host);
        for (&index, (block, version)) in mine {
            if let Some(plan) = pick(index, block, Some(*version)) {
                return Step::Write(plan);
            }
        }
        if !self.listed {
            return Step::List;
        }
        // A new block: the lowest unclaimed one with a dynamic address. Unclaimed blocks
        // without one are made of reserved addresses only, so the search is bounded.
        let (lo, hi) = pool.dynamic_blocks();
        let bound = self.blocks.len() as u64 + pool_reserved_bound(pool);
        let wanted = if spread { SPREAD } else { 1 };
        let mut plans = Vec::with_capacity(wanted);
        for index in (lo..=hi).take(
            usize::try_from(bound)
                .unwrap_or(usize::MAX)
                .saturating_add(wanted),
        ) {
            if !self.blocks.contains_key(&index)
                && let Some(plan) = pick(index, &Block::new(host), None)
            {
                plans.push(plan);
                if plans.len() == wanted {
                    break;
                }
            }
        }
        if !plans.is_empty() {
            let i = rand::random_range(0..plans.len());
            return Step::Write(plans.swap_remove(i));
        }
        if !fresh {
            return Step::List;
        }
        // Borrow from other hosts' blocks.
        for (&index, (block, version)) in self.blocks.iter().filter(|(_, (b, _))| b.host != host) {
            if let Some(plan) = pick(index, block, Some(*version)) {
                return Step::Write(plan);
            }
        }
        Step::Exhausted
    }
}

/// How many unclaimed blocks a host chooses among after losing a claim.
const SPREAD: usize = 8;

fn pool_reserved_bound(pool: &Pool) -> u64 {
    // Network, broadcast, gateway and aux addresses: at most 3 + aux.
    3 + pool.config().aux_addresses.len() as u64
}
