//! Allocator tests over a real `KvStore`.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::test_support::{Counting, Fixture};
use super::*;
use crate::ErrorKind;
use crate::model::{HostId, NetworkId, PoolConfig};
use crate::store::KvStore;

fn ipam_on(store: Arc<dyn KvStore>, host: &str, config: IpamConfig) -> StoreIpam {
    StoreIpam::new(store, HostId::new(host).unwrap(), config)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn subnet(s: &str) -> PoolRequest {
    PoolRequest::Subnet(PoolConfig::new(s.parse().unwrap()))
}

async fn network_with(ipam: &StoreIpam, pools: &[PoolRequest]) -> NetworkId {
    let id = NetworkId::random();
    ipam.add_pools(&id, "net", pools).await.unwrap();
    id
}

async fn any4(ipam: &StoreIpam, net: &NetworkId, owner: &str) -> Result<IpAddr> {
    ipam.request(net, &AddressRequest::any(Family::V4, owner))
        .await
        .map(|a| a.address.addr())
}

#[tokio::test]
async fn overlapping_and_identical_pools_are_refused_naming_both() {
    let fx = Fixture::new().await;
    let ipam: Arc<dyn Ipam> = Arc::new(ipam_on(fx.store(), "h1", IpamConfig::default()));
    let a = NetworkId::random();
    ipam.add_pools(&a, "alpha", &[subnet("10.5.0.0/16")])
        .await
        .unwrap();
    for (want, what) in [
        ("10.5.3.0/24", "overlaps pool"),
        ("10.5.0.0/16", "is already the pool"),
    ] {
        let e = ipam
            .add_pools(&NetworkId::random(), "beta", &[subnet(want)])
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Conflict);
        let msg = e.to_string();
        for part in [
            want,
            what,
            "\"beta\"",
            "10.5.0.0/16",
            "\"alpha\"",
            &a.short(),
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
    }
    let e = ipam
        .add_pools(&a, "alpha", &[subnet("10.9.0.0/24")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::AlreadyExists, "{e}");
    // A refused request changed nothing: the registry holds alpha's pool only.
    let c = NetworkId::random();
    let got = ipam
        .add_pools(&c, "gamma", &[PoolRequest::Default(Family::V4)])
        .await
        .unwrap();
    assert_eq!(got[0].subnet.to_string(), "10.0.0.0/24");
}

/// A host's reserved range (its gateway pool) is skipped by default picks and refused as an
/// explicit subnet.
#[tokio::test]
async fn reserved_ranges_are_never_given_to_a_network() {
    let fx = Fixture::new().await;
    let config = IpamConfig {
        reserved: vec!["10.0.0.0/23".parse().unwrap()],
        ..IpamConfig::default()
    };
    let ipam = ipam_on(fx.store(), "h1", config);
    let e = ipam
        .add_pools(&NetworkId::random(), "beta", &[subnet("10.0.1.128/25")])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("10.0.0.0/23"), "{e}");
    let got = ipam
        .add_pools(
            &NetworkId::random(),
            "gamma",
            &[PoolRequest::Default(Family::V4)],
        )
        .await
        .unwrap();
    assert_eq!(got[0].subnet.to_string(), "10.0.2.0/24");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_networks_never_claim_overlapping_pools() {
    let fx = Fixture::new().await;
    let subnets = [
        "10.50.0.0/16",
        "10.50.1.0/24",
        "10.50.0.0/16",
        "10.50.2.0/24",
        "10.50.1.0/24",
        "10.50.0.0/17",
    ];
    let mut tasks = Vec::new();
    for (i, s) in subnets.into_iter().enumerate() {
        // Separate allocators (as separate hosts would be), all on one store.
        let ipam = ipam_on(fx.store(), &format!("h{i}"), IpamConfig::default());
        tasks.push(tokio::spawn(async move {
            let id = NetworkId::random();
            ipam.add_pools(&id, &format!("n{i}"), &[subnet(s)])
                .await
                .map(|p| p[0].subnet)
        }));
    }
    let mut won = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Ok(net) => won.push(net),
            Err(e) => assert_eq!(e.kind(), ErrorKind::Conflict, "{e}"),
        }
    }
    assert!(!won.is_empty());
    for (i, a) in won.iter().enumerate() {
        for b in &won[i + 1..] {
            assert!(
                !super::defaults::overlaps(a, b),
                "{a} and {b} were both claimed"
            );
        }
    }
}

