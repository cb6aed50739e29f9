//! Deletions the dataplane makes itself in a sandbox. The kernel reports them like any other;
//! a disconnect or a peer's removal is not damage, so the report that matches one is dropped
//! instead of waking the heal task (which would wait for the network's lock behind the very
//! disconnect that caused it).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::model::MacAddr;

/// One deletion, as its report names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Deleted {
    /// A link, by index in the sandbox's namespace.
    Link(u32),
    /// The vxlan device's FDB entry of a MAC.
    Fdb(MacAddr),
    /// The vxlan device's neighbour entry of an IP.
    Neighbour(IpAddr),
}

/// How long an expected report is waited for. The kernel queues a report before it acks the
/// request, so the forwarder reads it within moments; one that never comes (a delete the kernel
/// acked without deleting anything) must not hide a real deletion for long, and the periodic
/// check catches what this window hides.
const KEEP: Duration = Duration::from_secs(2);

/// Entries kept before stale ones are pruned: pruning on every insert would make removing many
/// peers at once quadratic.
const PRUNE_AT: usize = 4096;

/// The deletions of one sandbox whose reports are still to come.
#[derive(Debug, Default)]
pub(crate) struct OwnDeletions(Mutex<HashMap<Deleted, Instant>>);

impl OwnDeletions {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Deleted, Instant>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `d` before it is made, so its report (queued before the ack) finds it.
    pub(crate) fn expect(&self, d: Deleted) {
        let mut map = self.map();
        let now = Instant::now();
        if map.len() >= PRUNE_AT {
            map.retain(|_, at| now.duration_since(*at) < KEEP);
        }
        map.insert(d, now);
    }

    /// Makes deletion `d` by `delete`, expecting its report; withdrawn when the delete fails.
    pub(crate) async fn deleting<T, E>(
        &self,
        d: Deleted,
        delete: impl std::future::Future<Output = std::result::Result<T, E>>,
    ) -> std::result::Result<T, E> {
        self.expect(d);
        let r = delete.await;
        if r.is_err() {
            self.withdraw(d);
        }
        r
    }

    /// Forgets `d`: the delete failed or deleted nothing, so no report will come for it.
    pub(crate) fn withdraw(&self, d: Deleted) {
        self.map().remove(&d);
    }

    /// Whether a report of `d` is of a deletion made here (consumed: a second report of the
    /// same entry is damage again).
    pub(crate) fn take(&self, d: Deleted) -> bool {
        match self.map().remove(&d) {
            Some(at) => at.elapsed() < KEEP,
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_is_ours_once_and_only_while_expected() {
        let own = OwnDeletions::default();
        assert!(!own.take(Deleted::Link(7)), "nothing expected");
        own.expect(Deleted::Link(7));
        assert!(!own.take(Deleted::Link(8)), "another link");
        assert!(own.take(Deleted::Link(7)));
        assert!(!own.take(Deleted::Link(7)), "consumed");
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        own.expect(Deleted::Fdb(mac));
        own.withdraw(Deleted::Fdb(mac));
        assert!(!own.take(Deleted::Fdb(mac)), "withdrawn");
    }

    #[test]
    fn many_expected_deletions_are_pruned_by_age_only() {
        let own = OwnDeletions::default();
        for i in 0..(PRUNE_AT as u32 + 10) {
            own.expect(Deleted::Link(i));
        }
        // All are recent: none was pruned.
        assert!(own.take(Deleted::Link(0)));
        assert!(own.take(Deleted::Link(PRUNE_AT as u32 + 9)));
    }
}
