//! What every server-backed store keeps the same way: whether it was closed, the signal that
//! ends its background tasks, and the ephemeral keys it owns, put again when the session or
//! lease that held them was lost while the client lived.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::{SizeLimit, closed_error};
use crate::error::{ErrorKind, Result};
use crate::store::{StoreUrl, Version, validate_key};

/// The open/closed state and the owned ephemeral keys of one client.
pub(crate) struct Lifecycle {
    closed: AtomicBool,
    /// Set once, on close; `send_replace` stores it even while no task listens, so a task
    /// started later still sees it.
    shutdown: watch::Sender<bool>,
    /// Ephemeral keys this client wrote and still owns, with their values.
    owned: Mutex<HashMap<String, Vec<u8>>>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            closed: AtomicBool::new(false),
            shutdown: watch::channel(false).0,
            owned: Mutex::new(HashMap::new()),
        }
    }
}

impl Lifecycle {
    fn owned(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.owned.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unavailable once the store was closed.
    pub(crate) fn check_open(&self, op: &'static str, url: &StoreUrl) -> Result<()> {
        if self.is_closed() {
            return Err(closed_error(op, url));
        }
        Ok(())
    }

    /// Whether the store was closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// Marks the store closed and tells its background tasks to end; false when it already
    /// was (a second close does nothing).
    pub(crate) fn close(&self) -> bool {
        if self.closed.swap(true, Ordering::SeqCst) {
            return false;
        }
        self.shutdown.send_replace(true);
        true
    }

    /// The signal a background task ends on: true once the store is closed.
    pub(crate) fn shutdown(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Forgets `key`: a persistent write or a delete replaced this client's ephemeral key.
    pub(crate) fn disown(&self, key: &str) {
        self.owned().remove(key);
    }

    /// Forgets every owned key (the store is closing) and returns them.
    pub(crate) fn disown_all(&self) -> Vec<String> {
        self.owned().drain().map(|(k, _)| k).collect()
    }

    /// Writes ephemeral `key` with `write` after the checks every backend makes (a valid key,
    /// a value within `limit`, an open store). A put is owned from before it is sent, so that
    /// a session replaced meanwhile puts it too, until it fails; a create (`exclusive`) is
    /// owned once it succeeded, as a key someone else holds is never ours.
    pub(crate) async fn write_ephemeral(
        &self,
        limit: &SizeLimit,
        url: &StoreUrl,
        (key, value): (&str, &[u8]),
        exclusive: bool,
        write: impl Future<Output = Result<Version>>,
    ) -> Result<Version> {
        let op = if exclusive {
            "store create ephemeral"
        } else {
            "store put ephemeral"
        };
        validate_key(key)?;
        limit.check(op, url, [(key, value.len())])?;
        self.check_open(op, url)?;
        if !exclusive {
            self.owned().insert(key.to_string(), value.to_vec());
        }
        let r = write.await;
        match (&r, exclusive) {
            (Ok(_), true) => {
                self.owned().insert(key.to_string(), value.to_vec());
            }
            (Err(_), false) => self.disown(key),
            _ => {}
        }
        r
    }

    /// Puts the owned keys again under a new session or lease, each with `create`, which
    /// writes a key only if it is absent. The old session's keys went with it, so a key
    /// present now (AlreadyExists) was written by someone else meanwhile and is theirs, as a
    /// host id claimed by another agent must stay claimed: it is no longer owned here.
    pub(crate) async fn replay<F, Fut>(&self, backend: &str, mut create: F)
    where
        F: FnMut(String, Vec<u8>) -> Fut,
        Fut: Future<Output = Result<Version>>,
    {
        let keys: Vec<(String, Vec<u8>)> = self
            .owned()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (key, value) in keys {
            match create(key.clone(), value).await {
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    tracing::warn!(
                        key = %key,
                        "ephemeral key was taken by another client while this one's {backend} \
                         session was lost"
                    );
                    self.disown(&key);
                }
                Err(e) => tracing::warn!("putting ephemeral key {key} again failed: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    const LIMIT: SizeLimit = SizeLimit {
        backend: "test",
        default: 8,
        why: "a test limit",
        server_option: "none",
    };

    fn url() -> StoreUrl {
        StoreUrl::parse("etcd://127.0.0.1:1/x").unwrap()
    }

    #[tokio::test]
    async fn a_put_is_owned_until_it_fails_and_a_create_once_it_succeeds() {
        let life = Lifecycle::default();
        let u = url();
        let failed = async { Err(Error::internal("put", "refused")) };
        assert!(
            life.write_ephemeral(&LIMIT, &u, ("a", b"1"), false, failed)
                .await
                .is_err()
        );
        assert!(life.disown_all().is_empty(), "a failed put is not owned");
        let taken = async { Err(Error::new(ErrorKind::AlreadyExists, "create", "taken")) };
        assert!(
            life.write_ephemeral(&LIMIT, &u, ("b", b"1"), true, taken)
                .await
                .is_err()
        );
        assert!(life.disown_all().is_empty(), "a failed create is not owned");
        for (key, exclusive) in [("c", false), ("d", true)] {
            life.write_ephemeral(&LIMIT, &u, (key, b"1"), exclusive, async { Ok(1) })
                .await
                .unwrap();
        }
        let mut owned = life.disown_all();
        owned.sort();
        assert_eq!(owned, ["c", "d"]);
    }

    #[tokio::test]
    async fn bad_writes_and_closed_stores_change_nothing() {
        let life = Lifecycle::default();
        let u = url();
        let e = life
            .write_ephemeral(&LIMIT, &u, ("k", b"too long!"), false, async { Ok(1) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        let e = life
            .write_ephemeral(&LIMIT, &u, ("a//b", b"1"), false, async { Ok(1) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(life.close());
        assert!(!life.close(), "closed once");
        assert!(
            *life.shutdown().borrow(),
            "a task started after close sees it"
        );
        let e = life
            .write_ephemeral(&LIMIT, &u, ("k", b"1"), false, async { Ok(1) })
            .await
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(life.disown_all().is_empty());
    }

    #[tokio::test]
    async fn a_replayed_key_someone_else_took_is_no_longer_owned() {
        let life = Lifecycle::default();
        let u = url();
        for key in ["mine", "taken", "failing"] {
            life.write_ephemeral(&LIMIT, &u, (key, b"1"), false, async { Ok(1) })
                .await
                .unwrap();
        }
        life.replay("test", |key, _| async move {
            match key.as_str() {
                "taken" => Err(Error::new(ErrorKind::AlreadyExists, "create", "taken")),
                "failing" => Err(Error::new(ErrorKind::Unavailable, "create", "down")),
                _ => Ok(2),
            }
        })
        .await;
        let mut owned = life.disown_all();
        owned.sort();
        assert_eq!(
            owned,
            ["failing", "mine"],
            "a failed replay is kept for the next one"
        );
    }
}
