//! The cluster store: one contract ([`KvStore`]) and a backend per URL scheme.
//!
//! Keys are `/`-separated paths relative to the store's prefix (the URL path, default
//! `overlay/v1`); values are bytes. Every value carries a [`Version`] that is the same whether it
//! is read by [`KvStore::get`], [`KvStore::list`] or seen in a [`WatchEvent`], and that
//! [`KvStore::compare_and_swap`] takes back. Keys are validated ([`validate_key`]) before any I/O.
//!
//! A key may have keys below it (`endpoints/<net>` and `endpoints/<net>/<ep>` can both exist);
//! intermediate path segments are not keys of their own.

mod counted;
mod key;
mod remote;
mod url;

mod consul;
mod etcd;
mod zookeeper;

#[cfg(feature = "testing")]
pub mod conformance;
pub mod embedded;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::error::Result;

pub use counted::RequestCounts;
pub use key::{MAX_KEY_LEN, validate_key, validate_prefix};
pub use url::{DEFAULT_PREFIX, Scheme, ServerAddr, StoreOptions, StoreUrl};

/// A value's version: etcd mod_revision, ZooKeeper/Consul/embedded equivalents. Versions of one
/// key strictly increase with each write; compare them only for equality and order.
pub type Version = u64;

/// A key with its value and version.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// Key relative to the store prefix.
    pub key: String,
    /// The stored bytes.
    pub value: Vec<u8>,
    /// Version of this value.
    pub version: Version,
}

impl fmt::Debug for KeyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyValue")
            .field("key", &self.key)
            .field(
                "value",
                &String::from_utf8_lossy(&self.value[..self.value.len().min(64)]),
            )
            .field("len", &self.value.len())
            .field("version", &self.version)
            .finish()
    }
}

/// The result of [`KvStore::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// Every key below the prefix, sorted by key.
    pub kvs: Vec<KeyValue>,
    /// A version to pass to [`KvStore::watch`] to see every change after this listing, so a
    /// list followed by a watch misses nothing.
    pub revision: Version,
}

/// One conditional write of a transaction ([`KvStore::txn`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOp {
    /// Write `value` only if `key` does not exist.
    Create {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Write `value` whatever is there.
    Put {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
    },
    /// Write `value` only if `key` is at `version`.
    Update {
        /// Key.
        key: String,
        /// Value.
        value: Vec<u8>,
        /// Expected current version.
        version: Version,
    },
    /// Delete `key` if it exists.
    Delete {
        /// Key.
        key: String,
    },
    /// Delete `key` only if it is at `version`.
    DeleteIf {
        /// Key.
        key: String,
        /// Expected current version.
        version: Version,
    },
    /// Write nothing; require `key` to be at `version` (`None`: to be absent).
    Check {
        /// Key.
        key: String,
        /// Expected version, or `None` for "does not exist".
        version: Option<Version>,
    },
}

impl TxnOp {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            TxnOp::Create { key, .. }
            | TxnOp::Put { key, .. }
            | TxnOp::Update { key, .. }
            | TxnOp::Delete { key }
            | TxnOp::DeleteIf { key, .. }
            | TxnOp::Check { key, .. } => key,
        }
    }
}

/// The result of a committed transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// For each op in order: the new version of a written key, `None` for deletes and checks.
    pub versions: Vec<Option<Version>>,
}

/// What a watch reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A key was created or changed.
    Put(KeyValue),
    /// A key was deleted (also when its ephemeral owner went away).
    Delete {
        /// Key relative to the store prefix.
        key: String,
        /// Version of the deletion: greater than every version the key had.
        version: Version,
    },
    /// Events may have been lost (a compacted history, a session that expired, a reconnect
    /// that could not resume): the watcher must re-list the prefix and diff. The stream goes
    /// on after this event.
    Resync {
        /// Why, for logs.
        reason: String,
    },
}

/// A live watch of a prefix. Events arrive in the order the store applied them; versions
/// increase. Dropping the watch cancels it.
///
/// The stream survives transient outages: the backend reconnects by itself and then resumes
/// where it was, or reports [`WatchEvent::Resync`]. It ends (`None`) only when the store is
/// closed; a terminal failure is reported once as `Some(Err(_))` before the end.
pub struct Watch {
    rx: mpsc::Receiver<Result<WatchEvent>>,
    _guard: Option<Box<dyn Send + Sync>>,
    counter: Option<counted::EventCounter>,
}

