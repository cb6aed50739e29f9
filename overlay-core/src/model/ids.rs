//! Identifiers and small value types shared by every layer.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

macro_rules! hex_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name([u8; 32]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                $name(rand::random())
            }

            /// The 12-hex short form shown in tables (`docker network ls`).
            pub fn short(&self) -> String {
                hex::encode(&self.0[..6])
            }

            /// The raw 32 bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                parse_hex_id(s, $what).map($name)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

hex_id!(
    /// A network's cluster-wide id: 64 lowercase hex digits, random, the same on every host.
    NetworkId,
    "network id"
);
hex_id!(
    /// An endpoint's id: 64 lowercase hex digits, random.
    EndpointId,
    "endpoint id"
);

fn parse_hex_id(s: &str, what: &str) -> Result<[u8; 32]> {
    let bad = |why: &str| {
        Error::invalid("parse id", format!("{what} {s:?} {why}"))
            .with_hint("an id is 64 lowercase hex digits, as printed by inspect")
    };
    if s.len() != 64 {
        return Err(bad(&format!("has {} characters, not 64", s.len())));
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(bad("has a character that is not lowercase hex"));
    }
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|e| bad(&e.to_string()))?;
    Ok(out)
}

/// Is `s` usable as one segment of a store key and as a DNS-like name part?
/// Letters, digits, `_`, `-` and `.`, starting with a letter or digit, at most `max` bytes.
pub(crate) fn is_plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A host's id in the cluster: a name chosen by the embedder (default: the hostname),
/// 1..=64 of letters, digits, `_`, `-`, `.`, starting with a letter or digit.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct HostId(String);

impl HostId {
    /// Validates and wraps a host id.
    pub fn new(s: impl Into<String>) -> Result<Self> {
        let s = s.into();
        if !is_plain_name(&s, 64) {
            return Err(
                Error::invalid("parse host id", format!("host id {s:?} is not valid")).with_hint(
                    "use 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit",
                ),
            );
        }
        Ok(HostId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostId({})", self.0)
    }
}

impl FromStr for HostId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        HostId::new(s)
    }
}

impl<'de> Deserialize<'de> for HostId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        HostId::new(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// A VXLAN network identifier, 1..=16,777,215 (24 bits; 0 is reserved).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Vni(u32);

impl Vni {
    /// The smallest valid VNI.
    pub const MIN: u32 = 1;
    /// The largest valid VNI (2^24 − 1).
    pub const MAX: u32 = 16_777_215;

    /// Validates a VNI.
    pub fn new(v: u32) -> Result<Self> {
        if (Self::MIN..=Self::MAX).contains(&v) {
            Ok(Vni(v))
        } else {
            Err(
                Error::invalid("parse vni", format!("VNI {v} is out of range"))
                    .with_hint("a VXLAN VNI is between 1 and 16777215"),
            )
        }
    }

    /// The numeric value.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl TryFrom<u32> for Vni {
    type Error = Error;

    fn try_from(v: u32) -> Result<Self> {
        Vni::new(v)
    }
}

impl From<Vni> for u32 {
    fn from(v: Vni) -> u32 {
        v.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Vni {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let v = s.trim().parse::<u32>().map_err(|e| {
            Error::invalid("parse vni", format!("VNI {s:?} is not a number: {e}"))
                .with_hint("a VXLAN VNI is between 1 and 16777215")
        })?;
        Vni::new(v)
    }
}

/// An Ethernet MAC address, displayed as `02:42:0a:00:00:03`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// Docker's scheme: `02:42:` followed by the four IPv4 bytes, so that a reused address
    /// always comes with the same MAC and never meets a stale neighbour entry.
    pub fn from_ipv4(ip: Ipv4Addr) -> Self {
        let o = ip.octets();
        MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
    }

    /// A stable locally administered unicast MAC derived from arbitrary bytes (used for
    /// IPv6-only endpoints): `02:42:` is avoided so it never collides with [`Self::from_ipv4`].
    pub fn from_hash(bytes: &[u8]) -> Self {
        // FNV-1a: stable across releases and platforms, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        let b = h.to_be_bytes();
        MacAddr([0x06, b[1], b[2], b[3], b[4], b[5]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::invalid("parse mac", format!("MAC address {s:?} is malformed"))
                .with_hint("write six hex pairs separated by ':', e.g. 02:42:0a:00:00:02")
        };
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for byte in &mut out {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *byte = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn ids_roundtrip_and_short_form() {
        let id = NetworkId::random();
        let s = id.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(id.short(), s[..12]);
        assert_eq!(s.parse::<NetworkId>().unwrap(), id);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<NetworkId>(&json).unwrap(), id);
        assert_ne!(NetworkId::random(), NetworkId::random());
    }

    #[test]
    fn ids_refuse_bad_text() {
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(65)] {
            let e = bad.parse::<EndpointId>().unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}");
            assert!(e.to_string().contains("endpoint id"), "{e}");
        }
    }

    #[test]
    fn vni_bounds() {
        assert!(Vni::new(0).is_err());
        assert_eq!(Vni::new(1).unwrap().get(), 1);
        assert_eq!(Vni::new(16_777_215).unwrap().get(), 16_777_215);
        let e = Vni::new(16_777_216).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(serde_json::from_str::<Vni>("0").is_err());
        assert!(serde_json::from_str::<Vni>("16777216").is_err());
        assert_eq!("4096".parse::<Vni>().unwrap().get(), 4096);
    }

    #[test]
    fn mac_docker_scheme() {
        let mac = MacAddr::from_ipv4(Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(mac.to_string(), "02:42:0a:00:00:03");
        assert_eq!("02:42:0a:00:00:03".parse::<MacAddr>().unwrap(), mac);
        assert!("02:42:0a:00:00".parse::<MacAddr>().is_err());
        assert!("02:42:0a:00:00:03:04".parse::<MacAddr>().is_err());
        let h = MacAddr::from_hash(b"abc");
        assert_eq!(h, MacAddr::from_hash(b"abc"));
        assert_eq!(h.0[0] & 0x03, 0x02, "locally administered unicast");
    }

    #[test]
    fn host_ids() {
        assert!(HostId::new("host-1.example").is_ok());
        for bad in ["", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert_eq!(
                HostId::new(bad).unwrap_err().kind(),
                ErrorKind::InvalidArgument
            );
        }
    }
}
