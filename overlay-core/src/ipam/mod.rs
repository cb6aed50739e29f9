//! The global IPAM: one address space per network, shared by every host through the cluster
//! store, that never hands out the same address twice.
//!
//! [`Ipam`] is what the controller calls; [`StoreIpam`] implements it over any
//! [`KvStore`](crate::store::KvStore). Correctness comes only from the store's compare-and-swap
//! and transactions: a local cache saves round trips but every write is conditional on the
//! version it read, so a stale cache costs a retry, never a duplicate.
//!
//! # Design
//!
//! **Pools.** A network owns one or more pools (IPv4 and/or IPv6), given as a subnet
//! (optionally with ip-range, gateway and aux addresses) or picked from a default list
//! ([`IpamConfig::default_pools`], Docker's /24s of 10.0.0.0/8). Every claimed subnet is listed
//! in one registry key written by compare-and-swap, so two networks can never claim overlapping
//! (or identical) subnets however they race; the loser gets [`Conflict`](crate::ErrorKind::Conflict) naming both
//! networks and subnets. Pool creation is rare, so one key is no bottleneck. Pool maths
//! (network, broadcast, gateway, RFC 3021 /31s…) is in [`Pool`].
//!
//! **Host-affine blocks** (as Calico does). A pool is cut into blocks of
//! 2^[`IpamConfig::block_host_bits_v4`] addresses (64 by default). A host claims a free block by
//! creating its key; it then allocates inside its own blocks with one compare-and-swap on the
//! block's key, so hosts do not contend with each other, and a normal allocation is **one round
//! trip** once the host has listed the pool's blocks (once, then cached with their versions).
//! Claiming a new block and allocating its first address is one transaction too. A host whose
//! cached listing is stale may try to claim a block someone claimed meanwhile: it then reads
//! that one block, picks at random among the next few unclaimed ones (so hosts that collided
//! do not collide again), and lists the pool afresh only if it loses a second time. When
//! every block is claimed, a host borrows a free address from another host's block, by the
//! same compare-and-swap. Lost races are retried with jittered exponential backoff
//! ([`RetryPolicy`]), at most [`RetryPolicy::max_attempts`] times, then fail with `Conflict`;
//! there is no unbounded loop.
//!
//! **Idempotence.** An "any" request retried after a lost reply (the store timed out on a
//! write that did commit) finds the owner's entry and returns the same address; a specific
//! request for an address its owner holds returns it again.
//!
//! **Order.** Inside a block, an "any" request takes the lowest free address after the block's
//! most recent dynamic allocation, wrapping around, so a just-released address is not reused at
//! once. A host tries its blocks starting with the one it allocated from last. (The order is
//! per block, not pool-wide: a pool-wide cursor would be the one hot key this design avoids.)
//!
//! **Exhaustion** is [`Conflict`](crate::ErrorKind::Conflict) naming the pool(s): the request is valid, the pool's
//! state is what prevents it, and releasing addresses or dropping reservations changes that.
//!
//! **Owners and the collector.** Every allocation records its owner (the endpoint id) and
//! when it was made. A process that dies between allocating and publishing its endpoint leaks
//! nothing: [`Ipam::collect`], given the owners that still have an endpoint, frees allocations
//! of any other owner older than [`IpamConfig::owner_grace`], and expired sticky reservations.
//! The controller's job is: list the endpoint records, collect their ids, call `collect` (from
//! any host, any time; concurrent collectors are safe). The grace must exceed the time between
//! allocating and publishing an endpoint, plus clock skew between hosts.
//!
//! **Sticky reservations.** A request may carry a sticky key (the endpoint's name on the
//! network). The address is then reserved under that key: releasing it keeps it reserved
//! (nobody else gets it) for [`IpamConfig::reservation_grace`], and a later request with the same
//! key gets the same address back. [`Ipam::drop_reservation`] ends it at once. An expired
//! reservation may be taken by anyone; until then the same key still finds its address.
//!
//! # Store keys (below the store prefix)
//!
//! ```text
//! ipam/registry                          every claimed subnet: [{network, name, subnet}]
//! ipam/networks/<net-id>                 the network's pools (PoolConfig, gateway filled in)
//! ipam/blocks/<net-id>/<pool>/<index>    a block: {host, cursor, entries: {inner offset: entry}}
//! ipam/sticky/<net-id>/<v4|v6>/<key>     a sticky reservation: {ip}
//! ```
//!
//! `<pool>` is the subnet with `/` written `-` (`10.0.0.0-24`, `fd00::-64`); `<index>` is the
//! block number inside the pool, in decimal. Values are JSON with a `schema` field. A block's
//! entries map the offset inside the block to `{"s":"h","o":owner,"t":since_ms,"k":sticky}`
//! (held) or `{"s":"r","k":sticky,"u":until_ms}` (released, reserved for its sticky key); free
//! addresses have no entry. (One-letter names: the whole block is rewritten by each
//! allocation in it.)
//!
//! The sticky index and the block entry it points to are always written in one transaction,
//! so "key K has a reservation" and "the block keeps the address for K" never disagree.

