//! The ZooKeeper backend (3.6 or newer: it uses persistent watches).
//!
//! The URL prefix is the chroot; [`layout`] says how keys, values and the change journal are
//! stored. Ephemeral keys are ephemeral znodes of this client's session; when the session
//! expires while the client lives, [`Inner::monitor`] opens a new one and puts the client's
//! ephemeral keys again.

mod layout;
mod read;
mod session;
mod watch;
mod write;

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use zookeeper_client::{Client, SessionState};

use crate::error::Result;
use crate::store::remote::{
    AbortOnDrop, Backoff, Lifecycle, SizeLimit, closed_error, norm_prefix, txn_values,
};
use crate::store::{
    Backend, Capabilities, KeyValue, KvStore, Listing, StoreUrl, TxnOp, TxnResult, Version, Watch,
    validate_key,
};

/// Most ops in one transaction (each write also journals, so a `multi` holds twice as many).
const MAX_TXN_OPS: usize = 64;
/// A value travels twice in a write (node and journal), and one packet carries at most the
/// server's `jute.maxbuffer` (1 MiB by default): half of it, less room for paths and framing.
/// A bigger packet makes the server drop the connection, and the session with it.
const LIMIT: SizeLimit = SizeLimit {
    backend: "ZooKeeper",
    default: 500 * 1024,
    why: "each write carries its value twice, within the server's jute.maxbuffer of 1 MiB by default",
    server_option: "-Djute.maxbuffer (ZooKeeper's JVM option)",
};

/// A connection to a ZooKeeper ensemble.
pub(crate) struct ZkStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    url: StoreUrl,
    /// The current session's client and its generation (bumped when an expired session is
    /// replaced), so watches notice the change.
    client: tokio::sync::watch::Sender<(u64, Option<Client>)>,
    /// Closed or open; the ephemeral keys to put again after the session expired.
    life: Lifecycle,
    monitor: Mutex<Option<AbortOnDrop>>,
}

impl fmt::Debug for ZkStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkStore")
            .field("url", &self.inner.url.to_string())
            .finish()
    }
}

impl ZkStore {
    /// Connects to the servers `url` names, creating the prefix if it is missing.
    pub(crate) async fn connect(url: &StoreUrl) -> Result<Self> {
        let client = session::open(url).await?;
        let (client, _) = tokio::sync::watch::channel((0, Some(client)));
        let inner = Arc::new(Inner {
            url: url.clone(),
            client,
            life: Lifecycle::default(),
            monitor: Mutex::new(None),
        });
        let task = tokio::spawn(Inner::monitor(Arc::downgrade(&inner)));
        *inner.monitor.lock().unwrap_or_else(|e| e.into_inner()) = Some(AbortOnDrop(task));
        Ok(ZkStore { inner })
    }
}

impl Inner {
    /// The current session's client; Unavailable once the store is closed.
    pub(super) fn client(&self, op: &'static str) -> Result<Client> {
        self.life.check_open(op, &self.url)?;
        self.client
            .borrow()
            .1
            .clone()
            .ok_or_else(|| closed_error(op, &self.url))
    }

    /// Replaces the session when it expires (or its authentication fails) while the store is
    /// open, then puts this client's ephemeral keys again.
    async fn monitor(weak: Weak<Inner>) {
        loop {
            let Some(s) = weak.upgrade() else { return };
            let mut shutdown = s.life.shutdown();
            let Ok(client) = s.client("watch the ZooKeeper session") else {
                return;
            };
            let mut states = client.state_watcher();
            drop((s, client));
            loop {
                let state = tokio::select! {
                    _ = shutdown.changed() => return,
                    st = states.changed() => st,
                };
                if matches!(
                    state,
                    SessionState::Expired | SessionState::AuthFailed | SessionState::Closed
                ) {
                    break;
                }
            }
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
            loop {
                let Some(s) = weak.upgrade().filter(|s| !s.life.is_closed()) else {
                    return;
                };
                match session::open(&s.url).await {
                    Ok(client) => {
                        s.client.send_modify(|(generation, c)| {
                            *generation += 1;
                            *c = Some(client);
                        });
                        tracing::info!("ZooKeeper session of {} expired; opened a new one", s.url);
                        // The expired session takes its nodes with it, but the server may
                        // answer "expired" before it has deleted them: see `recreate`.
                        let s = &s;
                        s.life
                            .replay("ZooKeeper", |key: String, value: Vec<u8>| async move {
                                recreate(s, &key, &value).await
                            })
                            .await;
                        break;
                    }
                    Err(e) => tracing::debug!("reopening the ZooKeeper session failed: {e}"),
                }
                drop(s);
                backoff.wait().await;
            }
        }
    }
}