#[tokio::test]
async fn default_pools_are_the_first_free_24s_and_come_back_on_release() {
    let fx = Fixture::new().await;
    let ipam = ipam_on(fx.store(), "h1", IpamConfig::default());
    let mut nets = Vec::new();
    for want in ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24"] {
        let id = NetworkId::random();
        let got = ipam
            .add_pools(&id, "n", &[PoolRequest::Default(Family::V4)])
            .await
            .unwrap();
        assert_eq!(got[0].subnet.to_string(), want);
        assert_eq!(got[0].gateway, Some(ip(&want.replace(".0/24", ".1"))));
        nets.push(id);
    }
    any4(&ipam, &nets[1], "ep1").await.unwrap();
    assert!(ipam.release_pools(&nets[1]).await.unwrap());
    assert!(!ipam.release_pools(&nets[1]).await.unwrap());
    assert_eq!(
        ipam.pools(&nets[1]).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert!(
        ipam.store()
            .list("ipam/blocks/")
            .await
            .unwrap()
            .kvs
            .iter()
            .all(|kv| !kv.key.contains(&nets[1].to_string()))
    );
    let id = NetworkId::random();
    let got = ipam
        .add_pools(&id, "n", &[PoolRequest::Default(Family::V4)])
        .await
        .unwrap();
    assert_eq!(got[0].subnet.to_string(), "10.0.1.0/24");
    let e = ipam
        .add_pools(&id, "n6", &[PoolRequest::Default(Family::V6)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            e.kind(),
            ErrorKind::InvalidArgument | ErrorKind::AlreadyExists
        ),
        "{e}"
    );
    let e = ipam
        .add_pools(
            &NetworkId::random(),
            "n6",
            &[PoolRequest::Default(Family::V6)],
        )
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
    assert!(e.to_string().contains("no default IPv6 pools"), "{e}");
}

#[tokio::test]
async fn any_takes_the_lowest_free_after_the_last_and_wraps() {
    let fx = Fixture::new().await;
    let ipam = ipam_on(fx.store(), "h1", IpamConfig::default());
    let net = network_with(&ipam, &[subnet("10.1.0.0/28")]).await;
    let mut got = Vec::new();
    for i in 0..5 {
        got.push(any4(&ipam, &net, &format!("ep{i}")).await.unwrap());
    }
    assert_eq!(
        got,
        ["10.1.0.2", "10.1.0.3", "10.1.0.4", "10.1.0.5", "10.1.0.6"].map(ip)
    );
    assert!(ipam.release(&net, ip("10.1.0.3"), "ep1").await.unwrap());
    assert_eq!(
        any4(&ipam, &net, "ep5").await.unwrap(),
        ip("10.1.0.7"),
        "a just-released address waits"
    );
    for i in 6..13 {
        any4(&ipam, &net, &format!("ep{i}")).await.unwrap();
    }
    // .8 to .14 were taken; only now does the search wrap around to .3.
    assert_eq!(ipam.allocations(&net).await.unwrap().len(), 12);
    assert_eq!(any4(&ipam, &net, "ep13").await.unwrap(), ip("10.1.0.3"));
    let e = any4(&ipam, &net, "ep14").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(
        e.to_string().contains("10.1.0.0/28") && e.to_string().contains("no free address"),
        "{e}"
    );
}

