//! What a connect changed so far, undone newest first when a later step fails.
//!
//! Each step that changes something registers its undo right after it succeeded (libnetwork's
//! deferred cleanups), so there is one exit path for every failure instead of a hand-written
//! sequence per failure point, and a step added later cannot be forgotten by some of them.
//! Undoing keeps going after a failure and logs each one: what it cannot undo, the agent's
//! recovery and the IPAM's collector take back later.

use std::net::IpAddr;
use std::path::PathBuf;

use tokio::sync::OwnedMutexGuard;

use super::Controller;
use crate::model::{EndpointId, NetworkId};

/// One change a connect made.
enum Change {
    /// An address handed out to the endpoint.
    Address(IpAddr),
    /// The network's sandbox ensured and the container's interface (perhaps) made in it.
    Interface { netns: PathBuf, ifname: String },
    /// The host's gateway touched for this endpoint: an interface on the gateway bridge
    /// (`ifname`, when this connect made one), and the bridge, which goes with its last user.
    Gateway {
        netns: PathBuf,
        ifname: Option<String>,
    },
    /// This host's entry of the endpoint, in its state directory.
    Entry,
}

/// The changes of one connect, and the gateway's lock while it holds some of the gateway's
/// addresses and ports: undoing them must not race another connect choosing its own.
pub(super) struct Rollback {
    network: NetworkId,
    endpoint: EndpointId,
    changes: Vec<Change>,
    gateway_lock: Option<OwnedMutexGuard<()>>,
}

impl Rollback {
    /// Nothing changed yet for endpoint `endpoint` of `network`.
    pub(super) fn new(network: NetworkId, endpoint: EndpointId) -> Rollback {
        Rollback {
            network,
            endpoint,
            changes: Vec::new(),
            gateway_lock: None,
        }
    }

    /// `ip` was handed out to the endpoint (its owner is the endpoint's id).
    pub(super) fn address(&mut self, ip: IpAddr) {
        self.changes.push(Change::Address(ip));
    }

    /// The sandbox was ensured; the interface `ifname` in `netns` may exist from now on.
    pub(super) fn interface(&mut self, netns: PathBuf, ifname: String) {
        self.changes.push(Change::Interface { netns, ifname });
    }

    /// Holds the gateway's lock until this connect ends, either way.
    pub(super) fn hold_gateway(&mut self, guard: OwnedMutexGuard<()>) {
        self.gateway_lock = Some(guard);
    }

    /// The gateway was prepared for the endpoint; `made` names the interface it made.
    pub(super) fn gateway(&mut self, netns: PathBuf, made: Option<String>) {
        self.changes.push(Change::Gateway {
            netns,
            ifname: made,
        });
    }

    /// The endpoint's entry was written to this host's state.
    pub(super) fn entry(&mut self) {
        self.changes.push(Change::Entry);
    }

    /// Undoes every change, newest first, then lets the gateway's lock go.
    pub(super) async fn run(self, ctl: &Controller) {
        let Rollback {
            network,
            endpoint,
            changes,
            gateway_lock,
        } = self;
        let dp = &ctl.inner.dataplane;
        let agent = ctl.agent().ok();
        for change in changes.into_iter().rev() {
            match change {
                Change::Entry => {
                    if let Some(a) = &agent
                        && let Err(e) = a.local().remove(&endpoint)
                    {
                        tracing::warn!(error = %e, "could not remove the host state of a failed connect");
                    }
                }
                Change::Gateway { netns, ifname } => {
                    let Some(a) = &agent else { continue };
                    if let Some(ifname) = ifname
                        && let Err(e) = dp
                            .detach_gateway(&a.config().gateway, &netns, &ifname)
                            .await
                    {
                        tracing::warn!(error = %e, "could not remove the gateway interface after a failed connect");
                    }
                    // A bridge made for this endpoint alone goes with it.
                    a.settle_gateway().await;
                }
                Change::Interface { netns, ifname } => {
                    if let Err(e) = dp.detach(&network, &netns, &ifname).await {
                        tracing::warn!(error = %e, "could not detach after a failed connect");
                    }
                    let still_used = agent
                        .as_ref()
                        .map(|a| a.local_endpoints().iter().any(|e| e.network == network));
                    if !still_used.unwrap_or(true)
                        && let Err(e) = dp.remove_sandbox(&network).await
                    {
                        tracing::warn!(error = %e, "could not remove the sandbox after a failed connect");
                    }
                }
                Change::Address(ip) => {
                    let owner = endpoint.to_string();
                    if let Err(e) = ctl.inner.ipam.release(&network, ip, &owner).await {
                        tracing::warn!(%ip, error = %e, "could not release an address; the collector will");
                    }
                }
            }
        }
        drop(gateway_lock);
    }
}
