//! Which members of a cluster the client sends its requests to: the leader, when one is known.
//!
//! The client's channel spreads requests over every endpoint it has. A member cut off from
//! the others (a partition, a stalled disk) keeps accepting connections, and every request
//! routed to it hangs until the deadline: one partitioned follower of three would fail a third
//! of the calls. Every write goes through the leader anyway, and so does a linearizable read
//! (a follower asks it for a read index), so this task asks every member for its status each
//! [`PERIOD`], and keeps only the leader in the channel; while no member reports itself
//! leader, every member that answers; while none answers, all of them (the calls then fail
//! with the servers' own errors). A follower's loss then changes nothing the client sees,
//! and the leader's costs one election, after which the task points the channel at the new
//! one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use tokio::sync::Notify;

use crate::store::remote::AbortOnDrop;

/// How often the members are asked for their status (3 small requests a second for a
/// 3-member cluster, none to a single server).
const PERIOD: Duration = Duration::from_millis(1000);
/// How long a member may take to answer the status request.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// The task that keeps the client's endpoints; stopped when dropped.
pub(super) struct Steward {
    _task: AbortOnDrop,
    wake: Arc<Notify>,
}

impl Steward {
    /// Watches the members behind `endpoints` (each as the client was given it) and keeps
    /// `client`'s channel on the leader. `None` for one endpoint: nothing to choose.
    pub(super) fn start(
        client: &Client,
        endpoints: Vec<String>,
        options: ConnectOptions,
    ) -> Option<Steward> {
        if endpoints.len() < 2 {
            return None;
        }
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(steer(client.clone(), endpoints, options, wake.clone()));
        Some(Steward {
            _task: AbortOnDrop(task),
            wake,
        })
    }

    /// Asks the members again now: a call failed for want of a server.
    pub(super) fn recheck(&self) {
        self.wake.notify_one();
    }
}

/// A member's answer: its id, the leader it knows of (0: none) and its raft term.
type Status = Option<(u64, u64, u64)>;

async fn steer(client: Client, endpoints: Vec<String>, options: ConnectOptions, wake: Arc<Notify>) {
    let options = options
        .with_connect_timeout(PROBE_TIMEOUT)
        .with_timeout(PROBE_TIMEOUT);
    // One client per member, made when it first answers and kept (it reconnects by itself).
    let mut probes: Vec<Option<Client>> = vec![None; endpoints.len()];
    let mut active: BTreeSet<usize> = (0..endpoints.len()).collect();
    loop {
        let asked = futures::future::join_all(
            probes
                .iter_mut()
                .zip(&endpoints)
                .map(|(probe, endpoint)| status(probe, endpoint, &options)),
        )
        .await;
        let want = choose(&asked);
        // Add before removing, so the channel is never empty.
        for &i in want.difference(&active) {
            if let Err(e) = client.add_endpoint(&endpoints[i]).await {
                tracing::warn!("etcd: cannot add endpoint {}: {e}", endpoints[i]);
            }
        }
        for &i in active.difference(&want) {
            if let Err(e) = client.remove_endpoint(&endpoints[i]).await {
                tracing::warn!("etcd: cannot remove endpoint {}: {e}", endpoints[i]);
            }
        }
        if want != active {
            tracing::debug!(
                "etcd: requests now go to {:?}",
                want.iter().map(|&i| &endpoints[i]).collect::<Vec<_>>()
            );
        }
        active = want;
        tokio::select! {
            _ = tokio::time::sleep(PERIOD) => {}
            _ = wake.notified() => {}
        }
    }
}

/// The endpoints to use, given what each member answered.
fn choose(asked: &[Status]) -> BTreeSet<usize> {
    // A leader cut off from the others believes it leads until it sees it has no quorum:
    // of two claims, the later term's is the true one.
    let leader = (0..asked.len())
        .filter_map(|i| match asked[i] {
            Some((me, leader, term)) if me == leader && leader != 0 => Some((term, i)),
            _ => None,
        })
        .max();
    if let Some((_, i)) = leader {
        return BTreeSet::from([i]);
    }
    let answering: BTreeSet<usize> = (0..asked.len()).filter(|&i| asked[i].is_some()).collect();
    if answering.is_empty() {
        (0..asked.len()).collect()
    } else {
        answering
    }
}

async fn status(probe: &mut Option<Client>, endpoint: &str, options: &ConnectOptions) -> Status {
    let ask = async {
        if probe.is_none() {
            *probe = Some(
                Client::connect([endpoint], Some(options.clone()))
                    .await
                    .ok()?,
            );
        }
        let s = probe.as_mut()?.status().await.ok()?;
        Some((s.header()?.member_id(), s.leader(), s.raft_term()))
    };
    tokio::time::timeout(PROBE_TIMEOUT * 2, ask)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_leader_alone_else_whoever_answers_else_everyone() {
        assert_eq!(
            choose(&[Some((1, 2, 5)), Some((2, 2, 5)), None]),
            BTreeSet::from([1])
        );
        assert_eq!(
            choose(&[Some((1, 0, 5)), None, Some((3, 0, 5))]),
            BTreeSet::from([0, 2])
        );
        assert_eq!(choose(&[None, None, None]), BTreeSet::from([0, 1, 2]));
        // A member that names a leader is not one unless it names itself.
        assert_eq!(choose(&[Some((1, 3, 5)), None, None]), BTreeSet::from([0]));
        // Two claims: the later term wins.
        assert_eq!(
            choose(&[Some((1, 1, 4)), Some((2, 2, 6)), None]),
            BTreeSet::from([1])
        );
    }
}