mod addresses;
mod allocator;
mod collector;
mod defaults;
mod networks;
mod plan;
mod pool;
mod records;
mod sticky;

#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use std::collections::HashSet;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use ipnet::IpNet;

pub use crate::retry::RetryPolicy;
pub use allocator::StoreIpam;
pub use defaults::DefaultPool;
pub use pool::{Family, MIN_V4_PREFIX, MIN_V6_PREFIX, Pool, Reserved};

use crate::error::Result;
use crate::model::{NetworkId, PoolConfig};

/// Largest block, in host bits (4096 addresses): every allocation rewrites its whole block,
/// so larger configured values are clamped to this.
pub const MAX_BLOCK_HOST_BITS: u8 = 12;

/// Tunables of [`StoreIpam`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpamConfig {
    /// Where pools come from when a network asks for none, tried in order.
    pub default_pools: Vec<DefaultPool>,
    /// Ranges this host uses for itself (its gateway bridge's pool): a default pool is never
    /// picked over them, and a network asking for a subnet that overlaps one is refused.
    /// Another host may reserve other ranges; each host checks its own.
    pub reserved: Vec<IpNet>,
    /// Host bits of an IPv4 block (6: 64 addresses), at most [`MAX_BLOCK_HOST_BITS`]. Pools
    /// smaller than a block are one block. Every host claims at least one block per pool it
    /// allocates from: smaller blocks spread a small pool over more hosts, larger ones mean
    /// fewer claims but larger values written per allocation.
    pub block_host_bits_v4: u8,
    /// Host bits of an IPv6 block (6: 64 addresses), at most [`MAX_BLOCK_HOST_BITS`].
    pub block_host_bits_v6: u8,
    /// How long a released sticky address stays reserved for its key.
    pub reservation_grace: Duration,
    /// How old an allocation without a live owner must be before [`Ipam::collect`] frees it.
    pub owner_grace: Duration,
    /// Retries of lost compare-and-swap races.
    pub retry: RetryPolicy,
}

impl Default for IpamConfig {
    fn default() -> Self {
        IpamConfig {
            default_pools: vec![DefaultPool::docker_v4()],
            reserved: Vec::new(),
            block_host_bits_v4: 6,
            block_host_bits_v6: 6,
            reservation_grace: Duration::from_secs(24 * 3600),
            owner_grace: Duration::from_secs(60),
            retry: RetryPolicy::default(),
        }
    }
}

/// A pool a network asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolRequest {
    /// This subnet (with its optional gateway, ip-range and aux addresses).
    Subnet(PoolConfig),
    /// The first free subnet of the default list for this family.
    Default(Family),
}

