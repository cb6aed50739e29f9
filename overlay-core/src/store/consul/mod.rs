//! The Consul backend, over Consul's documented HTTP API.
//!
//! Versions are `ModifyIndex`; every write is a `/v1/txn` so it returns its index and a failed
//! condition names the op that failed. Ephemeral keys are held by a session with a TTL and
//! `Behavior=delete`, renewed in the background ([`session`]). Watches are blocking queries
//! diffed against the previous result, so deletes are reported too ([`watch`]); Consul keeps
//! no history, so a watch from a version starts with a Resync and quick successive changes
//! of one key may reach a watch as one.
//!
//! Not verified here: no Consul agent is available on the build machine; the conformance
//! suite runs against one when `OVERLAY_TEST_CONSUL` names it.

mod http;
mod session;
mod watch;

use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::error::{Error, ErrorKind, Result};
use crate::store::remote::{
    Lifecycle, SizeLimit, bounded, check_txn, conflict_error, exists_error, norm_prefix,
    txn_values, under,
};
use crate::store::{
    Backend, Capabilities, KeyValue, KvStore, Listing, StoreUrl, TxnOp, TxnResult, Version, Watch,
    validate_key,
};
use http::Http;

/// Consul's limit of operations per transaction.
const MAX_TXN_OPS: usize = 64;
/// Consul's default `kv_max_value_size`.
const LIMIT: SizeLimit = SizeLimit {
    backend: "Consul",
    default: 512 * 1024,
    why: "the agent's limits.kv_max_value_size, 512 KiB by default",
    server_option: "Consul's limits.kv_max_value_size (and txn_max_req_len for transactions)",
};

/// A connection to a Consul agent.
pub(crate) struct ConsulStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    url: StoreUrl,
    http: Http,
    /// `<prefix>/`.
    root: String,
    /// Closed or open; the ephemeral keys to put again under a new session.
    life: Lifecycle,
    session: session::Session,
}

impl std::fmt::Debug for ConsulStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulStore")
            .field("url", &self.inner.url.to_string())
            .finish()
    }
}

/// One entry of a KV read or a transaction result.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Entry {
    key: String,
    #[serde(default)]
    value: Option<String>,
    modify_index: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnReply {
    #[serde(default)]
    results: Option<Vec<TxnResultEntry>>,
    #[serde(default)]
    errors: Option<Vec<TxnError>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResultEntry {
    #[serde(rename = "KV")]
    kv: Option<Entry>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TxnError {
    op_index: usize,
    what: String,
}

fn bad_reply(op: &'static str, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Internal,
        op,
        format!("Consul sent a reply this client cannot read: {e}"),
    )
    .with_hint("check that the URL names a Consul agent (HTTP API v1)")
}

impl ConsulStore {
    /// Connects to the agent `url` names and checks that its cluster has a leader.
    pub(crate) async fn connect(url: &StoreUrl) -> Result<Self> {
        const OP: &str = "connect Consul";
        let http = Http::new(url)?;
        let reply = bounded(
            OP,
            url,
            http.call(OP, Method::GET, "/v1/status/leader", None, None),
        )
        .await?;
        let leader: String = serde_json::from_slice(&reply.body).map_err(|e| bad_reply(OP, e))?;
        if leader.is_empty() {
            return Err(Error::new(
                ErrorKind::Unavailable,
                OP,
                format!("the Consul cluster at {url} has no leader"),
            )
            .with_hint("wait for the Consul servers to elect a leader, then retry"));
        }
        Ok(ConsulStore {
            inner: Arc::new(Inner {
                root: format!("{}/", url.prefix),
                url: url.clone(),
                http,
                life: Lifecycle::default(),
                session: session::Session::default(),
            }),
        })
    }
}

impl Inner {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }

    fn kv(&self, op: &'static str, e: Entry) -> Result<Option<KeyValue>> {
        let Some(key) = e.key.strip_prefix(&self.root) else {
            return Ok(None);
        };
        let value = match e.value {
            Some(v) => B64.decode(v).map_err(|err| bad_reply(op, err))?,
            None => Vec::new(),
        };
        Ok(Some(KeyValue {
            key: key.to_string(),
            value,
            version: e.modify_index,
        }))
    }

    /// Every key at or below `prefix` (normalised), sorted, with the index of the read.
    /// With `wait`, a blocking query that returns once the index passes `index`.
    async fn read_prefix(
        &self,
        op: &'static str,
        prefix: &str,
        blocking: Option<(u64, std::time::Duration)>,
    ) -> Result<(Vec<KeyValue>, u64)> {
        let base = if prefix.is_empty() {
            self.root.clone()
        } else {
            self.full(prefix)
        };
        let mut q = format!("/v1/kv/{}?recurse=true", Http::encode(&base));
        match blocking {
            Some((index, wait)) => {
                q.push_str(&format!("&index={index}&wait={}ms", wait.as_millis()))
            }
            // A listing is current, as `get` is (the store's read contract); a blocking query
            // only needs to return once the index passes, which any server's state tells.
            None => q.push_str("&consistent"),
        }
        let reply = self
            .http
            .call(op, Method::GET, &q, None, blocking.map(|b| b.1))
            .await?;
        let mut kvs = Vec::new();
        if reply.status != StatusCode::NOT_FOUND {
            let entries: Vec<Entry> =
                serde_json::from_slice(&reply.body).map_err(|e| bad_reply(op, e))?;
            for e in entries {
                if let Some(kv) = self.kv(op, e)?
                    && under(prefix, &kv.key)
                {
                    kvs.push(kv);
                }
            }
        }
        kvs.sort_by(|a, b| a.key.cmp(&b.key));
        Ok((kvs, reply.index))
    }

    /// Runs a transaction of Consul KV ops: the index of its writes, or the failed op.
    async fn txn(
        &self,
        op: &'static str,
        ops: Vec<Json>,
    ) -> Result<std::result::Result<u64, (usize, String)>> {
        self.life.check_open(op, &self.url)?;
        let body = serde_json::to_vec(&ops).map_err(|e| Error::internal(op, e.to_string()))?;
        let reply = bounded(
            op,
            &self.url,
            self.http.call(op, Method::PUT, "/v1/txn", Some(body), None),
        )
        .await?;
        let parsed: TxnReply = serde_json::from_slice(&reply.body).map_err(|e| bad_reply(op, e))?;
        if reply.status == StatusCode::CONFLICT {
            let first = parsed
                .errors
                .unwrap_or_default()
                .into_iter()
                .min_by_key(|e| e.op_index);
            return Ok(Err(first
                .map_or((0, "transaction rolled back".into()), |e| {
                    (e.op_index, e.what)
                })));
        }
        if reply.status == StatusCode::NOT_FOUND {
            return Err(bad_reply(
                op,
                "no /v1/txn endpoint (Consul 0.7 or newer is needed)",
            ));
        }
        let index = parsed
            .results
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| r.kv.map(|kv| kv.modify_index))
            .max()
            .unwrap_or(0);
        Ok(Ok(index))
    }

    fn op(&self, verb: &str, key: &str, value: Option<&[u8]>, index: Option<u64>) -> Json {
        let mut kv = json!({ "Verb": verb, "Key": self.full(key) });
        if let Some(v) = value {
            kv["Value"] = json!(B64.encode(v));
        }
        if let Some(i) = index {
            kv["Index"] = json!(i);
        }
        json!({ "KV": kv })
    }
}

