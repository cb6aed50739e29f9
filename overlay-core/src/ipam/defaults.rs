//! Default pools (the subnet a network gets when it asks for none) and overlap detection.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::pool::Family;

/// A list of default subnets: every `/len` subnet of `base`, in address order.
///
/// Docker's overlay default is `DefaultPool { base: 10.0.0.0/8, len: 24 }`: 10.0.0.0/24,
/// 10.0.1.0/24, … 10.255.255.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DefaultPool {
    /// The range the subnets are cut from.
    pub base: IpNet,
    /// Prefix length of each subnet; at least `base`'s.
    pub len: u8,
}

impl DefaultPool {
    /// Docker's overlay default for IPv4: the /24s of 10.0.0.0/8.
    pub fn docker_v4() -> DefaultPool {
        DefaultPool {
            base: IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)), 8),
            len: 24,
        }
    }
}

/// Whether two subnets share any address (one contains the other's network address).
pub(crate) fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

fn net_at(family: Family, v: u128, len: u8) -> Option<IpNet> {
    let addr = match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(u32::try_from(v).ok()?)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(v)),
    };
    IpNet::new(addr, len).ok()
}

/// The first subnet of `list` (of `family`) that overlaps none of `taken`.
pub(crate) fn pick_default(list: &[DefaultPool], family: Family, taken: &[IpNet]) -> Option<IpNet> {
    list.iter()
        .filter(|d| Family::of_net(&d.base) == family)
        .find_map(|d| first_free(d, family, taken))
}

fn first_free(dp: &DefaultPool, family: Family, taken: &[IpNet]) -> Option<IpNet> {
    let bits: u8 = if family == Family::V4 { 32 } else { 128 };
    if dp.len == 0 || dp.len < dp.base.prefix_len() || dp.len > bits {
        return None;
    }
    let step = 1u128.checked_shl(u32::from(bits - dp.len)).unwrap_or(0);
    let end = to_u128(dp.base.broadcast());
    let mut start = to_u128(dp.base.network());
    // Each turn moves `start` past a candidate or past a taken subnet, so this ends after at
    // most `taken.len()` skips plus one step per candidate examined.
    while start <= end {
        let cand = net_at(family, start, dp.len)?;
        let Some(hit) = taken.iter().find(|t| overlaps(t, &cand)) else {
            return Some(cand);
        };
        let past_hit = to_u128(hit.broadcast()).checked_add(1)?;
        let aligned = past_hit.checked_add(step - 1)? / step * step;
        start = aligned.max(start.checked_add(step)?);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn picks_the_first_free_24_of_10_8() {
        let d = [DefaultPool::docker_v4()];
        let pick =
            |taken: &[&str]| pick_default(&d, Family::V4, &nets(taken)).map(|n| n.to_string());
        assert_eq!(pick(&[]).as_deref(), Some("10.0.0.0/24"));
        assert_eq!(pick(&["10.0.0.0/24"]).as_deref(), Some("10.0.1.0/24"));
        assert_eq!(
            pick(&["10.0.0.0/24", "10.0.2.0/24"]).as_deref(),
            Some("10.0.1.0/24")
        );
        assert_eq!(pick(&["10.0.0.0/16"]).as_deref(), Some("10.1.0.0/24"));
        assert_eq!(pick(&["10.0.0.128/25"]).as_deref(), Some("10.0.1.0/24"));
        assert_eq!(pick(&["10.0.0.0/8"]), None);
        assert_eq!(pick(&["192.168.0.0/16"]).as_deref(), Some("10.0.0.0/24"));
        assert_eq!(pick_default(&d, Family::V6, &[]), None);
    }

    #[test]
    fn ipv6_list() {
        let d = [DefaultPool {
            base: "fd00::/56".parse().unwrap(),
            len: 64,
        }];
        let got = pick_default(&d, Family::V6, &nets(&["fd00::/64", "fd00:0:0:1::/64"]));
        assert_eq!(got, Some("fd00:0:0:2::/64".parse().unwrap()));
    }

    #[test]
    fn overlap() {
        let n = nets(&["10.0.0.0/16", "10.0.5.0/24", "10.1.0.0/24", "10.0.0.0/16"]);
        assert!(overlaps(&n[0], &n[1]) && overlaps(&n[1], &n[0]));
        assert!(!overlaps(&n[0], &n[2]));
        assert!(overlaps(&n[0], &n[3]), "identical subnets overlap");
    }
}