impl Watch {
    /// A watch fed by `rx`. `guard` is dropped with the watch (e.g. to abort a feeding task).
    pub fn new(
        rx: mpsc::Receiver<Result<WatchEvent>>,
        guard: Option<Box<dyn Send + Sync>>,
    ) -> Self {
        Watch {
            rx,
            _guard: guard,
            counter: None,
        }
    }

    /// This watch, counting its events into `counter`.
    fn counted(mut self, counter: counted::EventCounter) -> Watch {
        self.counter = Some(counter);
        self
    }

    /// The next event, waiting as long as it takes.
    pub async fn next(&mut self) -> Option<Result<WatchEvent>> {
        let ev = self.rx.recv().await;
        if let (Some(Ok(_)), Some(c)) = (&ev, &self.counter) {
            c.delivered();
        }
        ev
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

/// Which backend a store is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The embedded single-file store.
    Embedded,
    /// etcd v3.
    Etcd,
    /// Apache ZooKeeper.
    ZooKeeper,
    /// HashiCorp Consul.
    Consul,
}

/// What a backend can and cannot do, so callers and the conformance suite adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// `watch(prefix, Some(v))` replays every change after `v` exactly (including deletes)
    /// while `v` is not compacted. Without it the watch starts with a [`WatchEvent::Resync`].
    pub watch_replay: bool,
    /// Largest value accepted, in bytes.
    pub max_value_len: usize,
    /// Most operations in one [`KvStore::txn`].
    pub max_txn_ops: usize,
    /// Every read reflects every write acknowledged (to any client) before it began, without a
    /// [`KvStore::sync`] first (linearizable reads).
    pub current_reads: bool,
}

/// The cluster store contract every backend implements (DESIGN.md §3).
///
/// Every method validates its keys before any I/O and returns
/// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) for a bad one. Failed
/// conditional writes change nothing. Transient store outages give
/// [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable) or
/// [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) within the configured timeout, never a hang.
///
/// **Reads after another client's write.** A [`get`](KvStore::get) or [`list`](KvStore::list)
/// that begins after a write was acknowledged, to this client or to any other client on any
/// server of the cluster, returns that write or a later one wherever
/// [`Capabilities::current_reads`] holds: etcd (a follower asks the leader for its read index),
/// Consul (`?consistent`) and the embedded store (one database). ZooKeeper answers reads from
/// the state of the client's own server; this backend sends a ZooKeeper `sync` ahead of every
/// read in the same flight (one round trip to the leader), which makes a follower current, but
/// a client whose server is the leader can still, for the moment between a follower applying a
/// write and the leader applying it itself, read from before that write (the leader's `sync`
/// is not ordered behind its own commits). [`sync`](KvStore::sync) closes that gap on every
/// backend. The seed's own flow depends on this: `network create` on host 1, then `network ls`
/// and `connect` on host 2, whose client may talk to another server.
///
/// So callers stay correct when a read lags: every read-modify-write is a compare-and-swap (a
/// read that lagged makes it fail with `Conflict`, and it is retried), a listing is followed
/// by a watch from its revision (which replays what the listing missed), and a read whose
/// absence would fail a request ("no such network") is confirmed after a `sync`
/// ([`get_confirmed`]). A [`Watch`] is not a read: its events arrive some time after the write.
#[async_trait]
pub trait KvStore: Send + Sync + fmt::Debug {
    /// Which backend this is.
    fn backend(&self) -> Backend;

    /// What it can do.
    fn capabilities(&self) -> Capabilities;

    /// The requests made of this client so far, by kind, where it counts them: every store
    /// [`connect`] opens does; a backend value made directly does not.
    fn request_counts(&self) -> Option<RequestCounts> {
        None
    }

    /// The value and version at `key`, or `None`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Writes `value` at `key` unconditionally; returns the new version.
    async fn put(&self, key: &str, value: &[u8]) -> Result<Version>;