/// Which address a request wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// Any free address of the network's pools of this family.
    Any(Family),
    /// Exactly this address.
    Specific(IpAddr),
}

/// An address request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressRequest {
    /// Which address.
    pub want: Want,
    /// Who holds it: the endpoint id. Letters, digits, `_`, `-`, `.`; at most 128 bytes.
    pub owner: String,
    /// Keep the address reserved under this key after release (the endpoint's name).
    pub sticky: Option<String>,
}

impl AddressRequest {
    /// Any free address of `family` for `owner`.
    pub fn any(family: Family, owner: impl Into<String>) -> Self {
        AddressRequest {
            want: Want::Any(family),
            owner: owner.into(),
            sticky: None,
        }
    }

    /// Exactly `ip`, for `owner`.
    pub fn specific(ip: IpAddr, owner: impl Into<String>) -> Self {
        AddressRequest {
            want: Want::Specific(ip),
            owner: owner.into(),
            sticky: None,
        }
    }

    /// The same request, sticky under `key`.
    #[must_use]
    pub fn sticky(mut self, key: impl Into<String>) -> Self {
        self.sticky = Some(key.into());
        self
    }

    /// The family asked for.
    pub fn family(&self) -> Family {
        match self.want {
            Want::Any(f) => f,
            Want::Specific(ip) => Family::of(&ip),
        }
    }
}

/// An address handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allocation {
    /// The address with its pool's prefix length (what an endpoint record stores).
    pub address: IpNet,
    /// The pool's gateway, if it has one.
    pub gateway: Option<IpAddr>,
    /// The owner it is held by.
    pub owner: String,
    /// The sticky key, if the request gave one.
    pub sticky: Option<String>,
}

/// An address held, as the store sees it ([`Ipam::allocations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    /// The address.
    pub ip: IpAddr,
    /// Who holds it.
    pub owner: String,
    /// When it was handed out, ms since the Unix epoch.
    pub since_ms: u64,
    /// Its sticky key, if any.
    pub sticky: Option<String>,
    /// The host whose block it is in.
    pub block_host: String,
}

/// A sticky reservation ([`Ipam::reservations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// The key.
    pub key: String,
    /// The address reserved.
    pub ip: IpAddr,
    /// The owner holding it now, or `None` if it is released and only reserved.
    pub holder: Option<String>,
    /// When a released reservation expires, ms since the Unix epoch.
    pub until_ms: Option<u64>,
}

/// What [`Ipam::collect`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CollectReport {
    /// Allocations freed (or turned into reservations) because their owner had no endpoint.
    pub reclaimed: usize,
    /// Expired sticky reservations dropped.
    pub expired: usize,
    /// Keys removed because their network has no pools any more.
    pub orphans: usize,
    /// Blocks left for a later run because another writer changed them meanwhile.
    pub skipped: usize,
}

/// The IPAM the controller calls. Object-safe: use it as `Arc<dyn Ipam>`.
///
/// Errors: [`InvalidArgument`](crate::ErrorKind::InvalidArgument) for malformed input (nothing changed),
/// [`NotFound`](crate::ErrorKind::NotFound) for a network without pools, [`Conflict`](crate::ErrorKind::Conflict) for overlaps,
/// addresses taken, exhausted pools and races still lost after every retry; store errors
/// (`Unavailable`, `Timeout`) pass through.
#[async_trait]
pub trait Ipam: Send + Sync + std::fmt::Debug {
    /// Claims pools for a network, atomically and cluster-wide: either every requested pool
    /// is claimed or none. Refuses (Conflict) any overlap with another network's pool, and
    /// `AlreadyExists` if the network has pools already. Returns the pools, defaults resolved
    /// and gateways filled in. `name` is the network's name, used in messages.
    async fn add_pools(
        &self,
        network: &NetworkId,
        name: &str,
        requests: &[PoolRequest],
    ) -> Result<Vec<PoolConfig>>;

