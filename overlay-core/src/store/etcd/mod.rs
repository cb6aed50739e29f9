//! The etcd v3 backend.
//!
//! Keys live below `<prefix>/`; a value's version is its etcd `mod_revision`, so get, list and
//! watch agree on it by construction. Conditional writes are etcd transactions whose `else`
//! branch reads the keys back, so a failed one says which condition failed. Ephemeral keys ride
//! one lease per client, kept alive in the background ([`lease`]); watches resume from the
//! last revision they saw after a disconnect ([`watch`]).

mod errors;
mod lease;
mod members;
mod watch;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client as ec;
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn};

use crate::error::{Error, ErrorKind, Result};
use crate::store::remote::{
    Lifecycle, SizeLimit, bounded, check_txn, conflict_error, exists_error, norm_prefix,
    txn_values, under,
};
use crate::store::{
    Backend, Capabilities, KeyValue, KvStore, Listing, StoreUrl, TxnOp, TxnResult, Version, Watch,
    validate_key,
};
use errors::map_err;
use lease::Lease;

/// etcd's default `--max-txn-ops`.
const MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes` is 1.5 MiB; room is left for keys and framing.
const LIMIT: SizeLimit = SizeLimit {
    backend: "etcd",
    default: 1536 * 1024 - 4096,
    why: "a request carries at most the server's --max-request-bytes, 1.5 MiB by default",
    server_option: "etcd's --max-request-bytes",
};

/// A connection to an etcd cluster.
pub(crate) struct EtcdStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    url: StoreUrl,
    client: Client,
    /// `<prefix>/`: every key this store touches starts with it.
    root: String,
    /// Closed or open; the ephemeral keys to put again under a new lease if the old one
    /// expired while this client was alive.
    life: Lifecycle,
    lease: Lease,
    /// Keeps the client's requests on the leader of a cluster ([`members`]).
    steward: Option<members::Steward>,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("url", &self.inner.url.to_string())
            .finish()
    }
}

/// Reads a TLS file named by a URL option.
fn read_tls(what: &str, path: &std::path::Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        Error::invalid(
            "connect etcd",
            format!("cannot read the {what} file {}: {e}", path.display()),
        )
        .with_hint("fix the ca=, cert= or key= option of the store URL")
    })
}

impl EtcdStore {
    /// Connects to the servers `url` names and checks that they answer.
    pub(crate) async fn connect(url: &StoreUrl) -> Result<Self> {
        let o = &url.options;
        let tls = o.tls_ca.is_some() || o.tls_cert.is_some();
        let scheme = if tls { "https" } else { "http" };
        let endpoints: Vec<String> = url
            .servers
            .iter()
            .map(|s| format!("{scheme}://{s}"))
            .collect();
        let mut opts = ConnectOptions::new()
            .with_timeout(o.timeout)
            .with_connect_timeout(o.timeout)
            .with_keep_alive(o.timeout.max(Duration::from_secs(1)), o.timeout)
            .with_keep_alive_while_idle(true);
        if let (Some(user), Some(pass)) = (&o.username, &o.password) {
            opts = opts
                .with_user(user.clone(), pass.clone())
                .with_auto_token_refresh(true);
        }
        if tls {
            let mut t = ec::TlsOptions::new();
            if let Some(ca) = &o.tls_ca {
                t = t.ca_certificate(ec::Certificate::from_pem(read_tls("CA", ca)?));
            }
            if let (Some(cert), Some(key)) = (&o.tls_cert, &o.tls_key) {
                t = t.identity(ec::Identity::from_pem(
                    read_tls("certificate", cert)?,
                    read_tls("key", key)?,
                ));
            }
            opts = opts.with_tls(t);
        }
        let probe_options = opts.clone();
        let connected = bounded("connect etcd", url, async {
            Client::connect(&endpoints, Some(opts))
                .await
                .map_err(|e| map_err("connect etcd", url, e))
        })
        .await;
        let client = match connected {
            Ok(c) => c,
            Err(e) => return Err(errors::diagnose_connect(e, url).await),
        };
        let steward = members::Steward::start(&client, endpoints, probe_options);
        let store = EtcdStore {
            inner: Arc::new(Inner {
                url: url.clone(),
                client,
                root: format!("{}/", url.prefix),
                life: Lifecycle::default(),
                lease: Lease::default(),
                steward,
            }),
        };
        // The client connects lazily; one read proves the servers answer (and the
        // credentials work) before the caller relies on the store.
        let root = store.inner.root.clone();
        let answered = store
            .inner
            .call("connect etcd", |mut c| async move {
                c.get(root, Some(GetOptions::new().with_count_only())).await
            })
            .await;
        if let Err(e) = answered {
            return Err(errors::diagnose_connect(e, url).await);
        }
        Ok(store)
    }
}

impl Inner {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn rel<'a>(&self, full: &'a [u8]) -> Option<&'a str> {
        std::str::from_utf8(full)
            .ok()?
            .strip_prefix(self.root.as_str())
    }

    fn kv(&self, kv: &ec::KeyValue) -> Option<KeyValue> {
        Some(KeyValue {
            key: self.rel(kv.key())?.to_string(),
            value: kv.value().to_vec(),
            version: kv.mod_revision() as Version,
        })
    }

    /// One etcd call on a clone of the client, bounded by the URL timeout.
    async fn call<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T>
    where
        F: FnOnce(Client) -> Fut + Clone,
        Fut: std::future::Future<Output = std::result::Result<T, ec::Error>>,
    {
        self.life.check_open(op, &self.url)?;
        raw(self, op, f).await
    }

    /// The `[start, end)` range of `prefix` and everything below it. The range also holds
    /// keys such as `prefix-x` (`-` sorts before `/`), which callers filter with [`under`].
    fn range(&self, prefix: &str) -> (String, String) {
        if prefix.is_empty() {
            let mut end = self.root.clone().into_bytes();
            *end.last_mut().expect("root ends with '/'") += 1;
            (
                self.root.clone(),
                String::from_utf8(end).expect("ASCII root"),
            )
        } else {
            let start = self.full(prefix);
            (start.clone(), format!("{start}0"))
        }
    }

    /// Runs a transaction of `compares` → `then`, reading back `keys` when a compare fails.
    async fn txn(
        &self,
        op: &'static str,
        compares: Vec<Compare>,
        then: Vec<ec::TxnOp>,
        keys: &[&str],
    ) -> Result<std::result::Result<ec::TxnResponse, Vec<Option<Version>>>> {
        let txn = Txn::new().when(compares).and_then(then).or_else(
            keys.iter()
                .map(|k| ec::TxnOp::get(self.full(k), None))
                .collect::<Vec<_>>(),
        );
        let resp = self
            .call(op, |mut c| async move { c.txn(txn).await })
            .await?;
        if resp.succeeded() {
            return Ok(Ok(resp));
        }
        let found = resp
            .op_responses()
            .iter()
            .map(|r| match r {
                ec::TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.mod_revision() as Version),
                _ => None,
            })
            .collect();
        Ok(Err(found))
    }
}

fn revision(header: Option<&ec::ResponseHeader>) -> Version {
    header.map_or(0, |h| h.revision() as Version)
}

#[async_trait]
impl KvStore for EtcdStore {
    fn backend(&self) -> Backend {
        Backend::Etcd
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            watch_replay: true,
            max_value_len: LIMIT.bytes(&self.inner.url),
            max_txn_ops: MAX_TXN_OPS,
            current_reads: true,
        }
    }

    /// Reads are current already (`current_reads`).
    async fn sync(&self) -> Result<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let s = &self.inner;
        let full = s.full(key);
        let resp = s
            .call("store get", |mut c| async move { c.get(full, None).await })
            .await?;
        Ok(resp.kvs().first().and_then(|kv| s.kv(kv)))
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check("store put", &self.inner.url, [(key, value.len())])?;
        let s = &self.inner;
        let (full, value) = (s.full(key), value.to_vec());
        let resp = s
            .call("store put", |mut c| async move {
                c.put(full, value, None).await
            })
            .await?;
        s.life.disown(key);
        Ok(revision(resp.header()))
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check("store create", &self.inner.url, [(key, value.len())])?;
        let s = &self.inner;
        let full = s.full(key);
        let cmp = vec![Compare::version(full.clone(), CompareOp::Equal, 0)];
        let then = vec![ec::TxnOp::put(full, value.to_vec(), None)];
        match s.txn("store create", cmp, then, &[key]).await? {
            Ok(resp) => Ok(revision(resp.header())),
            Err(_) => Err(exists_error("store create", key)),
        }
    }

    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check(
            "store compare and swap",
            &self.inner.url,
            [(key, value.len())],
        )?;
        let s = &self.inner;
        s.life.check_open("store compare-and-swap", &s.url)?;
        if version == 0 {
            // etcd reads mod_revision 0 as "absent"; no stored value has version 0.
            return Err(conflict_error("store compare-and-swap", key, Some(0), None));
        }
        let full = s.full(key);
        let cmp = vec![Compare::mod_revision(
            full.clone(),
            CompareOp::Equal,
            version as i64,
        )];
        let then = vec![ec::TxnOp::put(full, value.to_vec(), None)];
        match s.txn("store compare-and-swap", cmp, then, &[key]).await? {
            Ok(resp) => {
                s.life.disown(key);
                Ok(revision(resp.header()))
            }
            Err(found) => Err(conflict_error(
                "store compare-and-swap",
                key,
                Some(version),
                found[0],
            )),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let s = &self.inner;
        let full = s.full(key);
        let resp = s
            .call(
                "store delete",
                |mut c| async move { c.delete(full, None).await },
            )
            .await?;
        s.life.disown(key);
        Ok(resp.deleted() > 0)
    }

    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        validate_key(key)?;
        let s = &self.inner;
        s.life.check_open("store compare-and-delete", &s.url)?;
        if version == 0 {
            return Err(conflict_error(
                "store compare-and-delete",
                key,
                Some(0),
                None,
            ));
        }
        let full = s.full(key);
        let cmp = vec![Compare::mod_revision(
            full.clone(),
            CompareOp::Equal,
            version as i64,
        )];
        let then = vec![ec::TxnOp::delete(full, None)];
        match s.txn("store compare-and-delete", cmp, then, &[key]).await? {
            Ok(_) => {
                s.life.disown(key);
                Ok(())
            }
            Err(found) => Err(conflict_error(
                "store compare-and-delete",
                key,
                Some(version),
                found[0],
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        let prefix = norm_prefix(prefix)?;
        let s = &self.inner;
        let (start, end) = s.range(prefix);
        let resp = s
            .call("store list", |mut c| async move {
                c.get(start, Some(GetOptions::new().with_range(end))).await
            })
            .await?;
        let kvs = resp
            .kvs()
            .iter()
            .filter_map(|kv| s.kv(kv))
            .filter(|kv| under(prefix, &kv.key))
            .collect();
        Ok(Listing {
            kvs,
            revision: revision(resp.header()),
        })
    }

    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        const OP: &str = "store txn";
        check_txn(ops, MAX_TXN_OPS)?;
        LIMIT.check("store txn", &self.inner.url, txn_values(ops))?;
        let s = &self.inner;
        s.life.check_open(OP, &s.url)?;
        let mut compares = Vec::new();
        let mut then = Vec::new();
        let mut checked: Vec<(&TxnOp, &str)> = Vec::new();
        for op in ops {
            let full = s.full(op.key());
            let zero = |v: Version| v == 0;
            match op {
                TxnOp::Create { value, .. } => {
                    compares.push(Compare::version(full.clone(), CompareOp::Equal, 0));
                    then.push(ec::TxnOp::put(full, value.clone(), None));
                }
                TxnOp::Put { value, .. } => then.push(ec::TxnOp::put(full, value.clone(), None)),
                TxnOp::Update {
                    key,
                    value,
                    version,
                } => {
                    if zero(*version) {
                        return Err(conflict_error(OP, key, Some(0), None));
                    }
                    compares.push(Compare::mod_revision(
                        full.clone(),
                        CompareOp::Equal,
                        *version as i64,
                    ));
                    then.push(ec::TxnOp::put(full, value.clone(), None));
                }
                TxnOp::Delete { .. } => then.push(ec::TxnOp::delete(full, None)),
                TxnOp::DeleteIf { key, version } => {
                    if zero(*version) {
                        return Err(conflict_error(OP, key, Some(0), None));
                    }
                    compares.push(Compare::mod_revision(
                        full.clone(),
                        CompareOp::Equal,
                        *version as i64,
                    ));
                    then.push(ec::TxnOp::delete(full, None));
                }
                TxnOp::Check { key, version } => match version {
                    Some(0) => return Err(conflict_error(OP, key, Some(0), None)),
                    Some(v) => {
                        compares.push(Compare::mod_revision(full, CompareOp::Equal, *v as i64))
                    }
                    None => compares.push(Compare::version(full, CompareOp::Equal, 0)),
                },
            }
            if !matches!(op, TxnOp::Put { .. } | TxnOp::Delete { .. }) {
                checked.push((op, op.key()));
            }
        }
        let keys: Vec<&str> = checked.iter().map(|(_, k)| *k).collect();
        match s.txn(OP, compares, then, &keys).await? {
            Ok(resp) => {
                let rev = revision(resp.header());
                for op in ops {
                    s.life.disown(op.key());
                }
                let versions = ops
                    .iter()
                    .map(|op| match op {
                        TxnOp::Create { .. } | TxnOp::Put { .. } | TxnOp::Update { .. } => {
                            Some(rev)
                        }
                        _ => None,
                    })
                    .collect();
                Ok(TxnResult { versions })
            }
            Err(found) => {
                for ((op, key), found) in checked.iter().zip(found) {
                    let failed = match op {
                        TxnOp::Create { .. } => found.is_some(),
                        TxnOp::Update { version, .. }
                        | TxnOp::DeleteIf { version, .. }
                        | TxnOp::Check {
                            version: Some(version),
                            ..
                        } => found != Some(*version),
                        TxnOp::Check { version: None, .. } => found.is_some(),
                        TxnOp::Put { .. } | TxnOp::Delete { .. } => false,
                    };
                    if !failed {
                        continue;
                    }
                    return Err(match op {
                        TxnOp::Create { .. } => exists_error(OP, key),
                        TxnOp::Check { version: None, .. } => conflict_error(OP, key, None, found),
                        TxnOp::Update { version, .. }
                        | TxnOp::DeleteIf { version, .. }
                        | TxnOp::Check {
                            version: Some(version),
                            ..
                        } => conflict_error(OP, key, Some(*version), found),
                        TxnOp::Put { .. } | TxnOp::Delete { .. } => unreachable!("unconditional"),
                    });
                }
                Err(Error::new(
                    ErrorKind::Conflict,
                    OP,
                    format!("a condition on one of {keys:?} failed and changed again since"),
                ))
            }
        }
    }

    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch> {
        let prefix = norm_prefix(prefix)?;
        watch::start(self.inner.clone(), prefix.to_string(), from).await
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        let s = &self.inner;
        // Boxed: the etcd client's futures are large.
        let put = Box::pin(lease::put_ephemeral(s, key, value, false));
        s.life
            .write_ephemeral(&LIMIT, &s.url, (key, value), false, put)
            .await
    }

    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        let s = &self.inner;
        let create = Box::pin(lease::put_ephemeral(s, key, value, true));
        s.life
            .write_ephemeral(&LIMIT, &s.url, (key, value), true, create)
            .await
    }

    async fn close(&self) -> Result<()> {
        let s = &self.inner;
        if !s.life.close() {
            return Ok(());
        }
        lease::revoke(s).await
    }
}

/// An `etcd` call path used by [`lease`] and [`watch`] without the closed check.
async fn raw<T, F, Fut>(s: &Inner, op: &'static str, f: F) -> Result<T>
where
    F: FnOnce(Client) -> Fut + Clone,
    Fut: std::future::Future<Output = std::result::Result<T, ec::Error>>,
{
    bounded(op, &s.url, async {
        loop {
            match f.clone()(s.client.clone()).await {
                Ok(v) => return Ok(v),
                // The balancer may route a request to an endpoint it has not found dead yet;
                // such a request never reached a server, so sending it again is safe.
                Err(e) if s.url.servers.len() > 1 && errors::never_sent(&e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    let e = map_err(op, &s.url, e);
                    if e.kind() == ErrorKind::Unavailable
                        && let Some(steward) = &s.steward
                    {
                        steward.recheck();
                    }
                    return Err(e);
                }
            }
        }
    })
    .await
    .inspect_err(|e| {
        if e.kind() == ErrorKind::Timeout
            && let Some(steward) = &s.steward
        {
            steward.recheck();
        }
    })
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("etcd")
            .field("url", &self.url.to_string())
            .finish()
    }
}