/// Creates ephemeral `key` of a replaced session again, waiting (with backoff, for up to twice
/// the session timeout) while the expired session's node is still there. One still there then
/// was written by someone else (AlreadyExists).
async fn recreate(s: &Inner, key: &str, value: &[u8]) -> Result<Version> {
    let deadline = std::time::Instant::now() + s.url.options.ttl * 2;
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        match write::create(s, key, value, true).await {
            Err(e)
                if e.kind() == crate::ErrorKind::AlreadyExists
                    && std::time::Instant::now() < deadline =>
            {
                backoff.wait().await;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl KvStore for ZkStore {
    fn backend(&self) -> Backend {
        Backend::ZooKeeper
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            watch_replay: true,
            max_value_len: LIMIT.bytes(&self.inner.url),
            max_txn_ops: MAX_TXN_OPS,
            current_reads: false,
        }
    }

    async fn sync(&self) -> Result<()> {
        write::barrier(&self.inner).await
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        read::get(&self.inner, key).await
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check("store put", &self.inner.url, [(key, value.len())])?;
        write::put(&self.inner, key, value, false).await
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check("store create", &self.inner.url, [(key, value.len())])?;
        write::create(&self.inner, key, value, false).await
    }

    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check(
            "store compare and swap",
            &self.inner.url,
            [(key, value.len())],
        )?;
        write::compare_and_swap(&self.inner, key, value, version).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        write::delete(&self.inner, key, None)
            .await
            .map(|d| d.is_some())
    }

    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        validate_key(key)?;
        write::delete(&self.inner, key, Some(version))
            .await
            .map(|_| ())
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = norm_prefix(prefix)?;
        read::list(&self.inner, prefix).await
    }

    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        LIMIT.check("store txn", &self.inner.url, txn_values(ops))?;
        write::txn(&self.inner, ops, MAX_TXN_OPS).await
    }

    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch> {
        let prefix = norm_prefix(prefix)?;
        watch::start(self.inner.clone(), prefix.to_string(), from).await
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        let s = &self.inner;
        let put = write::put(s, key, value, true);
        s.life
            .write_ephemeral(&LIMIT, &s.url, (key, value), false, put)
            .await
    }

    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        let s = &self.inner;
        let create = write::create(s, key, value, true);
        s.life
            .write_ephemeral(&LIMIT, &s.url, (key, value), true, create)
            .await
    }

    async fn close(&self) -> Result<()> {
        let s = &self.inner;
        if !s.life.close() {
            return Ok(());
        }
        s.monitor.lock().unwrap_or_else(|e| e.into_inner()).take();
        // Deleting the ephemeral keys through the journal lets watchers report them as
        // ordinary deletes; ending the session would remove them too, but silently.
        let keys = s.life.disown_all();
        let mut result = Ok(());
        for key in keys {
            if let Err(e) = write::delete_owned_ephemeral(s, &key).await {
                result = Err(e);
            }
        }
        // The session ends (and the server removes what is left of its ephemeral nodes) when
        // the last clone of its client is dropped; watch tasks drop theirs on shutdown.
        s.client.send_modify(|(_, c)| *c = None);
        result
    }
}
