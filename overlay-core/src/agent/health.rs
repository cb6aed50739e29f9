//! What a person running a host needs to see: each background task's state, whether the store
//! answers, when the last sweep succeeded; and logs of failures that are loud once and then
//! quiet (rate-limited), with the recovery said once.
//!
//! Every background task of the agent runs under `supervise`: a task that panics is logged at
//! `error` and restarted with backoff, never left dead while nobody polls its handle.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::task::JoinHandle;

use crate::error::Error;
use crate::report::TaskHealth;
use crate::retry::Backoff;

/// How often a failure that goes on is logged again.
const REPEAT_EVERY: Duration = Duration::from_secs(30);

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[derive(Debug, Default)]
struct TaskState {
    failing: Option<String>,
    restarting: bool,
    restarts: u32,
}

/// The health every task reports into, shared with the agent.
#[derive(Debug, Default)]
pub(crate) struct Board {
    tasks: Mutex<BTreeMap<String, TaskState>>,
    last_sweep_ms: Mutex<Option<u64>>,
}

impl Board {
    fn tasks(&self) -> MutexGuard<'_, BTreeMap<String, TaskState>> {
        crate::sync::lock(&self.tasks)
    }

    fn set(&self, task: &str, f: impl FnOnce(&mut TaskState)) {
        f(self.tasks().entry(task.to_string()).or_default());
    }

    /// Forgets a task that ended for good (the network it followed was left).
    pub(crate) fn forget(&self, task: &str) {
        self.tasks().remove(task);
    }

    /// A sweep completed now.
    pub(crate) fn swept(&self) {
        *crate::sync::lock(&self.last_sweep_ms) = Some(now_ms());
    }

    /// The tasks and the last sweep, for [`Health`](crate::report::Health).
    pub(crate) fn snapshot(&self) -> (Vec<TaskHealth>, Option<u64>) {
        let tasks = self
            .tasks()
            .iter()
            .map(|(name, t)| TaskHealth {
                name: name.clone(),
                state: if t.restarting {
                    "restarting"
                } else if t.failing.is_some() {
                    "failing"
                } else {
                    "running"
                }
                .to_string(),
                error: t.failing.clone(),
                restarts: t.restarts,
            })
            .collect();
        let sweep = *crate::sync::lock(&self.last_sweep_ms);
        (tasks, sweep)
    }
}

/// The failures of one task's store calls: the first is logged at `warn`, repeats at most every
/// 30 s with their count, the recovery at `info`; the board shows the task `failing` meanwhile.
pub(crate) struct Trouble {
    board: Arc<Board>,
    task: String,
    failures: u32,
    last_logged: Option<Instant>,
    /// Delays between retries.
    pub(crate) backoff: Backoff,
}

impl Trouble {
    /// For task `task`, retrying after delays from 100 ms up to 5 s.
    pub(crate) fn new(board: Arc<Board>, task: impl Into<String>) -> Self {
        let task = task.into();
        board.set(&task, |_| {});
        Trouble {
            board,
            task,
            failures: 0,
            last_logged: None,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        }
    }

    /// `what` (e.g. "listing endpoints") failed with `e`; waits before the retry.
    pub(crate) async fn failed(&mut self, what: &str, e: &Error) {
        self.failures += 1;
        let due = self.last_logged.is_none_or(|t| t.elapsed() >= REPEAT_EVERY);
        if due {
            if self.failures == 1 {
                tracing::warn!(task = %self.task, error = %e, "{what} failed; retrying");
            } else {
                tracing::warn!(task = %self.task, error = %e, failures = self.failures, "{what} still failing; retrying");
            }
            self.last_logged = Some(Instant::now());
        }
        let text = e.to_string();
        self.board.set(&self.task, |t| t.failing = Some(text));
        self.backoff.wait().await;
    }

    /// The task's store calls work (again).
    pub(crate) fn ok(&mut self) {
        if self.failures > 0 {
            tracing::info!(task = %self.task, failures = self.failures, "recovered");
            self.failures = 0;
            self.last_logged = None;
            self.board.set(&self.task, |t| t.failing = None);
        }
        self.backoff.reset();
    }
}

/// Runs the task `make()` builds until it returns; restarts it with backoff (and an `error`
/// log) when it panics. The returned handle aborts the whole supervision.
pub(crate) fn supervise<F, Fut>(board: Arc<Board>, task: String, make: F) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // On the board before this returns: a health call right after the agent starts lists
    // every task (the spawned task may not have run yet).
    board.set(&task, |_| {});
    tokio::spawn(async move {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            // An inner task, so that a panic ends it, not the supervisor. Aborting the
            // supervisor drops `inner`, which aborts the task too.
            let mut inner = AbortOnDrop(tokio::spawn(make()));
            match (&mut inner.0).await {
                Ok(()) => return,
                Err(e) if e.is_cancelled() => return,
                Err(e) => {
                    let what = panic_text(e);
                    tracing::error!(%task, panic = %what, "background task panicked; restarting it");
                    board.set(&task, |t| {
                        t.restarting = true;
                        t.restarts += 1;
                        t.failing = Some(format!("panicked: {what}"));
                    });
                    backoff.wait().await;
                    board.set(&task, |t| {
                        t.restarting = false;
                        t.failing = None;
                    });
                }
            }
        }
    })
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_string()),
        Err(e) => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_panicking_task_is_restarted_and_reported() {
        let board = Arc::new(Board::default());
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let handle = supervise(board.clone(), "flaky".into(), move || {
            let counted = counted.clone();
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), handle)
            .await
            .expect("the task ends after two restarts")
            .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
        let (tasks, _) = board.snapshot();
        assert_eq!(tasks.len(), 1);
        assert_eq!((tasks[0].restarts, tasks[0].state.as_str()), (2, "running"));
    }

    /// On a current-thread runtime the spawned task cannot run before the first await: the
    /// task must be on the board by then all the same.
    #[tokio::test]
    async fn a_task_is_on_the_board_before_it_first_runs() {
        let board = Arc::new(Board::default());
        let handle = supervise(board.clone(), "later".into(), || async {});
        let (tasks, _) = board.snapshot();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        assert_eq!(tasks[0].name, "later");
        handle.await.unwrap();
    }

    #[tokio::test]
    async fn trouble_marks_a_task_failing_until_it_recovers() {
        let board = Arc::new(Board::default());
        let mut t = Trouble::new(board.clone(), "hosts");
        t.backoff = Backoff::new(Duration::ZERO, Duration::ZERO);
        t.failed("listing hosts", &Error::invalid("x", "store away"))
            .await;
        assert_eq!(board.snapshot().0[0].state, "failing");
        t.ok();
        assert_eq!(board.snapshot().0[0].state, "running");
        assert_eq!(board.snapshot().0[0].error, None);
    }
}