    /// The network's pools (NotFound if it has none).
    async fn pools(&self, network: &NetworkId) -> Result<Vec<PoolConfig>>;

    /// Releases every pool of the network with all its allocations and reservations, so its
    /// subnets may be claimed again. Returns whether it had pools. The controller removes the
    /// network's endpoints first.
    async fn release_pools(&self, network: &NetworkId) -> Result<bool>;

    /// Hands out an address. Idempotent per owner: an "any" request retried after its reply
    /// was lost (a store timeout on a write that did commit) returns the address the first
    /// attempt got rather than a second one, as does a specific request for an address its
    /// owner holds.
    async fn request(&self, network: &NetworkId, request: &AddressRequest) -> Result<Allocation>;

    /// Releases `ip` held by `owner`: freed, or kept reserved if it was requested as sticky.
    /// Returns false if it was not held; Conflict if another owner holds it.
    async fn release(&self, network: &NetworkId, ip: IpAddr, owner: &str) -> Result<bool>;

    /// Ends the sticky reservation `key` of `family`: a released address becomes free; a held
    /// one stays held but is no longer sticky. Returns whether there was one.
    async fn drop_reservation(
        &self,
        network: &NetworkId,
        family: Family,
        key: &str,
    ) -> Result<bool>;

    /// Every address held on the network, as the store has it now.
    async fn allocations(&self, network: &NetworkId) -> Result<Vec<Holding>>;

    /// Every sticky reservation of the network.
    async fn reservations(&self, network: &NetworkId) -> Result<Vec<Reservation>>;

    /// A default subnet of `family` that no network's pool overlaps now, for a caller that
    /// must name the subnet before the network exists (Docker's IPAM protocol asks for the
    /// pool first). Nothing is claimed: [`add_pools`](Self::add_pools) claims it, and fails
    /// if another network took it meanwhile.
    async fn suggest_subnet(&self, family: Family) -> Result<IpNet>;

    /// Frees allocations whose owner is not in `live_owners` and is older than the owner
    /// grace (a sticky one becomes a reservation), drops expired reservations, and removes
    /// state left by released networks. Safe to run from several hosts at once.
    async fn collect(&self, live_owners: &HashSet<String>) -> Result<CollectReport>;
}

#[async_trait]
impl Ipam for StoreIpam {
    async fn add_pools(
        &self,
        network: &NetworkId,
        name: &str,
        requests: &[PoolRequest],
    ) -> Result<Vec<PoolConfig>> {
        self.add_pools_impl(network, name, requests).await
    }

    async fn pools(&self, network: &NetworkId) -> Result<Vec<PoolConfig>> {
        let (pools, _) = self.network(network).await?;
        Ok(pools.iter().map(|p| p.config().clone()).collect())
    }

    async fn release_pools(&self, network: &NetworkId) -> Result<bool> {
        self.release_pools_impl(network).await
    }

    async fn request(&self, network: &NetworkId, request: &AddressRequest) -> Result<Allocation> {
        self.request_impl(network, request).await
    }

    async fn release(&self, network: &NetworkId, ip: IpAddr, owner: &str) -> Result<bool> {
        self.release_impl(network, ip, owner).await
    }

    async fn drop_reservation(
        &self,
        network: &NetworkId,
        family: Family,
        key: &str,
    ) -> Result<bool> {
        self.drop_reservation_impl(network, family, key).await
    }

    async fn allocations(&self, network: &NetworkId) -> Result<Vec<Holding>> {
        self.allocations_impl(network).await
    }

    async fn suggest_subnet(&self, family: Family) -> Result<IpNet> {
        self.suggest_subnet_impl(family).await
    }

    async fn reservations(&self, network: &NetworkId) -> Result<Vec<Reservation>> {
        self.reservations_impl(network).await
    }

    async fn collect(&self, live_owners: &HashSet<String>) -> Result<CollectReport> {
        self.collect_impl(live_owners).await
    }
}