#[async_trait]
impl KvStore for ConsulStore {
    fn backend(&self) -> Backend {
        Backend::Consul
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            watch_replay: false,
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
        const OP: &str = "store get";
        validate_key(key)?;
        let s = &self.inner;
        s.life.check_open(OP, &s.url)?;
        // `consistent`: the store's read contract (a leader that lost its lease to a new one
        // could otherwise answer from its old state).
        let path = format!("/v1/kv/{}?consistent", Http::encode(&s.full(key)));
        let reply = bounded(OP, &s.url, s.http.call(OP, Method::GET, &path, None, None)).await?;
        if reply.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&reply.body).map_err(|e| bad_reply(OP, e))?;
        match entries.into_iter().next() {
            Some(e) => s.kv(OP, e),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check("store put", &self.inner.url, [(key, value.len())])?;
        let s = &self.inner;
        match s
            .txn("store put", vec![s.op("set", key, Some(value), None)])
            .await?
        {
            Ok(index) => Ok(index),
            Err((_, what)) => Err(Error::new(
                ErrorKind::Conflict,
                "store put",
                format!("key {key:?}: {what}"),
            )),
        }
    }

    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        validate_key(key)?;
        LIMIT.check("store create", &self.inner.url, [(key, value.len())])?;
        let s = &self.inner;
        match s
            .txn("store create", vec![s.op("cas", key, Some(value), Some(0))])
            .await?
        {
            Ok(index) => Ok(index),
            Err(_) => Err(exists_error("store create", key)),
        }
    }

    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        const OP: &str = "store compare-and-swap";
        validate_key(key)?;
        LIMIT.check(OP, &self.inner.url, [(key, value.len())])?;
        let s = &self.inner;
        s.life.check_open(OP, &s.url)?;
        if version == 0 {
            // Consul reads index 0 as "create"; no stored value has version 0.
            return Err(conflict_error(OP, key, Some(0), None));
        }
        match s
            .txn(OP, vec![s.op("cas", key, Some(value), Some(version))])
            .await?
        {
            Ok(index) => Ok(index),
            Err(_) => Err(conflict_error(OP, key, Some(version), None)),
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        // Delete at the version just read, so "it existed" is the truth even under races;
        // bounded, with jittered waits, like every retry (DESIGN §4).
        let policy = crate::retry::RetryPolicy::default();
        for attempt in 1..=policy.max_attempts {
            let Some(kv) = self.get(key).await? else {
                return Ok(false);
            };
            match self.compare_and_delete(key, kv.version).await {
                Ok(()) => return Ok(true),
                Err(e) if e.kind() == ErrorKind::Conflict => policy.wait(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            "store delete",
            format!(
                "key {key:?} kept changing; gave up after {} tries",
                policy.max_attempts
            ),
        )
        .with_hint("retry later; many clients are writing this key"))
    }

    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        const OP: &str = "store compare-and-delete";
        validate_key(key)?;
        let s = &self.inner;
        s.life.check_open(OP, &s.url)?;
        if version == 0 {
            return Err(conflict_error(OP, key, Some(0), None));
        }
        // delete-cas of an absent key succeeds in Consul: check the index first, atomically.
        let ops = vec![
            s.op("check-index", key, None, Some(version)),
            s.op("delete-cas", key, None, Some(version)),
        ];
        match s.txn(OP, ops).await? {
            Ok(_) => Ok(()),
            Err(_) => Err(conflict_error(OP, key, Some(version), None)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Listing> {
        const OP: &str = "store list";
        let prefix = norm_prefix(prefix)?;
        let s = &self.inner;
        s.life.check_open(OP, &s.url)?;
        let (kvs, revision) = bounded(OP, &s.url, s.read_prefix(OP, prefix, None)).await?;
        Ok(Listing { kvs, revision })
    }

    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        const OP: &str = "store txn";
        check_txn(ops, MAX_TXN_OPS)?;
        LIMIT.check("store txn", &self.inner.url, txn_values(ops))?;
        let s = &self.inner;
        s.life.check_open(OP, &s.url)?;
        let mut body = Vec::new();
        // Consul op index → our op index.
        let mut owner = Vec::new();
        for (i, o) in ops.iter().enumerate() {
            let before = body.len();
            match o {
                TxnOp::Create { key, value } => body.push(s.op("cas", key, Some(value), Some(0))),
                TxnOp::Put { key, value } => body.push(s.op("set", key, Some(value), None)),
                TxnOp::Update {
                    key,
                    value,
                    version,
                } => {
                    if *version == 0 {
                        return Err(conflict_error(OP, key, Some(0), None));
                    }
                    body.push(s.op("cas", key, Some(value), Some(*version)))
                }
                TxnOp::Delete { key } => body.push(s.op("delete", key, None, None)),
                TxnOp::DeleteIf { key, version } => {
                    body.push(s.op("check-index", key, None, Some(*version)));
                    body.push(s.op("delete-cas", key, None, Some(*version)));
                }
                TxnOp::Check {
                    key,
                    version: Some(v),
                } => body.push(s.op("check-index", key, None, Some(*v))),
                TxnOp::Check { key, version: None } => {
                    body.push(s.op("check-not-exists", key, None, None))
                }
            }
            owner.extend(std::iter::repeat_n(i, body.len() - before));
        }
        match s.txn(OP, body).await? {
            Ok(index) => Ok(TxnResult {
                versions: ops
                    .iter()
                    .map(|o| match o {
                        TxnOp::Create { .. } | TxnOp::Put { .. } | TxnOp::Update { .. } => {
                            Some(index)
                        }
                        _ => None,
                    })
                    .collect(),
            }),
            Err((at, what)) => {
                let Some(o) = owner.get(at).map(|&i| &ops[i]) else {
                    return Err(Error::new(
                        ErrorKind::Conflict,
                        OP,
                        format!("transaction failed: {what}"),
                    ));
                };
                Err(match o {
                    TxnOp::Create { key, .. } => exists_error(OP, key),
                    TxnOp::Update { key, version, .. }
                    | TxnOp::DeleteIf { key, version }
                    | TxnOp::Check {
                        key,
                        version: Some(version),
                    } => conflict_error(OP, key, Some(*version), None),
                    other => Error::new(
                        ErrorKind::Conflict,
                        OP,
                        format!("key {:?}: {what}", other.key()),
                    ),
                })
            }
        }
    }

    async fn watch(&self, prefix: &str, from: Option<Version>) -> Result<Watch> {
        let prefix = norm_prefix(prefix)?;
        watch::start(self.inner.clone(), prefix.to_string(), from).await
    }

    async fn put_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        let s = &self.inner;
        let put = session::put_ephemeral(s, key, value);
        s.life
            .write_ephemeral(&LIMIT, &s.url, (key, value), false, put)
            .await
    }

    async fn create_ephemeral(&self, key: &str, value: &[u8]) -> Result<Version> {
        let s = &self.inner;
        let create = session::create_ephemeral(s, key, value);
        s.life
            .write_ephemeral(&LIMIT, &s.url, (key, value), true, create)
            .await
    }

    async fn close(&self) -> Result<()> {
        let s = &self.inner;
        if !s.life.close() {
            return Ok(());
        }
        session::destroy(s).await
    }
}
