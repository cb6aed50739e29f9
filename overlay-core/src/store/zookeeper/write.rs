//! Writes: every one is a `multi` of journal entries and the node operations, guarded by the
//! `dataVersion` read just before, and retried from the read when another client won a race
//! on an unconditional write.

use zookeeper_client as zk;
use zookeeper_client::{Client, CreateMode, MultiWriteError, MultiWriteResult, Stat};

use super::Inner;
use super::layout::{BARRIER, ENTRY, Entry, encode_value, entry_seq, holds_value, node, version};
use super::session::{acls, map_err};
use crate::error::{Error, ErrorKind, Result};
use crate::store::remote::{bounded, check_txn, conflict_error, exists_error};
use crate::store::{TxnOp, TxnResult, Version};

/// How often a write is retried after losing a race it may retry (not a failed condition).
const RETRIES: usize = 64;
/// A writer whose journal entry number is a multiple of this prunes the journal.
const PRUNE_EVERY: i64 = 256;

/// One node operation of a `multi`.
enum ZOp {
    Create {
        path: String,
        data: Vec<u8>,
        ephemeral: bool,
    },
    Set {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    Delete {
        path: String,
        version: i32,
    },
    Check {
        path: String,
        version: i32,
    },
}

/// Why a `multi` did not commit.
enum Failed {
    /// Node op `index` found the state changed since it was read (or a parent missing).
    Raced { index: usize, error: zk::Error },
    /// Anything else.
    Error(Error),
}

fn raced(e: &zk::Error) -> bool {
    matches!(
        e,
        zk::Error::NoNode | zk::Error::NodeExists | zk::Error::BadVersion | zk::Error::NotEmpty
    )
}

async fn stat(s: &Inner, c: &Client, op: &'static str, path: &str) -> Result<Option<Stat>> {
    c.check_stat(path).await.map_err(|e| map_err(op, &s.url, e))
}

/// Creates the parent nodes of `path` (as directories) where missing.
async fn ensure_parents(s: &Inner, c: &Client, op: &'static str, path: &str) -> Result<()> {
    let Some((parent, _)) = path.rsplit_once('/') else {
        return Ok(());
    };
    let dir = CreateMode::Persistent.with_acls(acls(&s.url));
    c.mkdir(parent, &dir).await.map_err(|e| {
        if matches!(e, zk::Error::NoChildrenForEphemerals) {
            Error::invalid(op, format!("{path} is below an ephemeral key"))
                .with_hint("ZooKeeper ephemeral nodes have no children; use another key")
        } else {
            map_err(op, &s.url, e)
        }
    })
}

/// Commits `entries` (journal) and `ops` in one `multi`; returns the write's zxid.
async fn commit(
    s: &Inner,
    c: &Client,
    op: &'static str,
    entries: &[Entry],
    ops: &[ZOp],
) -> std::result::Result<Version, Failed> {
    let acl = acls(&s.url);
    let journal = CreateMode::PersistentSequential.with_acls(acl);
    let mut m = c.new_multi_writer();
    let bad = |e: zk::Error| Failed::Error(map_err(op, &s.url, e));
    for e in entries {
        m.add_create(ENTRY, &e.encode(), &journal).map_err(bad)?;
    }
    for o in ops {
        match o {
            ZOp::Create {
                path,
                data,
                ephemeral,
            } => {
                let mode = if *ephemeral {
                    CreateMode::Ephemeral
                } else {
                    CreateMode::Persistent
                };
                m.add_create(path, data, &mode.with_acls(acl))
                    .map_err(bad)?
            }
            ZOp::Set {
                path,
                data,
                version,
            } => m.add_set_data(path, data, Some(*version)).map_err(bad)?,
            ZOp::Delete { path, version } => m.add_delete(path, Some(*version)).map_err(bad)?,
            ZOp::Check { path, version } => m.add_check_version(path, *version).map_err(bad)?,
        }
    }
    let results = match m.commit().await {
        Ok(r) => r,
        Err(MultiWriteError::OperationFailed { index, source }) if index >= entries.len() => {
            return Err(if raced(&source) {
                Failed::Raced {
                    index: index - entries.len(),
                    error: source,
                }
            } else {
                Failed::Error(map_err(op, &s.url, source))
            });
        }
        Err(e) => return Err(Failed::Error(map_err(op, &s.url, e.into()))),
    };
    let mut zxid = None;
    let mut journal_path = None;
    for r in &results {
        match r {
            MultiWriteResult::Create { path, stat } => {
                if !stat.is_invalid() && zxid.is_none() {
                    zxid = Some(stat.czxid as Version);
                }
                if journal_path.is_none() {
                    journal_path = Some(path.clone());
                }
            }
            MultiWriteResult::SetData { stat } if zxid.is_none() => zxid = Some(version(stat)),
            _ => {}
        }
    }
    if let Some(path) = &journal_path
        && let Some(seq) = path.rsplit('/').next().and_then(entry_seq)
        && seq % PRUNE_EVERY == 0
    {
        tokio::spawn(super::read::prune(c.clone(), s.url.clone()));
    }
    match (zxid, journal_path) {
        (Some(z), _) => Ok(z),
        // Some servers return no stat for a create inside a multi: read the entry's.
        (None, Some(path)) => match stat(s, c, op, &path).await {
            Ok(Some(st)) => Ok(st.czxid as Version),
            Ok(None) => Err(Failed::Error(Error::internal(op, "journal entry vanished"))),
            Err(e) => Err(Failed::Error(e)),
        },
        (None, None) => Ok(0),
    }
}

/// The node ops that make `key` hold `value` given its current `stat`.
fn write_ops(
    c: &Client,
    key: &str,
    value: &[u8],
    st: Option<&Stat>,
    ephemeral: bool,
) -> Result<Vec<ZOp>> {
    let path = node(key);
    let data = encode_value(value);
    let mine = c.session_id().0;
    Ok(match st {
        None => vec![ZOp::Create {
            path,
            data,
            ephemeral,
        }],
        Some(st) if ephemeral && st.ephemeral_owner == mine => {
            vec![ZOp::Set {
                path,
                data,
                version: st.version,
            }]
        }
        Some(st) if !ephemeral && st.ephemeral_owner == 0 => {
            vec![ZOp::Set {
                path,
                data,
                version: st.version,
            }]
        }
        // Changing a node between ephemeral and persistent means creating it again.
        Some(st) if st.num_children > 0 => {
            return Err(Error::new(
                ErrorKind::Unsupported,
                "store put ephemeral",
                format!("key {key:?} has keys below it and cannot be made ephemeral"),
            )
            .with_hint("ZooKeeper ephemeral nodes have no children; use a leaf key"));
        }
        Some(st) => vec![
            ZOp::Delete {
                path: path.clone(),
                version: st.version,
            },
            ZOp::Create {
                path,
                data,
                ephemeral,
            },
        ],
    })
}

/// Puts `value` at `key` (ephemeral: bound to this client's session).
pub(super) async fn put(s: &Inner, key: &str, value: &[u8], ephemeral: bool) -> Result<Version> {
    let op = if ephemeral {
        "store put ephemeral"
    } else {
        "store put"
    };
    let c = s.client(op)?;
    bounded(op, &s.url, async {
        for _ in 0..RETRIES {
            let st = stat(s, &c, op, &node(key)).await?;
            let ops = write_ops(&c, key, value, st.as_ref(), ephemeral)?;
            let entries = [Entry::Put {
                key: key.to_string(),
                value: value.to_vec(),
            }];
            match commit(s, &c, op, &entries, &ops).await {
                Ok(v) => {
                    if !ephemeral {
                        s.life.disown(key);
                    }
                    return Ok(v);
                }
                Err(Failed::Raced {
                    error: zk::Error::NoNode,
                    ..
                }) if st.is_none() => ensure_parents(s, &c, op, &node(key)).await?,
                Err(Failed::Raced { .. }) => {}
                Err(Failed::Error(e)) => return Err(e),
            }
        }
        Err(busy(op, key))
    })
    .await
}

fn busy(op: &'static str, key: &str) -> Error {
    Error::new(
        ErrorKind::Conflict,
        op,
        format!("key {key:?} kept changing; gave up after {RETRIES} tries"),
    )
    .with_hint("retry later; many clients are writing this key")
}

/// Creates `key` only if it does not exist (a directory node is not a key); as an ephemeral
/// node of this client's session when `ephemeral`.
pub(super) async fn create(s: &Inner, key: &str, value: &[u8], ephemeral: bool) -> Result<Version> {
    let op = if ephemeral {
        "store create ephemeral"
    } else {
        "store create"
    };
    let c = s.client(op)?;
    bounded(op, &s.url, async {
        for _ in 0..RETRIES {
            let st = stat(s, &c, op, &node(key)).await?;
            let ops = match &st {
                Some(st) if holds_value(st) => return Err(exists_error(op, key)),
                // A directory node (parent of deeper keys) cannot become an ephemeral node.
                Some(_) if ephemeral => {
                    return Err(Error::invalid(op, format!("key {key:?} has keys below it"))
                        .with_hint("ZooKeeper ephemeral nodes have no children; use another key"));
                }
                Some(st) => vec![ZOp::Set {
                    path: node(key),
                    data: encode_value(value),
                    version: st.version,
                }],
                None => vec![ZOp::Create {
                    path: node(key),
                    data: encode_value(value),
                    ephemeral,
                }],
            };
            let entries = [Entry::Put {
                key: key.to_string(),
                value: value.to_vec(),
            }];
            match commit(s, &c, op, &entries, &ops).await {
                Ok(v) => return Ok(v),
                Err(Failed::Raced {
                    error: zk::Error::NoNode,
                    ..
                }) if st.is_none() => ensure_parents(s, &c, op, &node(key)).await?,
                Err(Failed::Raced { .. }) => {}
                Err(Failed::Error(e)) => return Err(e),
            }
        }
        Err(busy(op, key))
    })
    .await
}

/// Writes `value` if `key` is at `expected`.
pub(super) async fn compare_and_swap(
    s: &Inner,
    key: &str,
    value: &[u8],
    expected: Version,
) -> Result<Version> {
    const OP: &str = "store compare-and-swap";
    let c = s.client(OP)?;
    bounded(OP, &s.url, async {
        let st = stat(s, &c, OP, &node(key)).await?.filter(holds_value);
        let Some(st) = st.filter(|st| version(st) == expected) else {
            return Err(conflict_error(
                OP,
                key,
                Some(expected),
                st.as_ref().map(version),
            ));
        };
        let ops = [ZOp::Set {
            path: node(key),
            data: encode_value(value),
            version: st.version,
        }];
        let entries = [Entry::Put {
            key: key.to_string(),
            value: value.to_vec(),
        }];
        match commit(s, &c, OP, &entries, &ops).await {
            Ok(v) => Ok(v),
            // The dataVersion moved, so the mzxid did too: someone else wrote first.
            Err(Failed::Raced { .. }) => Err(conflict_error(OP, key, Some(expected), None)),
            Err(Failed::Error(e)) => Err(e),
        }
    })
    .await
}

/// The node ops that delete the key whose node has `st`: the node itself, or only its value
/// when keys below it keep it as a directory.
fn delete_ops(key: &str, st: &Stat) -> Vec<ZOp> {
    if st.num_children > 0 {
        vec![ZOp::Set {
            path: node(key),
            data: Vec::new(),
            version: st.version,
        }]
    } else {
        vec![ZOp::Delete {
            path: node(key),
            version: st.version,
        }]
    }
}

/// Deletes `key` (only at version `expected` if given); `Some(())` if it existed.
pub(super) async fn delete(s: &Inner, key: &str, expected: Option<Version>) -> Result<Option<()>> {
    let op = if expected.is_some() {
        "store compare-and-delete"
    } else {
        "store delete"
    };
    let c = s.client(op)?;
    bounded(op, &s.url, async {
        for _ in 0..RETRIES {
            let st = stat(s, &c, op, &node(key)).await?.filter(holds_value);
            let st = match (st, expected) {
                (Some(st), Some(v)) if version(&st) == v => st,
                (st, Some(v)) => {
                    return Err(conflict_error(op, key, Some(v), st.as_ref().map(version)));
                }
                (None, None) => return Ok(None),
                (Some(st), None) => st,
            };
            let entries = [Entry::Delete {
                key: key.to_string(),
            }];
            match commit(s, &c, op, &entries, &delete_ops(key, &st)).await {
                Ok(_) => {
                    s.life.disown(key);
                    return Ok(Some(()));
                }
                // A key created below it meanwhile: delete only the value, next round.
                Err(Failed::Raced {
                    error: zk::Error::NotEmpty,
                    ..
                }) => {}
                Err(Failed::Raced { .. }) if expected.is_some() => {
                    return Err(conflict_error(op, key, expected, None));
                }
                Err(Failed::Raced { .. }) => {}
                Err(Failed::Error(e)) => return Err(e),
            }
        }
        Err(busy(op, key))
    })
    .await
}

/// Deletes an ephemeral key of this (closing) client through the journal.
pub(super) async fn delete_owned_ephemeral(s: &Inner, key: &str) -> Result<()> {
    const OP: &str = "close ZooKeeper store";
    let Some(c) = s.client.borrow().1.clone() else {
        return Ok(());
    };
    bounded(OP, &s.url, async {
        let Some(st) = stat(s, &c, OP, &node(key)).await? else {
            return Ok(());
        };
        if st.ephemeral_owner != c.session_id().0 {
            return Ok(());
        }
        let entries = [Entry::Delete {
            key: key.to_string(),
        }];
        match commit(s, &c, OP, &entries, &delete_ops(key, &st)).await {
            Ok(_) | Err(Failed::Raced { .. }) => Ok(()),
            Err(Failed::Error(e)) => Err(e),
        }
    })
    .await
}

/// Applies `ops` atomically with one `multi`.
pub(super) async fn txn(s: &Inner, ops: &[TxnOp], max_ops: usize) -> Result<TxnResult> {
    const OP: &str = "store txn";
    check_txn(ops, max_ops)?;
    let c = s.client(OP)?;
    bounded(OP, &s.url, async {
        'attempt: for _ in 0..RETRIES {
            let mut stats = Vec::with_capacity(ops.len());
            for o in ops {
                stats.push(stat(s, &c, OP, &node(o.key())).await?);
            }
            let mut zops = Vec::new();
            let mut owner = Vec::new();
            let mut entries = Vec::new();
            for (i, (o, st)) in ops.iter().zip(&stats).enumerate() {
                let value_st = st.as_ref().filter(|st| holds_value(st));
                let found = value_st.map(version);
                let before = zops.len();
                match o {
                    TxnOp::Create { key, value } => {
                        if found.is_some() {
                            return Err(exists_error(OP, key));
                        }
                        zops.extend(write_ops(&c, key, value, st.as_ref(), false)?);
                        entries.push(Entry::Put {
                            key: key.clone(),
                            value: value.clone(),
                        });
                    }
                    TxnOp::Put { key, value } => {
                        zops.extend(write_ops(&c, key, value, st.as_ref(), false)?);
                        entries.push(Entry::Put {
                            key: key.clone(),
                            value: value.clone(),
                        });
                    }
                    TxnOp::Update {
                        key,
                        value,
                        version: v,
                    } => {
                        if found != Some(*v) {
                            return Err(conflict_error(OP, key, Some(*v), found));
                        }
                        zops.extend(write_ops(&c, key, value, st.as_ref(), false)?);
                        entries.push(Entry::Put {
                            key: key.clone(),
                            value: value.clone(),
                        });
                    }
                    TxnOp::Delete { key } => {
                        if let Some(st) = value_st {
                            zops.extend(delete_ops(key, st));
                            entries.push(Entry::Delete { key: key.clone() });
                        }
                    }
                    TxnOp::DeleteIf { key, version: v } => {
                        let Some(st) = value_st.filter(|_| found == Some(*v)) else {
                            return Err(conflict_error(OP, key, Some(*v), found));
                        };
                        zops.extend(delete_ops(key, st));
                        entries.push(Entry::Delete { key: key.clone() });
                    }
                    TxnOp::Check { key, version: want } => {
                        if found != *want {
                            return Err(conflict_error(OP, key, *want, found));
                        }
                        match st {
                            Some(st) => zops.push(ZOp::Check {
                                path: node(key),
                                version: st.version,
                            }),
                            None => {
                                // "Absent" cannot be checked inside a multi; an empty
                                // directory node can, by its dataVersion.
                                ensure_parents(s, &c, OP, &node(key)).await?;
                                let dir = CreateMode::Persistent.with_acls(acls(&s.url));
                                match c.create(&node(key), &[], &dir).await {
                                    Ok(_) | Err(zk::Error::NodeExists) => continue 'attempt,
                                    Err(e) => return Err(map_err(OP, &s.url, e)),
                                }
                            }
                        }
                    }
                }
                owner.extend(std::iter::repeat_n(i, zops.len() - before));
            }
            match commit(s, &c, OP, &entries, &zops).await {
                Ok(zxid) => {
                    let versions = ops
                        .iter()
                        .map(|o| {
                            s.life.disown(o.key());
                            match o {
                                TxnOp::Create { .. } | TxnOp::Put { .. } | TxnOp::Update { .. } => {
                                    Some(zxid)
                                }
                                _ => None,
                            }
                        })
                        .collect();
                    return Ok(TxnResult { versions });
                }
                Err(Failed::Raced {
                    error: zk::Error::NoNode,
                    index,
                }) if stats[owner[index]].is_none() => {
                    ensure_parents(s, &c, OP, &node(ops[owner[index]].key())).await?
                }
                // Re-read and re-check: a condition that no longer holds fails above, naming
                // its key; otherwise an unconditional op lost a race and the txn goes again.
                Err(Failed::Raced { .. }) => {}
                Err(Failed::Error(e)) => return Err(e),
            }
        }
        Err(Error::new(
            ErrorKind::Conflict,
            OP,
            format!("the keys kept changing; gave up after {RETRIES} tries"),
        ))
    })
    .await
}

/// The barrier of [`KvStore::sync`](crate::store::KvStore::sync): a write of the barrier node.
/// The leader commits it after every write acknowledged before it was sent, and this
/// session's later reads wait for it on whichever server the session is. It changes no key,
/// so a request that lost its connection is sent again within the deadline.
pub(super) async fn barrier(s: &Inner) -> Result<()> {
    const OP: &str = "store sync";
    let c = s.client(OP)?;
    bounded(OP, &s.url, async {
        loop {
            match c.set_data(BARRIER, &[], None).await {
                Ok(_) => return Ok(()),
                // A prefix made before the barrier existed, or the node deleted by hand.
                Err(zk::Error::NoNode) => {
                    let mode = CreateMode::Persistent.with_acls(acls(&s.url));
                    match c.create(BARRIER, &[], &mode).await {
                        Ok(_) | Err(zk::Error::NodeExists) => {}
                        Err(e) if super::read::lost(&e) => super::read::moving().await,
                        Err(e) => return Err(map_err(OP, &s.url, e)),
                    }
                }
                Err(e) if super::read::lost(&e) => super::read::moving().await,
                Err(e) => return Err(map_err(OP, &s.url, e)),
            }
        }
    })
    .await
}
