//! A minimal in-process `KvStore` for the allocator's unit tests until the embedded store is
//! available here: versions, create, compare-and-swap and all-or-nothing transactions, which is
//! all the IPAM uses. Watches and ephemeral keys are not provided.

use std::collections::BTreeMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::store::{
    Backend, Capabilities, KeyValue, KvStore, Listing, TxnOp, TxnResult, Version, Watch,
    validate_key, validate_prefix,
};

/// Key → (value, version).
type Map = BTreeMap<String, (Vec<u8>, Version)>;

#[derive(Debug, Default)]
pub(crate) struct MemStore {
    inner: Mutex<(Version, Map)>,
}

fn conflict(key: &str, kind: ErrorKind) -> Error {
    Error::new(kind, "memstore", format!("condition on {key:?} failed"))
}

#[async_trait]
impl KvStore for MemStore {
    fn backend(&self) -> Backend {
        Backend::Embedded
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            watch_replay: false,
            max_value_len: 1 << 20,
            max_txn_ops: 128,
        }
    }
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        validate_key(key)?;
        let g = self.inner.lock().unwrap();
        Ok(g.1.get(key).map(|(v, ver)| KeyValue {
            key: key.into(),
            value: v.clone(),
            version: *ver,
        }))
    }
    async fn put(&self, key: &str, value: &[u8]) -> Result<Version> {
        let r = self
            .txn(&[TxnOp::Put {
                key: key.into(),
                value: value.into(),
            }])
            .await?;
        Ok(r.versions[0].unwrap_or_default())
    }
    async fn create(&self, key: &str, value: &[u8]) -> Result<Version> {
        let r = self
            .txn(&[TxnOp::Create {
                key: key.into(),
                value: value.into(),
            }])
            .await?;
        Ok(r.versions[0].unwrap_or_default())
    }
    async fn compare_and_swap(&self, key: &str, value: &[u8], version: Version) -> Result<Version> {
        let r = self
            .txn(&[TxnOp::Update {
                key: key.into(),
                value: value.into(),
                version,
            }])
            .await?;
        Ok(r.versions[0].unwrap_or_default())
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        validate_key(key)?;
        let mut g = self.inner.lock().unwrap();
        g.0 += 1;
        Ok(g.1.remove(key).is_some())
    }
    async fn compare_and_delete(&self, key: &str, version: Version) -> Result<()> {
        self.txn(&[TxnOp::DeleteIf {
            key: key.into(),
            version,
        }])
        .await
        .map(|_| ())
    }
    async fn list(&self, prefix: &str) -> Result<Listing> {
        validate_prefix(prefix)?;
        let g = self.inner.lock().unwrap();
        let kvs =
            g.1.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
                .map(|(k, (v, ver))| KeyValue {
                    key: k.clone(),
                    value: v.clone(),
                    version: *ver,
                })
                .collect();
        Ok(Listing { kvs, revision: g.0 })
    }
    async fn txn(&self, ops: &[TxnOp]) -> Result<TxnResult> {
        for op in ops {
            validate_key(op.key())?;
        }
        let mut g = self.inner.lock().unwrap();
        for op in ops {
            let cur = g.1.get(op.key()).map(|(_, v)| *v);
            let ok = match op {
                TxnOp::Create { .. } => cur.is_none(),
                TxnOp::Update { version, .. } | TxnOp::DeleteIf { version, .. } => {
                    cur == Some(*version)
                }
                TxnOp::Check { version, .. } => cur == *version,
                TxnOp::Put { .. } | TxnOp::Delete { .. } => true,
            };
            if !ok {
                let kind = if matches!(op, TxnOp::Create { .. }) {
                    ErrorKind::AlreadyExists
                } else {
                    ErrorKind::Conflict
                };
                return Err(conflict(op.key(), kind));
            }
        }
        g.0 += 1;
        let rev = g.0;
        let mut versions = Vec::new();
        for op in ops {
            match op {
                TxnOp::Create { key, value }
                | TxnOp::Put { key, value }
                | TxnOp::Update { key, value, .. } => {
                    g.1.insert(key.clone(), (value.clone(), rev));
                    versions.push(Some(rev));
                }
                TxnOp::Delete { key } | TxnOp::DeleteIf { key, .. } => {
                    g.1.remove(key);
                    versions.push(None);
                }
                TxnOp::Check { .. } => versions.push(None),
            }
        }
        Ok(TxnResult { versions })
    }
    async fn watch(&self, _prefix: &str, _from: Option<Version>) -> Result<Watch> {
        Err(Error::new(ErrorKind::Unsupported, "memstore", "no watches"))
    }
    async fn put_ephemeral(&self, _key: &str, _value: &[u8]) -> Result<Version> {
        Err(Error::new(
            ErrorKind::Unsupported,
            "memstore",
            "no ephemeral keys",
        ))
    }
    async fn close(&self) -> Result<()> {
        Ok(())
    }
}
