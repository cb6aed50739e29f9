//! Pool maths: which addresses of a subnet may be handed out, and how a pool is cut into blocks.
//!
//! Addresses are handled as offsets from the subnet's network address (`u128`, so IPv4 and IPv6
//! share one code path). Rules:
//!
//! - The network address (offset 0) is never handed out, and for IPv4 neither is the broadcast
//!   address (the last one). IPv6 has no broadcast; its offset 0 is the subnet-router anycast
//!   address and is kept back like IPv4's network address.
//! - Point-to-point subnets follow RFC 3021 (IPv4 /31) and RFC 6164 (IPv6 /127): both addresses
//!   are usable and there is no network or broadcast address. A /32 (IPv6 /128) holds exactly one
//!   usable address. Such subnets get no implicit gateway (a point-to-point link has none); an
//!   explicit gateway is honoured.
//! - The gateway is the one given, or else the first usable address of the subnet.
//! - Aux addresses are never handed out.
//! - With an ip-range, only addresses inside it are handed out by "any" requests; a specific
//!   request may name any usable address of the subnet (Docker's `--ip` outside `--ip-range`).
//! - IPv4 subnets must be /8 or longer and IPv6 subnets /64 or longer, which keeps every offset
//!   and block index in range and refuses pools no overlay network needs.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::model::PoolConfig;

/// Address family of a pool or request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Family {
    /// The family of an address.
    pub fn of(ip: &IpAddr) -> Family {
        if ip.is_ipv4() { Family::V4 } else { Family::V6 }
    }

    /// The family of a subnet.
    pub fn of_net(net: &IpNet) -> Family {
        Family::of(&net.addr())
    }

    /// `"v4"` or `"v6"`, as used in store keys.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }

    fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// Shortest IPv4 prefix accepted for a pool.
pub const MIN_V4_PREFIX: u8 = 8;
/// Shortest IPv6 prefix accepted for a pool.
pub const MIN_V6_PREFIX: u8 = 64;

/// Why an address of a pool is never handed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserved {
    /// The subnet's network address.
    Network,
    /// The IPv4 broadcast address.
    Broadcast,
    /// The gateway.
    Gateway,
    /// An aux address, with its name.
    Aux(String),
}

impl std::fmt::Display for Reserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reserved::Network => f.write_str("the network address"),
            Reserved::Broadcast => f.write_str("the broadcast address"),
            Reserved::Gateway => f.write_str("the gateway"),
            Reserved::Aux(name) => write!(f, "aux address {name:?}"),
        }
    }
}

/// A validated pool: its configuration (gateway filled in) and the maths over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    config: PoolConfig,
    family: Family,
    base: u128,
    size: u128,
    /// Offsets never handed out, with the reason.
    reserved: BTreeMap<u128, Reserved>,
    /// Inclusive offsets "any" requests draw from (the ip-range, or the whole subnet).
    dyn_lo: u128,
    dyn_hi: u128,
    /// Host bits of one block (`size` of a block is `1 << block_bits`).
    block_bits: u8,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

