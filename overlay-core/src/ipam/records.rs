//! What the IPAM keeps in the store, and under which keys (see the layout in the module docs).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::pool::Family;
use crate::error::{Error, ErrorKind, Result};
use crate::model::{NetworkId, PoolConfig, SCHEMA};

/// Key of the registry of every pool of every network.
pub(crate) const REGISTRY_KEY: &str = "ipam/registry";
/// Prefix of the per-network pool records.
pub(crate) const NETWORKS_PREFIX: &str = "ipam/networks/";
/// Prefix of the blocks.
pub(crate) const BLOCKS_PREFIX: &str = "ipam/blocks/";
/// Prefix of the sticky reservation index.
pub(crate) const STICKY_PREFIX: &str = "ipam/sticky/";

pub(crate) fn network_key(net: &NetworkId) -> String {
    format!("{NETWORKS_PREFIX}{net}")
}

pub(crate) fn blocks_prefix(net: &NetworkId, pool_id: &str) -> String {
    format!("{BLOCKS_PREFIX}{net}/{pool_id}/")
}

pub(crate) fn block_key(net: &NetworkId, pool_id: &str, index: u64) -> String {
    format!("{BLOCKS_PREFIX}{net}/{pool_id}/{index}")
}

pub(crate) fn sticky_key(net: &NetworkId, family: Family, key: &str) -> String {
    format!("{STICKY_PREFIX}{net}/{}/{key}", family.as_str())
}

/// Milliseconds since the Unix epoch, by this host's clock.
pub(crate) fn now_ms() -> u64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn schema() -> u32 {
    SCHEMA
}

/// One pool in the registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RegisteredPool {
    pub(crate) network: NetworkId,
    /// The network's name, for messages.
    pub(crate) name: String,
    pub(crate) subnet: IpNet,
}

/// `ipam/registry`: every claimed subnet. Written only by compare-and-swap, so two networks
/// can never claim overlapping subnets, however they race.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Registry {
    #[serde(default = "schema")]
    pub(crate) schema: u32,
    pub(crate) pools: Vec<RegisteredPool>,
}

/// `ipam/networks/<net>`: a network's pools, immutable while the network has them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NetworkPools {
    #[serde(default = "schema")]
    pub(crate) schema: u32,
    pub(crate) network: NetworkId,
    pub(crate) name: String,
    pub(crate) pools: Vec<PoolConfig>,
}

/// One address of a block that is not free. Field names are one letter: a full block is
/// rewritten by every allocation in it, so its size is paid on every round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "s")]
pub(crate) enum Entry {
    /// Handed out to `owner`.
    #[serde(rename = "h")]
    Held {
        #[serde(rename = "o")]
        owner: String,
        /// When it was handed out (ms since the epoch), for the collector's grace.
        #[serde(rename = "t")]
        since_ms: u64,
        /// The sticky key it is reserved under, if any.
        #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
        sticky: Option<String>,
    },
    /// Released, but kept for sticky key `key` until `until_ms`.
    #[serde(rename = "r")]
    Reserved {
        #[serde(rename = "k")]
        key: String,
        #[serde(rename = "u")]
        until_ms: u64,
    },
}

impl Entry {
    /// Whether an allocation for someone else may take this address at `now`: an expired
    /// reservation may be taken (its index key is deleted in the same write).
    pub(crate) fn expired_reservation(&self, now: u64) -> Option<&str> {
        match self {
            Entry::Reserved { key, until_ms } if *until_ms <= now => Some(key),
            _ => None,
        }
    }
}

/// `ipam/blocks/<net>/<pool>/<index>`: a block of a pool, claimed by one host (its affinity)
/// but writable by anyone through compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Block {
    #[serde(default = "schema")]
    pub(crate) schema: u32,
    /// The host that claimed the block; it allocates here first.
    pub(crate) host: String,
    /// Inner offset of the most recent dynamic allocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cursor: Option<u64>,
    /// Inner offset → entry, for every address that is not free.
    #[serde(default)]
    pub(crate) entries: BTreeMap<u64, Entry>,
}

impl Block {
    pub(crate) fn new(host: &str) -> Block {
        Block {
            schema: SCHEMA,
            host: host.to_string(),
            cursor: None,
            entries: BTreeMap::new(),
        }
    }
}

/// `ipam/sticky/<net>/<v4|v6>/<key>`: the address reserved under a sticky key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StickyIndex {
    #[serde(default = "schema")]
    pub(crate) schema: u32,
    pub(crate) ip: IpAddr,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // These shapes hold only strings, numbers, maps and addresses: serialising cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

pub(crate) fn decode<T: DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T> {
    let bad = |why: String| {
        Error::new(
            ErrorKind::Internal,
            "decode ipam record",
            format!("the value at key {key:?} {why}"),
        )
        .with_hint(
            "the IPAM state was written by another program or version; inspect the key, \
                 and delete it if it is stale",
        )
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("is not valid JSON: {e}")))?;
    match value.get("schema").and_then(serde_json::Value::as_u64) {
        Some(v) if v > u64::from(SCHEMA) => {
            return Err(bad(format!("was written by a newer schema ({v})"))
                .with_hint("upgrade overlay on this host"));
        }
        Some(_) => {}
        None => return Err(bad("has no numeric \"schema\" field".into())),
    }
    serde_json::from_value(value).map_err(|e| bad(format!("is malformed: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_roundtrip_and_corrupt_values() {
        let mut b = Block::new("h1");
        b.cursor = Some(3);
        b.entries.insert(
            3,
            Entry::Held {
                owner: "o".into(),
                since_ms: 5,
                sticky: Some("web".into()),
            },
        );
        b.entries.insert(
            4,
            Entry::Reserved {
                key: "db".into(),
                until_ms: 9,
            },
        );
        let back: Block = decode("k", &encode(&b)).unwrap();
        assert_eq!(back, b);
        let e = decode::<Block>("ipam/blocks/x", b"{").unwrap_err();
        assert!(e.to_string().contains("ipam/blocks/x"), "{e}");
        let e = decode::<Block>("k", br#"{"schema":99,"host":"h"}"#).unwrap_err();
        assert!(e.to_string().contains("newer schema"), "{e}");
    }
}
