//! How keys, values and the change journal are laid out in ZooKeeper.
//!
//! Below the chroot (the URL prefix, created if missing):
//!
//! ```text
//! /kv/<key>        a key's node. Data: the byte 'v' followed by the value. A node with empty
//!                  data is only a parent of deeper keys (a "directory"), not a key: ZooKeeper
//!                  nodes have both data and children, and keys "a" and "a/b" may both exist.
//! /log/e-<seq>     the journal: one persistent-sequential node per written key, created in
//!                  the same `multi` as the write, holding the operation, key and value.
//!                  Its czxid is the write's zxid.
//! /log (data)      the zxid up to which old journal entries were pruned.
//! /barrier         written (data: nothing) by [`KvStore::sync`](crate::store::KvStore::sync):
//!                  a write the leader orders behind every earlier commit, so the reads
//!                  that follow it on this session see them. Not a key; no journal entry.
//! ```
//!
//! A key's version is the `mzxid` of its node: ZooKeeper's global, monotonic transaction id,
//! the same whether read by get, list or a watch (which reads the journal entry's czxid, the
//! same zxid). Compare-and-swap maps the version to the node's `dataVersion` read together with
//! it and writes with that `dataVersion`, so a write in between makes it fail. ZooKeeper 3.8
//! notifications carry no zxid and no data; the journal is what lets a watch report every
//! change with its value and version, in order, and replay from a version.

use zookeeper_client::Stat;

use crate::store::Version;

/// First data byte of a node that holds a value.
pub(super) const VALUE_MARK: u8 = b'v';
/// Directory of the key nodes, below the chroot.
pub(super) const KV: &str = "/kv";
/// The journal node, below the chroot.
pub(super) const LOG: &str = "/log";
/// The node [`KvStore::sync`](crate::store::KvStore::sync) writes, below the chroot.
pub(super) const BARRIER: &str = "/barrier";
/// Name prefix of journal entries.
pub(super) const ENTRY: &str = "/log/e-";

/// The node path of `key` (validated) or of a list/watch prefix (`""`: every key).
pub(super) fn node(key: &str) -> String {
    if key.is_empty() {
        KV.to_string()
    } else {
        format!("{KV}/{key}")
    }
}

/// The key of a node path below [`KV`].
pub(super) fn key_of(path: &str) -> Option<&str> {
    path.strip_prefix(KV)?.strip_prefix('/')
}

/// The node's data for `value`.
pub(super) fn encode_value(value: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(value.len() + 1);
    data.push(VALUE_MARK);
    data.extend_from_slice(value);
    data
}

/// The value a node holds, or `None` for a directory node.
pub(super) fn decode_value(data: &[u8]) -> Option<&[u8]> {
    match data.split_first() {
        Some((&VALUE_MARK, value)) => Some(value),
        _ => None,
    }
}

/// Whether a node holds a value, from its stat alone (directories have no data).
pub(super) fn holds_value(stat: &Stat) -> bool {
    stat.data_length > 0
}

/// The version of a value node.
pub(super) fn version(stat: &Stat) -> Version {
    stat.mzxid as Version
}

/// One journal entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Entry {
    /// `key` now holds `value`.
    Put { key: String, value: Vec<u8> },
    /// `key` was deleted.
    Delete { key: String },
}

impl Entry {
    pub(super) fn key(&self) -> &str {
        match self {
            Entry::Put { key, .. } | Entry::Delete { key } => key,
        }
    }

    /// `P|D`, the key length as 2 bytes big-endian, the key, then the value.
    pub(super) fn encode(&self) -> Vec<u8> {
        let (tag, key, value): (u8, &str, &[u8]) = match self {
            Entry::Put { key, value } => (b'P', key, value),
            Entry::Delete { key } => (b'D', key, &[]),
        };
        let mut out = Vec::with_capacity(3 + key.len() + value.len());
        out.push(tag);
        out.extend_from_slice(&(key.len() as u16).to_be_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(value);
        out
    }

    /// Decodes an entry; `None` for bytes this version did not write.
    pub(super) fn decode(data: &[u8]) -> Option<Entry> {
        let (&tag, rest) = data.split_first()?;
        let len = u16::from_be_bytes([*rest.first()?, *rest.get(1)?]) as usize;
        let key = std::str::from_utf8(rest.get(2..2 + len)?).ok()?.to_string();
        let value = rest.get(2 + len..)?.to_vec();
        match tag {
            b'P' => Some(Entry::Put { key, value }),
            b'D' if value.is_empty() => Some(Entry::Delete { key }),
            _ => None,
        }
    }
}

/// The sequence number of a journal entry's name (`e-0000000042` → 42).
pub(super) fn entry_seq(name: &str) -> Option<i64> {
    name.strip_prefix("e-")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        for e in [
            Entry::Put {
                key: "a/b".into(),
                value: b"xyz".to_vec(),
            },
            Entry::Put {
                key: "k".into(),
                value: vec![],
            },
            Entry::Delete {
                key: "networks/abc".into(),
            },
        ] {
            assert_eq!(Entry::decode(&e.encode()), Some(e));
        }
        assert_eq!(Entry::decode(b""), None);
        assert_eq!(Entry::decode(b"P\x00\x09ab"), None);
        assert_eq!(Entry::decode(b"X\x00\x01a"), None);
    }

    #[test]
    fn values_and_directories() {
        assert_eq!(decode_value(&encode_value(b"")), Some(&b""[..]));
        assert_eq!(decode_value(&encode_value(b"vv")), Some(&b"vv"[..]));
        assert_eq!(decode_value(b""), None);
        assert_eq!(node(""), "/kv");
        assert_eq!(node("a/b"), "/kv/a/b");
        assert_eq!(key_of("/kv/a/b"), Some("a/b"));
        assert_eq!(key_of("/kvx"), None);
        assert_eq!(entry_seq("e-0000000042"), Some(42));
    }
}