impl Pool {
    /// Validates `config` and computes the pool. `block_host_bits` is the wanted size of a
    /// block (a pool smaller than that is one block). Fills in the default gateway.
    pub fn new(config: &PoolConfig, block_host_bits: u8) -> Result<Pool> {
        let subnet = config.subnet;
        let family = Family::of_net(&subnet);
        let op = "check address pool";
        let bad = |why: String, hint: &'static str| Error::invalid(op, why).with_hint(hint);
        let min = if family == Family::V4 {
            MIN_V4_PREFIX
        } else {
            MIN_V6_PREFIX
        };
        if subnet.prefix_len() < min {
            return Err(bad(
                format!("{family} subnet {subnet} is larger than /{min}"),
                "use a longer prefix: a /8 or smaller for IPv4, a /64 or smaller for IPv6",
            ));
        }
        if subnet.trunc() != subnet {
            return Err(bad(
                format!(
                    "subnet {subnet} has host bits set (did you mean {}?)",
                    subnet.trunc()
                ),
                "give the subnet's network address",
            ));
        }
        let host_bits = family.bits() - subnet.prefix_len();
        let size = 1u128 << host_bits;
        let base = to_u128(subnet.network());
        let mut pool = Pool {
            config: config.clone(),
            family,
            base,
            size,
            reserved: BTreeMap::new(),
            dyn_lo: 0,
            dyn_hi: size - 1,
            block_bits: host_bits.min(block_host_bits),
        };
        // Point-to-point subnets (host bits ≤ 1) have neither network nor broadcast address.
        if host_bits >= 2 {
            pool.reserved.insert(0, Reserved::Network);
            if family == Family::V4 {
                pool.reserved.insert(size - 1, Reserved::Broadcast);
            }
        }
        let check_addr = |what: String, ip: IpAddr| -> Result<u128> {
            let off = pool.offset_of(ip).ok_or_else(|| {
                bad(
                    format!("{what} {ip} is outside subnet {subnet}"),
                    "pick an address inside the subnet",
                )
            })?;
            if let Some(r) = pool.reserved.get(&off) {
                return Err(bad(
                    format!("{what} {ip} is {r} of subnet {subnet}"),
                    "pick another address of the subnet",
                ));
            }
            Ok(off)
        };
        let gateway = match config.gateway {
            Some(gw) => Some(check_addr("gateway".into(), gw)?),
            None if host_bits >= 2 => Some(1),
            None => None,
        };
        let mut aux = BTreeMap::new();
        for (name, ip) in &config.aux_addresses {
            let off = check_addr(format!("aux address {name:?} ="), *ip)?;
            if gateway == Some(off) {
                return Err(bad(
                    format!("aux address {name:?} = {ip} is the gateway of subnet {subnet}"),
                    "the gateway is reserved already; remove the aux address",
                ));
            }
            aux.insert(off, Reserved::Aux(name.clone()));
        }
        if let Some(gw) = gateway {
            pool.reserved.insert(gw, Reserved::Gateway);
            pool.config.gateway = Some(pool.addr_at(gw));
        }
        pool.reserved.extend(aux);
        if let Some(range) = config.ip_range {
            if range.trunc() != range {
                return Err(bad(
                    format!(
                        "ip-range {range} has host bits set (did you mean {}?)",
                        range.trunc()
                    ),
                    "give the range's network address",
                ));
            }
            let (Some(lo), Some(hi)) = (
                pool.offset_of(range.network()),
                pool.offset_of(range.broadcast()),
            ) else {
                return Err(bad(
                    format!("ip-range {range} is not inside subnet {subnet}"),
                    "give an ip-range inside the subnet",
                ));
            };
            pool.dyn_lo = lo;
            pool.dyn_hi = hi;
        }
        Ok(pool)
    }

    /// The configuration, with the gateway filled in.
    pub fn config(&self) -> &PoolConfig {
        &self.config
    }

