//! libnetwork's IPAM protocol: pools are subnets of the global IPAM (the pool id is the
//! subnet, valid on every engine), addresses are held for the endpoint's MAC.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use overlay_core::ipam::Family;
use overlay_core::{AddressWant, Error, ErrorKind};

use super::{Binding, Plugin, Scope, parse_mac};
use crate::error::DriverResult;
use crate::options::address;
use crate::protocol::*;

impl Plugin {
    pub(super) async fn request_pool(&self, req: RequestPool) -> DriverResult<PoolReply> {
        let op = "request pool";
        let pool: IpNet = match req.pool.as_str() {
            "" if req.v6 => {
                return Err(Error::invalid(op, "the network's IPv6 pool has no subnet")
                    .with_hint("give the IPv6 subnet with --subnet (e.g. --subnet fd00:9::/64)")
                    .into());
            }
            // A free /24 of the default pools (Docker's overlay default, 10.0.0.0/8).
            "" => self.ctl.free_subnet(Family::V4).await?,
            p => p
                .parse()
                .map_err(|_| Error::invalid(op, format!("{p:?} is not a subnet")))?,
        };
        if pool.trunc() != pool {
            return Err(Error::invalid(op, format!("{pool} has host bits set"))
                .with_hint(format!("use {}", pool.trunc()))
                .into());
        }
        if req.v6 != matches!(pool, IpNet::V6(_)) {
            return Err(Error::invalid(op, format!("{pool} is not of the pool's family")).into());
        }
        if !req.sub_pool.is_empty() {
            let range: IpNet = req.sub_pool.parse().map_err(|_| {
                Error::invalid(op, format!("--ip-range {:?} is not a subnet", req.sub_pool))
            })?;
            if !pool.contains(&range) {
                return Err(Error::invalid(
                    op,
                    format!("--ip-range {range} is not inside --subnet {pool}"),
                )
                .into());
            }
            self.state().ranges.insert(pool, range);
        }
        // A subnet another network holds fails here, before the engine records anything;
        // the same subnet again is the same network in local scope (checked by name later).
        let scope = self.scope().await?;
        for (name, subnets) in self.cluster_subnets().await? {
            for s in subnets {
                let same = s == pool;
                if (same && scope == Scope::Global)
                    || (!same && (s.contains(&pool.network()) || pool.contains(&s.network())))
                {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        op,
                        format!("subnet {pool} overlaps {s} of network {name:?}"),
                    )
                    .with_hint("pick a subnet no other overlay network uses")
                    .into());
                }
            }
        }
        Ok(PoolReply {
            pool_id: pool.to_string(),
            pool: pool.to_string(),
            data: BTreeMap::new(),
        })
    }

    /// Every cluster network's subnets.
    pub(super) async fn cluster_subnets(&self) -> DriverResult<Vec<(String, Vec<IpNet>)>> {
        let mut out = Vec::new();
        for n in self.ctl.networks().await? {
            let Ok(inspect) = self.ctl.inspect(&n.id).await else {
                continue;
            };
            let subnets = inspect
                .ipam
                .config
                .iter()
                .filter_map(|c| c.subnet.parse().ok())
                .collect();
            out.push((n.name, subnets));
        }
        Ok(out)
    }

    pub(super) async fn request_address(&self, req: RequestAddress) -> DriverResult<AddressReply> {
        let pool = pool_of(&req.pool_id)?;
        let opts = req.options.unwrap_or_default();
        if opts.get("RequestAddressType").map(String::as_str) == Some("com.docker.network.gateway")
        {
            // The network reserves its gateway when it is made: nothing to hold here.
            let gw = match req.address.as_str() {
                "" => first_host(&pool)?,
                a => address(a)?,
            };
            return Ok(AddressReply {
                address: format!("{gw}/{}", pool.prefix_len()),
                data: BTreeMap::new(),
            });
        }
        let name = self.network_of_pool(pool).await?;
        let want = match req.address.as_str() {
            "" => AddressWant::Any(match pool {
                IpNet::V4(_) => Family::V4,
                IpNet::V6(_) => Family::V6,
            }),
            a => AddressWant::Specific(address(a)?),
        };
        let mac = opts
            .get("com.docker.network.endpoint.macaddress")
            .and_then(|m| parse_mac(m));
        let held = match self.ctl.request_address(&name, want, mac).await {
            // Removed through another engine (global scope tells only that one), and maybe
            // made again under another name: find the subnet's network afresh, once.
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.state().pools.remove(&pool);
                let name = self.network_of_pool(pool).await?;
                self.ctl.request_address(&name, want, mac).await?
            }
            r => r?,
        };
        Ok(AddressReply {
            address: held.address.to_string(),
            data: BTreeMap::new(),
        })
    }

    pub(super) async fn release_address(&self, req: ReleaseAddress) -> DriverResult<()> {
        let pool = pool_of(&req.pool_id)?;
        let ip = address(&req.address)?;
        let never_made = matches!(
            self.state().binding_with_pool(pool),
            Some((_, Binding::Failed { .. }))
        );
        if never_made {
            // Nothing was handed out on a network that could not be made.
            return Ok(());
        }
        let name = match self.network_of_pool(pool).await {
            Ok(n) => n,
            // The network went first (its pools with it): nothing left to release.
            Err(e) if e.kind == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        match self.ctl.release_address(&name, ip).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The cluster network whose subnet is `pool`: one being made on this host waits for its
    /// name first.
    pub(super) async fn network_of_pool(&self, pool: IpNet) -> DriverResult<String> {
        let (known, making) = {
            let st = self.state();
            (
                st.pools.get(&pool).cloned(),
                st.binding_with_pool(pool).map(|(id, _)| id.clone()),
            )
        };
        if let Some(n) = known {
            return Ok(n);
        }
        if let Some(id) = making {
            self.network_of(&id).await?;
        }
        for (name, subnets) in self.cluster_subnets().await? {
            if subnets.contains(&pool) {
                self.state().pools.insert(pool, name.clone());
                return Ok(name);
            }
        }
        Err(Error::new(
            ErrorKind::NotFound,
            "find network",
            format!("no overlay network has subnet {pool}"),
        )
        .with_hint("the network was removed from the cluster: remove it from this engine (docker network rm) and create it again")
        .into())
    }
}

/// The subnet a pool id names.
fn pool_of(id: &str) -> DriverResult<IpNet> {
    id.parse().map_err(|_| {
        Error::invalid(
            "find pool",
            format!("pool id {id:?} is not one of this IPAM's (a subnet)"),
        )
        .into()
    })
}

/// The first address after `pool`'s network address: its default gateway (IPv6's first
/// address is the subnet-router anycast address, not a host's).
fn first_host(pool: &IpNet) -> DriverResult<IpAddr> {
    let none = || Error::invalid("request address", format!("{pool} has no host addresses"));
    match pool {
        IpNet::V4(p) => p
            .hosts()
            .next()
            .map(IpAddr::V4)
            .ok_or_else(|| none().into()),
        IpNet::V6(p) if p.prefix_len() < 128 => {
            Ok(IpAddr::V6((u128::from(p.network()) + 1).into()))
        }
        IpNet::V6(_) => Err(none().into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_ids_are_subnets() {
        assert_eq!(pool_of("10.0.9.0/24").unwrap().to_string(), "10.0.9.0/24");
        let e = pool_of("LocalDefault/10.0.9.0/24").unwrap_err();
        assert!(e.err.contains("not one of this IPAM's"), "{}", e.err);
        assert_eq!(
            first_host(&"10.0.9.0/24".parse().unwrap()).unwrap(),
            "10.0.9.1".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            first_host(&"fd00:9::/64".parse().unwrap()).unwrap(),
            "fd00:9::1".parse::<IpAddr>().unwrap()
        );
    }
}
