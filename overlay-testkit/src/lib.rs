//! Test support for `overlay`: real etcd and ZooKeeper servers, TCP traffic in namespaces, and
//! the one rule for tests whose prerequisites are missing.
//!
//! [`EtcdServer`] and [`ZooKeeperServer`] start Debian's `etcd` and ZooKeeper on free loopback
//! ports with temporary data directories, wait until they answer, and kill them when dropped
//! (also when a test panics). A server can be killed and restarted on the same port and data
//! directory for fault tests.
//!
//! If `OVERLAY_TEST_ETCD` / `OVERLAY_TEST_ZK` name servers (`host:port`, comma-separated for
//! several), [`EtcdServer::start`] and [`ZooKeeperServer::start`] use those instead of
//! starting their own; tests that kill a server use [`EtcdServer::start_local`], which always
//! starts its own. When a server cannot be had the test fails, saying what to install: under
//! CI or not, a test that needs a server or root never passes without it ([`missing`],
//! [`require_root`]).
//!
//! Every [`url`](EtcdServer::url) carries a fresh key prefix, so tests can share a server
//! without seeing each other's keys.
//!
//! [`EtcdCluster`] and [`ZooKeeperCluster`] run three (or any number of) members on loopback,
//! each in a network namespace of its own (so they need root), for fault tests: kill, restart
//! or partition one member, find the leader. [`EtcdCluster::start_tls`] serves clients over
//! TLS only, with certificates made for it ([`TlsFiles`]).
//!
//! [`TcpProxy`] sits between a client and a server so a test can cut the network between them
//! while both keep running (sessions and leases then expire on the server).
//!
//! [`TcpGreeter`] and [`fetch`] send real TCP traffic inside network namespaces (entered by
//! path with [`in_netns`]), to prove a data path end to end. [`dns_query`] asks a resolver one
//! question from a namespace, as a container's stub would; [`DnsUpstream`] plays the host's
//! upstream resolver.
//!
//! [`DockerEngine`] runs a real Docker engine (Debian's 20.10) for a simulated host, and
//! [`NetnsEtcd`] an etcd the engines share as their cluster store; [`busybox_rootfs`] makes
//! the image both container runtimes' tests import.
//!
//! [`look`] and its kin ([`links`], [`link`], [`ip_json`]) read kernel state with the system's
//! own tools inside a namespace, failing loudly when the tool fails.
//!
//! [`CniRunner`] runs CNI plugins as a container runtime does (upstream's `cnitool`).
//!
//! [`wait_until`] waits for a condition, naming it when a bound only a bug reaches passes;
//! [`lookup`] and [`lacks`] read a hosts file as a resolver would.
//!
//! This crate does not depend on `overlay-core`, so both `overlay-core` and the root crate can
//! use it as a dev-dependency.

mod cluster;
mod cni;
mod dns;
mod docker;
mod hosts;
mod inspect;
mod look;
mod netns;
mod pipe;
mod process;
mod proxy;
mod servers;
mod tcp;
mod tls;
mod wait;

pub use cluster::{EtcdCluster, ZooKeeperCluster};
pub use cni::{CniEnv, CniOutcome, CniRunner};
pub use dns::{DnsAnswer, DnsUpstream, dns_query, reverse_name};
pub use docker::{
    DOCKER, DOCKERD, DockerEngine, EngineSpec, NetnsEtcd, busybox_rootfs, kill_in_netns,
    require_docker,
};
pub use hosts::{lacks, lookup};
pub use inspect::ip_of;
pub use look::{ip_json, link, links, look, try_look};
pub use process::{missing, require_root, unique_prefix};
pub use proxy::TcpProxy;
pub use servers::{EtcdServer, ZooKeeperServer};
pub use tcp::{TcpGreeter, fetch, in_netns};
pub use tls::TlsFiles;
pub use wait::wait_until;