#[tokio::test]
async fn exhaustion_names_the_pool_and_ranges_and_aux_are_honoured() {
    let fx = Fixture::new().await;
    let ipam = ipam_on(fx.store(), "h1", IpamConfig::default());
    let mut cfg = PoolConfig::new("10.2.0.0/24".parse().unwrap());
    cfg.ip_range = Some("10.2.0.8/30".parse().unwrap());
    cfg.aux_addresses.insert("dns".into(), ip("10.2.0.9"));
    let net = network_with(&ipam, &[PoolRequest::Subnet(cfg)]).await;
    let mut got = Vec::new();
    for i in 0..3 {
        got.push(any4(&ipam, &net, &format!("e{i}")).await.unwrap());
    }
    assert_eq!(got, ["10.2.0.8", "10.2.0.10", "10.2.0.11"].map(ip));
    let e = any4(&ipam, &net, "e3").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("10.2.0.0/24"), "{e}");
    // Outside the range but inside the subnet: a specific request may take it.
    let a = ipam
        .request(&net, &AddressRequest::specific(ip("10.2.0.200"), "e4"))
        .await
        .unwrap();
    assert_eq!(a.address.to_string(), "10.2.0.200/24");
    assert_eq!(a.gateway, Some(ip("10.2.0.1")));
}