    /// The subnet.
    pub fn subnet(&self) -> IpNet {
        self.config.subnet
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The pool's name in store keys: the subnet with `/` replaced by `-` (`10.0.0.0-24`).
    pub fn key_id(&self) -> String {
        format!(
            "{}-{}",
            self.config.subnet.network(),
            self.config.subnet.prefix_len()
        )
    }

    /// Number of addresses in the subnet.
    pub fn size(&self) -> u128 {
        self.size
    }

    /// The offset of `ip` in the subnet, if it is inside.
    pub fn offset_of(&self, ip: IpAddr) -> Option<u128> {
        if Family::of(&ip) != self.family || !self.config.subnet.contains(&ip) {
            return None;
        }
        Some(to_u128(ip) - self.base)
    }

    /// The address at `offset` (which must be below [`Pool::size`]).
    pub fn addr_at(&self, offset: u128) -> IpAddr {
        let v = self.base + offset;
        match self.family {
            // An IPv4 subnet's base plus an offset below its size stays below 2^32.
            Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).unwrap_or(u32::MAX))),
            Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
        }
    }

    /// Why the address at `offset` can never be handed out, or `None` if it can.
    pub fn reserved(&self, offset: u128) -> Option<&Reserved> {
        self.reserved.get(&offset)
    }

    /// Whether an "any" request may hand out the address at `offset`.
    pub fn is_dynamic(&self, offset: u128) -> bool {
        (self.dyn_lo..=self.dyn_hi).contains(&offset) && !self.reserved.contains_key(&offset)
    }

    /// How many addresses "any" requests can hand out in total.
    pub fn dynamic_count(&self) -> u128 {
        let span = self.dyn_hi - self.dyn_lo + 1;
        span - self.reserved.range(self.dyn_lo..=self.dyn_hi).count() as u128
    }

    /// Host bits of one block.
    pub fn block_bits(&self) -> u8 {
        self.block_bits
    }

    /// Addresses per block.
    pub fn block_size(&self) -> u128 {
        1u128 << self.block_bits
    }

    /// Number of blocks the pool is cut into.
    pub fn block_count(&self) -> u128 {
        self.size >> self.block_bits
    }

    /// The block holding `offset` and the offset inside that block.
    pub fn block_of(&self, offset: u128) -> (u64, u64) {
        // Block indices fit in u64: at most 2^(128-64) addresses over blocks of ≥ 1.
        let index = u64::try_from(offset >> self.block_bits).unwrap_or(u64::MAX);
        let inner = u64::try_from(offset & (self.block_size() - 1)).unwrap_or(u64::MAX);
        (index, inner)
    }

    /// The pool offset of `inner` in block `index`.
    pub fn offset_in_block(&self, index: u64, inner: u64) -> u128 {
        (u128::from(index) << self.block_bits) + u128::from(inner)
    }

    /// Blocks that contain at least one address of the ip-range, as an inclusive index range.
    pub fn dynamic_blocks(&self) -> (u64, u64) {
        (self.block_of(self.dyn_lo).0, self.block_of(self.dyn_hi).0)
    }

    /// The first inner offset of block `index` that an "any" request may take, scanning from
    /// just after `cursor` (the block's most recent dynamic allocation) to the block's end and
    /// then wrapping to its start, skipping inner offsets for which `taken` is true.
    pub fn next_dynamic(
        &self,
        index: u64,
        cursor: Option<u64>,
        taken: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        let size = u64::try_from(self.block_size()).unwrap_or(u64::MAX);
        let start = cursor.map_or(0, |c| (c + 1) % size);
        (0..size)
            .map(|i| (start + i) % size)
            .find(|&inner| !taken(inner) && self.is_dynamic(self.offset_in_block(index, inner)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(subnet: &str) -> Pool {
        Pool::new(&PoolConfig::new(subnet.parse().unwrap()), 6).unwrap()
    }

    fn dynamic_addrs(p: &Pool) -> Vec<IpAddr> {
        (0..p.size())
            .filter(|&o| p.is_dynamic(o))
            .map(|o| p.addr_at(o))
            .collect()
    }

    fn ips(list: &[&str]) -> Vec<IpAddr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn ipv4_24_keeps_network_broadcast_and_gateway() {
        let p = pool("10.0.0.0/24");
        assert_eq!(p.config().gateway, Some("10.0.0.1".parse().unwrap()));
        assert_eq!(p.dynamic_count(), 253);
        assert_eq!(p.reserved(0), Some(&Reserved::Network));
        assert_eq!(p.reserved(255), Some(&Reserved::Broadcast));
        assert_eq!(p.reserved(1), Some(&Reserved::Gateway));
        let d = dynamic_addrs(&p);
        assert_eq!(d.first(), Some(&"10.0.0.2".parse().unwrap()));
        assert_eq!(d.last(), Some(&"10.0.0.254".parse().unwrap()));
        assert_eq!(p.block_count(), 4);
        assert_eq!(p.key_id(), "10.0.0.0-24");
    }

    #[test]
    fn ipv4_31_is_point_to_point() {
        let p = pool("192.0.2.0/31");
        assert_eq!(p.config().gateway, None);
        assert_eq!(dynamic_addrs(&p), ips(&["192.0.2.0", "192.0.2.1"]));
        assert_eq!(p.block_count(), 1);
        let cfg = PoolConfig {
            gateway: Some("192.0.2.0".parse().unwrap()),
            ..PoolConfig::new("192.0.2.0/31".parse().unwrap())
        };
        let p = Pool::new(&cfg, 6).unwrap();
        assert_eq!(dynamic_addrs(&p), ips(&["192.0.2.1"]));
    }

    #[test]
    fn ipv4_32_holds_one_address() {
        let p = pool("192.0.2.7/32");
        assert_eq!(dynamic_addrs(&p), ips(&["192.0.2.7"]));
        assert_eq!(p.dynamic_count(), 1);
    }

    #[test]
    fn ipv6_64_has_no_broadcast() {
        let p = pool("fd00:1::/64");
        assert_eq!(p.config().gateway, Some("fd00:1::1".parse().unwrap()));
        assert_eq!(p.reserved(0), Some(&Reserved::Network));
        assert_eq!(p.reserved(p.size() - 1), None);
        assert!(p.is_dynamic(p.size() - 1));
        assert_eq!(
            p.addr_at(p.size() - 1),
            "fd00:1::ffff:ffff:ffff:ffff".parse::<IpAddr>().unwrap()
        );
        assert_eq!(p.dynamic_count(), (1u128 << 64) - 2);
        assert_eq!(p.block_count(), 1u128 << 58);
        let (idx, inner) = p.block_of(p.size() - 1);
        assert_eq!((idx, inner), ((1u64 << 58) - 1, 63));
        assert_eq!(p.offset_in_block(idx, inner), p.size() - 1);
        assert_eq!(p.key_id(), "fd00:1::-64");
    }

    #[test]
    fn ipv6_120() {
        let p = pool("fd00::100/120");
        let d = dynamic_addrs(&p);
        assert_eq!(d.len(), 254);
        assert_eq!(d[0], "fd00::102".parse::<IpAddr>().unwrap());
        assert_eq!(d[253], "fd00::1ff".parse::<IpAddr>().unwrap());
        assert_eq!(p.offset_of("fd00::200".parse().unwrap()), None);
        assert_eq!(p.offset_of("10.0.0.1".parse().unwrap()), None);
    }

    #[test]
    fn ip_range_limits_dynamic_addresses_only() {
        let cfg = PoolConfig {
            ip_range: Some("10.1.0.128/25".parse().unwrap()),
            ..PoolConfig::new("10.1.0.0/24".parse().unwrap())
        };
        let p = Pool::new(&cfg, 6).unwrap();
        let d = dynamic_addrs(&p);
        assert_eq!(d.len(), 127, "128 in the range minus the broadcast");
        assert_eq!(d[0], "10.1.0.128".parse::<IpAddr>().unwrap());
        assert_eq!(p.dynamic_blocks(), (2, 3));
        let off = p.offset_of("10.1.0.5".parse().unwrap()).unwrap();
        assert!(
            !p.is_dynamic(off) && p.reserved(off).is_none(),
            "specific requests may take it"
        );
    }

    #[test]
    fn aux_and_explicit_gateway_are_kept_back() {
        let mut cfg = PoolConfig::new("10.2.0.0/29".parse().unwrap());
        cfg.gateway = Some("10.2.0.6".parse().unwrap());
        cfg.aux_addresses
            .insert("router".into(), "10.2.0.1".parse().unwrap());
        cfg.aux_addresses
            .insert("dns".into(), "10.2.0.2".parse().unwrap());
        let p = Pool::new(&cfg, 6).unwrap();
        assert_eq!(
            dynamic_addrs(&p),
            ips(&["10.2.0.3", "10.2.0.4", "10.2.0.5"])
        );
        assert_eq!(p.reserved(2), Some(&Reserved::Aux("dns".into())));
    }

    #[test]
    fn bad_configs_are_refused_with_the_reason() {
        let cases: Vec<(PoolConfig, &str)> = vec![
            (
                PoolConfig {
                    subnet: "10.0.0.5/24".parse().unwrap(),
                    ..PoolConfig::new("10.0.0.0/24".parse().unwrap())
                },
                "host bits set (did you mean 10.0.0.0/24?)",
            ),
            (
                PoolConfig::new("10.0.0.0/7".parse().unwrap()),
                "larger than /8",
            ),
            (
                PoolConfig::new("fd00::/48".parse().unwrap()),
                "larger than /64",
            ),
            (
                PoolConfig {
                    gateway: Some("10.0.0.255".parse().unwrap()),
                    ..PoolConfig::new("10.0.0.0/24".parse().unwrap())
                },
                "gateway 10.0.0.255 is the broadcast address",
            ),
            (
                PoolConfig {
                    gateway: Some("10.0.1.1".parse().unwrap()),
                    ..PoolConfig::new("10.0.0.0/24".parse().unwrap())
                },
                "outside subnet",
            ),
            (
                PoolConfig {
                    ip_range: Some("10.0.0.0/23".parse().unwrap()),
                    ..PoolConfig::new("10.0.0.0/24".parse().unwrap())
                },
                "not inside subnet",
            ),
            (
                PoolConfig {
                    aux_addresses: [("gw".to_string(), "10.0.0.1".parse().unwrap())].into(),
                    ..PoolConfig::new("10.0.0.0/24".parse().unwrap())
                },
                "is the gateway",
            ),
        ];
        for (cfg, want) in cases {
            let e = Pool::new(&cfg, 6).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument);
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn next_dynamic_wraps_after_the_cursor() {
        let p = pool("10.0.0.0/24");
        // Block 0 holds .0-.63; .0 and .1 are reserved.
        assert_eq!(p.next_dynamic(0, None, |_| false), Some(2));
        assert_eq!(p.next_dynamic(0, Some(5), |_| false), Some(6));
        assert_eq!(p.next_dynamic(0, Some(63), |_| false), Some(2));
        assert_eq!(p.next_dynamic(0, Some(62), |i| i == 63 || i < 10), Some(10));
        assert_eq!(p.next_dynamic(0, Some(3), |_| true), None);
        // Block 3 (.192-.255) ends with the broadcast address, which the search skips.
        assert_eq!(p.next_dynamic(3, Some(61), |_| false), Some(62));
        assert_eq!(p.next_dynamic(3, Some(62), |_| false), Some(0));
    }
}