    /// Writes `value` only if `key` does not exist, else
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists).
    async fn create(&self, key: &str, value: &[u8]) -> Result<Version>;

    /// Writes `value` only if `key` is at `version`, else
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) (also when the key is absent).
    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version>;

    /// Deletes `key`; returns whether it existed.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Deletes `key` only if it is at `version`, else
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) (also when the key is absent).
    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()>;

    /// The key `prefix` itself and every key below it (at any depth; `""` for all), sorted,
    /// with the revision to watch from. `prefix` and `prefix/` list the same keys: `a` lists
    /// `a` and `a/b`, never `ab`. Callers take keys apart with `strip_prefix`, never by length.
    async fn list(&self, prefix: &str) -> Result<Listing>;

    /// Applies every op atomically, or none: the first failed condition gives
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) for a `Create` and
    /// [`ErrorKind::Conflict`](crate::ErrorKind::Conflict) otherwise, naming the key.
    /// A key may appear in at most one op.
    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult>;

    /// Watches the keys [`list`](KvStore::list) of `prefix` would return. With `from`, first
    /// replays changes with a version greater than `from` (or starts with a Resync when they
    /// cannot be replayed).
    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch>;

    /// Writes `value` at `key` bound to this client's session or lease: the key is deleted
    /// when the client closes, or within the session TTL after the client dies. The client
    /// re-creates its ephemeral keys if its session expired while it was alive.
    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version>;

    /// Like [`put_ephemeral`](KvStore::put_ephemeral), only if `key` does not exist, else
    /// [`ErrorKind::AlreadyExists`](crate::ErrorKind::AlreadyExists) with nothing written: a
    /// claim that one live client holds at a time (a host id). After a session loss the client
    /// puts the key back only if nobody else took it meanwhile; a key taken is theirs.
    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version>;

    /// Waits until this client's later reads reflect every write acknowledged, to any client,
    /// before the call. Where [`Capabilities::current_reads`] holds, that is already so and this
    /// returns at once; on ZooKeeper it is a write to a barrier node outside the keys (a
    /// quorum round trip), which the server orders behind every earlier commit, the leader's
    /// own included. (Required, not defaulted: a wrapper must pass it on.)
    async fn sync(&self) -> Result<()>;

    /// Ends the session (removing this client's ephemeral keys) and stops background tasks.
    /// Later calls fail with [`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable).
    async fn close(&self) -> Result<()>;
}

/// The value at `key`, where an absence is confirmed: on a backend whose reads may lag
/// ([`Capabilities::current_reads`] false) an absent key is read once more after a
/// [`KvStore::sync`], so a key another host's client has had acknowledged is found. For reads
/// whose absence fails a request; a present value is returned at once, whatever its age.
pub async fn get_confirmed(store: &dyn KvStore, key: &str) -> Result<Option<KeyValue>> {
    match store.get(key).await? {
        None if !store.capabilities().current_reads => {
            store.sync().await?;
            store.get(key).await
        }
        found => Ok(found),
    }
}

/// Opens the store a URL names. `file://` opens the embedded store; other schemes need their
/// backend compiled in. The client counts its requests ([`KvStore::request_counts`]).
pub async fn connect(url: &StoreUrl) -> Result<Arc<dyn KvStore>> {
    Ok(Arc::new(counted::Counted::new(connect_with(url).await?)))
}

/// Parses `url` and opens the store; a convenience over [`StoreUrl::parse`] and [`connect`].
pub async fn connect_str(url: &str) -> Result<Arc<dyn KvStore>> {
    connect(&StoreUrl::parse(url)?).await
}

async fn connect_with(url: &StoreUrl) -> Result<Arc<dyn KvStore>> {
    match url.scheme {
        Scheme::File => Ok(Arc::new(embedded::EmbeddedStore::open(url).await?)),
        // Boxed: the etcd client's connect future is large.
        Scheme::Etcd => Ok(Arc::new(Box::pin(etcd::EtcdStore::connect(url)).await?)),
        Scheme::ZooKeeper => Ok(Arc::new(zookeeper::ZkStore::connect(url).await?)),
        Scheme::Consul => Ok(Arc::new(consul::ConsulStore::connect(url).await?)),
    }
}