#[tokio::test]
async fn specific_requests() {
    let fx = Fixture::new().await;
    let ipam = ipam_on(fx.store(), "h1", IpamConfig::default());
    let net = network_with(&ipam, &[subnet("10.3.0.0/24"), subnet("fd00:3::/64")]).await;
    let req = AddressRequest::specific(ip("10.3.0.77"), "a");
    assert_eq!(
        ipam.request(&net, &req).await.unwrap().address.addr(),
        ip("10.3.0.77")
    );
    assert_eq!(
        ipam.request(&net, &req).await.unwrap().address.addr(),
        ip("10.3.0.77"),
        "same owner: same answer"
    );
    let e = ipam
        .request(&net, &AddressRequest::specific(ip("10.3.0.77"), "b"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(e.to_string().contains("held by \"a\""), "{e}");
    for (bad, want) in [
        ("10.4.0.1", "outside every pool"),
        ("10.3.0.1", "the gateway"),
        ("10.3.0.255", "broadcast"),
        ("10.3.0.0", "network address"),
    ] {
        let e = ipam
            .request(&net, &AddressRequest::specific(ip(bad), "b"))
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
        assert!(e.to_string().contains(want), "{e}");
    }
    let e = ipam.release(&net, ip("10.3.0.77"), "b").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    assert!(ipam.release(&net, ip("10.3.0.77"), "a").await.unwrap());
    assert!(!ipam.release(&net, ip("10.3.0.77"), "a").await.unwrap());
    // Any requests skip the specific one.
    let v6 = ipam
        .request(&net, &AddressRequest::any(Family::V6, "c"))
        .await
        .unwrap();
    assert_eq!(v6.address.to_string(), "fd00:3::2/64");
    let last = ip("fd00:3::ffff:ffff:ffff:ffff");
    assert_eq!(
        ipam.request(&net, &AddressRequest::specific(last, "d"))
            .await
            .unwrap()
            .address
            .addr(),
        last
    );
    let e = ipam
        .request(&net, &AddressRequest::any(Family::V4, "bad owner"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument);
}

#[tokio::test]
async fn any_requests_are_idempotent_per_owner() {
    let fx = Fixture::new().await;
    let ipam = ipam_on(fx.store(), "h1", IpamConfig::default());
    let net = network_with(&ipam, &[subnet("10.13.0.0/24")]).await;
    let a = any4(&ipam, &net, "ep1").await.unwrap();
    assert_eq!(any4(&ipam, &net, "ep1").await.unwrap(), a);
    // A restarted process (empty cache) retrying the same request gets the same address.
    let restarted = ipam_on(fx.store(), "h1", IpamConfig::default());
    assert_eq!(any4(&restarted, &net, "ep1").await.unwrap(), a);
    assert_eq!(ipam.allocations(&net).await.unwrap().len(), 1);
    assert_ne!(any4(&restarted, &net, "ep2").await.unwrap(), a);
}

#[tokio::test]
async fn point_to_point_and_single_address_pools() {
    let fx = Fixture::new().await;
    let ipam = ipam_on(fx.store(), "h1", IpamConfig::default());
    let net = network_with(&ipam, &[subnet("192.0.2.0/31"), subnet("fd00:9::7/128")]).await;
    assert_eq!(ipam.pools(&net).await.unwrap()[0].gateway, None);
    let a = any4(&ipam, &net, "a").await.unwrap();
    let b = any4(&ipam, &net, "b").await.unwrap();
    assert_eq!((a, b), (ip("192.0.2.0"), ip("192.0.2.1")));
    assert_eq!(
        any4(&ipam, &net, "c").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let v6 = ipam
        .request(&net, &AddressRequest::any(Family::V6, "d"))
        .await
        .unwrap();
    assert_eq!(v6.address.to_string(), "fd00:9::7/128");
}

#[tokio::test]
async fn sticky_addresses_survive_release_until_dropped() {
    let fx = Fixture::new().await;
    let ipam = ipam_on(fx.store(), "h1", IpamConfig::default());
    let net = network_with(&ipam, &[subnet("10.6.0.0/29")]).await;
    let web = ipam
        .request(&net, &AddressRequest::any(Family::V4, "ep1").sticky("web"))
        .await
        .unwrap();
    assert!(ipam.release(&net, web.address.addr(), "ep1").await.unwrap());
    let res = ipam.reservations(&net).await.unwrap();
    assert_eq!(res.len(), 1);
    assert_eq!(
        (res[0].key.as_str(), res[0].ip, res[0].holder.as_deref()),
        ("web", web.address.addr(), None)
    );
    // Nobody else gets it: the other four usable addresses go, then the pool is exhausted.
    for i in 0..4 {
        assert_ne!(
            any4(&ipam, &net, &format!("x{i}")).await.unwrap(),
            web.address.addr()
        );
    }
    assert_eq!(
        any4(&ipam, &net, "x4").await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let e = ipam
        .request(&net, &AddressRequest::specific(web.address.addr(), "x5"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("reserved for sticky key \"web\""),
        "{e}"
    );
    // The same key gets it back, for a new endpoint.
    let again = ipam
        .request(&net, &AddressRequest::any(Family::V4, "ep2").sticky("web"))
        .await
        .unwrap();
    assert_eq!(again.address, web.address);
    let e = ipam
        .request(&net, &AddressRequest::any(Family::V4, "ep3").sticky("web"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict, "held by ep2 now: {e}");
    assert!(ipam.release(&net, web.address.addr(), "ep2").await.unwrap());
    assert!(
        ipam.drop_reservation(&net, Family::V4, "web")
            .await
            .unwrap()
    );
    assert!(
        !ipam
            .drop_reservation(&net, Family::V4, "web")
            .await
            .unwrap()
    );
    assert!(ipam.reservations(&net).await.unwrap().is_empty());
    assert_eq!(any4(&ipam, &net, "x6").await.unwrap(), web.address.addr());
}

#[tokio::test]
async fn reservations_expire_after_the_grace() {
    let fx = Fixture::new().await;
    let config = IpamConfig {
        reservation_grace: Duration::from_millis(300),
        ..IpamConfig::default()
    };
    let ipam = ipam_on(fx.store(), "h1", config);
    let net = network_with(&ipam, &[subnet("10.7.0.0/24")]).await;
    let req = AddressRequest::specific(ip("10.7.0.50"), "ep1").sticky("db");
    ipam.request(&net, &req).await.unwrap();
    ipam.release(&net, ip("10.7.0.50"), "ep1").await.unwrap();
    let e = ipam
        .request(&net, &AddressRequest::specific(ip("10.7.0.50"), "ep2"))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Conflict);
    tokio::time::sleep(Duration::from_millis(400)).await;
    ipam.request(&net, &AddressRequest::specific(ip("10.7.0.50"), "ep2"))
        .await
        .unwrap();
    assert!(ipam.reservations(&net).await.unwrap().is_empty());
    assert!(
        ipam.store()
            .get(&format!("ipam/sticky/{net}/v4/db"))
            .await
            .unwrap()
            .is_none()
    );
    // The key now gets a new address.
    let db = ipam
        .request(&net, &AddressRequest::any(Family::V4, "ep3").sticky("db"))
        .await
        .unwrap();
    assert_ne!(db.address.addr(), ip("10.7.0.50"));
}

#[tokio::test]
async fn collector_frees_what_dead_owners_left() {
    let fx = Fixture::new().await;
    let config = IpamConfig {
        owner_grace: Duration::ZERO,
        reservation_grace: Duration::from_millis(200),
        ..IpamConfig::default()
    };
    let ipam = ipam_on(fx.store(), "h1", config);
    let net = network_with(&ipam, &[subnet("10.8.0.0/24")]).await;
    let live = any4(&ipam, &net, "live").await.unwrap();
    let dead = any4(&ipam, &net, "dead").await.unwrap();
    let sticky = ipam
        .request(
            &net,
            &AddressRequest::any(Family::V4, "dead2").sticky("web"),
        )
        .await
        .unwrap();
    let gone = network_with(&ipam, &[subnet("10.9.0.0/24")]).await;
    any4(&ipam, &gone, "x").await.unwrap();
    // A network whose pools record vanished leaves orphans behind.
    ipam.store()
        .delete(&format!("ipam/networks/{gone}"))
        .await
        .unwrap();

    let owners: HashSet<String> = ["live".to_string()].into();
    let report = ipam.collect(&owners).await.unwrap();
    assert_eq!((report.reclaimed, report.orphans), (2, 1), "{report:?}");
    let held: Vec<IpAddr> = ipam
        .allocations(&net)
        .await
        .unwrap()
        .iter()
        .map(|h| h.ip)
        .collect();
    assert_eq!(held, vec![live]);
    let res = ipam.reservations(&net).await.unwrap();
    assert_eq!(
        (res.len(), res[0].ip),
        (1, sticky.address.addr()),
        "a dead sticky owner leaves a reservation"
    );
    assert_ne!(dead, sticky.address.addr());
    tokio::time::sleep(Duration::from_millis(250)).await;
    let report = ipam.collect(&owners).await.unwrap();
    assert_eq!(report.expired, 1, "{report:?}");
    assert!(ipam.reservations(&net).await.unwrap().is_empty());

    // Within the grace, nothing is touched.
    let patient = ipam_on(ipam.store().clone(), "h1", IpamConfig::default());
    any4(&patient, &net, "young").await.unwrap();
    assert_eq!(
        patient.collect(&owners).await.unwrap(),
        CollectReport::default()
    );
}

#[tokio::test]
async fn an_allocation_is_one_round_trip_once_warm() {
    let fx = Fixture::new().await;
    let counting = Counting::new(fx.store());
    let ipam = ipam_on(counting.clone(), "h1", IpamConfig::default());
    let net = network_with(&ipam, &[subnet("10.10.0.0/20")]).await;
    any4(&ipam, &net, "warm").await.unwrap();
    let (before, writes_before) = (counting.calls(), counting.writes());
    for i in 0..200 {
        any4(&ipam, &net, &format!("e{i}")).await.unwrap();
    }
    let calls = counting.calls() - before;
    // 200 allocations fill 3+ blocks of 64; each new block is claimed in the same single write.
    assert_eq!(calls, 200, "round trips for 200 allocations");
    assert_eq!(
        counting.writes() - writes_before,
        200,
        "and every one of them a write"
    );
    let before = counting.calls();
    ipam.release(&net, ip("10.10.0.5"), "e2").await.unwrap();
    assert_eq!(
        counting.calls() - before,
        1,
        "a release of an own address is one round trip"
    );
}

#[tokio::test]
async fn hosts_claim_separate_blocks_and_borrow_when_full() {
    let fx = Fixture::new().await;
    let s = fx.store();
    let h1 = ipam_on(s.clone(), "h1", IpamConfig::default());
    let h2 = ipam_on(s.clone(), "h2", IpamConfig::default());
    let net = network_with(&h1, &[subnet("10.11.0.0/25")]).await;
    let a = any4(&h1, &net, "a").await.unwrap();
    let b = any4(&h2, &net, "b").await.unwrap();
    assert_eq!(
        (a, b),
        (ip("10.11.0.2"), ip("10.11.0.64")),
        "one /26 block each"
    );
    // h2 fills everything: its block, then borrows h1's free addresses.
    let mut n = 1;
    while any4(&h2, &net, &format!("b{n}")).await.is_ok() {
        n += 1;
    }
    assert_eq!(n, 125 - 1, "125 usable addresses, one held by h1");
    let all = h1.allocations(&net).await.unwrap();
    assert_eq!(all.len(), 125);
    assert_eq!(all.iter().map(|h| h.ip).collect::<HashSet<_>>().len(), 125);
}

#[tokio::test]
async fn decisions_without_a_write_are_never_taken_on_a_stale_cache() {
    let fx = Fixture::new().await;
    let a = ipam_on(fx.store(), "a", IpamConfig::default());
    let b = ipam_on(fx.store(), "b", IpamConfig::default());
    let net = network_with(&a, &[subnet("10.15.0.0/24")]).await;
    let a1 = any4(&a, &net, "a1").await.unwrap();
    any4(&b, &net, "b1").await.unwrap(); // b's listing caches a's block as it is now
    let x = any4(&a, &net, "o").await.unwrap();
    // b's cache does not show x held by "o": the release must still happen.
    assert!(b.release(&net, x, "o").await.unwrap());
    assert!(a.allocations(&net).await.unwrap().iter().all(|h| h.ip != x));
    // b's cache shows a1 held: once a released it, b may have it.
    assert!(a.release(&net, a1, "a1").await.unwrap());
    let got = b
        .request(&net, &AddressRequest::specific(a1, "q"))
        .await
        .unwrap();
    assert_eq!(got.address.addr(), a1);
}

#[tokio::test]
async fn a_stale_cache_does_not_use_up_the_retries() {
    let fx = Fixture::new().await;
    let few = IpamConfig {
        retry: RetryPolicy {
            max_attempts: 3,
            ..RetryPolicy::default()
        },
        ..IpamConfig::default()
    };
    let a = ipam_on(fx.store(), "a", IpamConfig::default());
    let b = ipam_on(fx.store(), "b", few);
    let net = network_with(&a, &[subnet("10.14.0.0/22")]).await;
    any4(&b, &net, "b0").await.unwrap(); // b lists the pool (empty) and claims block 0
    for i in 0..14 * 64 {
        any4(&a, &net, &format!("a{i}")).await.unwrap(); // a claims blocks 1 to 14
    }
    for i in 1..62 {
        any4(&b, &net, &format!("b{i}")).await.unwrap(); // b fills block 0 (.0 and .1 reserved)
    }
    // b's cache still shows blocks 1 to 15 unclaimed; it must find block 15 anyway.
    let got = any4(&b, &net, "b62").await.unwrap();
    assert_eq!(got, ip("10.14.3.192"));
}

#[tokio::test]
async fn concurrent_allocators_never_share_an_address() {
    let fx = Fixture::new().await;
    let s = fx.store();
    let setup = ipam_on(s.clone(), "setup", IpamConfig::default());
    let net = network_with(&setup, &[subnet("10.12.0.0/23")]).await;
    let mut tasks = Vec::new();
    for t in 0..6 {
        // Two tasks per host: they race on the same blocks too.
        let ipam = Arc::new(ipam_on(
            s.clone(),
            &format!("h{}", t / 2),
            IpamConfig::default(),
        ));
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..80 {
                let owner = format!("t{t}-{i}");
                let got = any4(&ipam, &net, &owner).await.unwrap();
                if i % 3 == 0 {
                    ipam.release(&net, got, &owner).await.unwrap();
                } else {
                    mine.push((got, owner));
                }
            }
            mine
        }));
    }
    let mut held = std::collections::BTreeMap::new();
    for t in tasks {
        for (ip, owner) in t.await.unwrap() {
            assert!(held.insert(ip, owner).is_none(), "{ip} handed out twice");
        }
    }
    let store_view: std::collections::BTreeMap<IpAddr, String> = setup
        .allocations(&net)
        .await
        .unwrap()
        .into_iter()
        .map(|h| (h.ip, h.owner))
        .collect();
    assert_eq!(store_view, held);
}
