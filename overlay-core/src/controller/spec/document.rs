//! The JSON documents the faces outside Rust hand over (the C face, the JSON-lines protocol)
//! for [`ControllerOptions`], [`NetworkOptions`], [`ContainerSpec`] and the rest: their
//! shapes, and the conversions that check their values.
//!
//! Each shape mirrors its typed struct field for field (the typed struct documents the fields);
//! text stays text and numbers stay JSON numbers, so that reading a shape fails only on the
//! document's shape. Fields are private: a shape is only ever read from a document and
//! converted.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Number;

use super::{
    AddressPool, ContainerSpec, ControllerOptions, NetnsRef, NetworkOptions, SubnetOptions,
};
use crate::error::{Error, Result};
use crate::model::Vni;

/// A type callers may hand over as a JSON document: its [`Document`](Self::Document) is read
/// first, and only a document of that shape is converted (and its values checked) by `TryFrom`.
pub trait FromDocument: TryFrom<Self::Document, Error = Error> {
    /// The document's shape: the type's field names and JSON types, values as written.
    type Document: DeserializeOwned;
}

impl FromDocument for ControllerOptions {
    type Document = ControllerOptionsDoc;
}

impl FromDocument for AddressPool {
    type Document = AddressPoolDoc;
}

impl FromDocument for SubnetOptions {
    type Document = SubnetOptionsDoc;
}

impl FromDocument for NetworkOptions {
    type Document = NetworkOptionsDoc;
}

impl FromDocument for NetnsRef {
    type Document = NetnsRefDoc;
}

impl FromDocument for ContainerSpec {
    type Document = ContainerSpecDoc;
}

/// The shape of a [`ControllerOptions`] document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerOptionsDoc {
    store: String,
    advertise: String,
    host_id: Option<String>,
    host_netns: Option<PathBuf>,
    mtu: Option<Number>,
    vxlan_port: Number,
    default_pools: Option<Vec<AddressPoolDoc>>,
    sticky_grace: Number,
    host_ttl: Number,
    reclaim_grace: Number,
    gateway_pool: Option<String>,
    gateway_bridge: Option<String>,
    dns: bool,
    dns_upstreams: Option<Vec<String>>,
    state_dir: Option<PathBuf>,
}

impl Default for ControllerOptionsDoc {
    fn default() -> Self {
        let d = ControllerOptions::default();
        let ms = |d: Duration| Number::from(u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ControllerOptionsDoc {
            store: d.store,
            advertise: d.advertise,
            host_id: None,
            host_netns: None,
            mtu: None,
            vxlan_port: d.vxlan_port.into(),
            default_pools: None,
            sticky_grace: ms(d.sticky_grace),
            host_ttl: ms(d.host_ttl),
            reclaim_grace: ms(d.reclaim_grace),
            gateway_pool: None,
            gateway_bridge: None,
            dns: d.dns,
            dns_upstreams: None,
            state_dir: None,
        }
    }
}

/// The shape of an [`AddressPool`] document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddressPoolDoc {
    base: String,
    size: Number,
}

/// The shape of a [`SubnetOptions`] document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetOptionsDoc {
    subnet: String,
    #[serde(default)]
    gateway: Option<String>,
    #[serde(default)]
    ip_range: Option<String>,
    #[serde(default)]
    aux_addresses: BTreeMap<String, String>,
}

/// The shape of a [`NetworkOptions`] document.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkOptionsDoc {
    subnets: Vec<SubnetOptionsDoc>,
    ipv6: bool,
    vni: Option<Number>,
    labels: BTreeMap<String, String>,
    internal: bool,
    mtu: Option<Number>,
}

/// The shape of a [`NetnsRef`] document: `{"path": "..."}` or `{"pid": 1234}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NetnsRefDoc {
    /// [`NetnsRef::Path`]
    Path(PathBuf),
    /// [`NetnsRef::Pid`]
    Pid(Number),
}

/// The shape of a [`ContainerSpec`] document.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpecDoc {
    id: String,
    name: String,
    netns: NetnsRefDoc,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    sticky: bool,
    #[serde(default)]
    hosts_file: Option<PathBuf>,
    #[serde(default)]
    resolv_conf: Option<PathBuf>,
    #[serde(default)]
    ifname: Option<String>,
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    owner: Option<String>,
}

// The conversions. `at` is the path of the enclosing object in the document (`subnets[1].`),
// so an error names the field as the caller wrote it.

const OPEN: &str = "open controller";
const CREATE: &str = "create network";
const CONNECT: &str = "connect";

fn address_pool(op: &'static str, at: &str, d: &AddressPoolDoc) -> Result<AddressPool> {
    Ok(AddressPool {
        base: parse_text(op, &format!("{at}base"), &d.base)?,
        size: json_whole(op, &format!("{at}size"), &d.size, 0..=u8::MAX)?,
    })
}

fn subnet_options(op: &'static str, at: &str, d: SubnetOptionsDoc) -> Result<SubnetOptions> {
    Ok(SubnetOptions {
        subnet: parse_text(op, &format!("{at}subnet"), &d.subnet)?,
        gateway: optional_text(op, &format!("{at}gateway"), d.gateway)?,
        ip_range: optional_text(op, &format!("{at}ip_range"), d.ip_range)?,
        aux_addresses: d
            .aux_addresses
            .into_iter()
            .map(|(name, ip)| {
                let address = parse_text(op, &format!("{at}aux_addresses.{name}"), &ip)?;
                Ok((name, address))
            })
            .collect::<Result<_>>()?,
    })
}

fn netns_ref(op: &'static str, at: &str, d: NetnsRefDoc) -> Result<NetnsRef> {
    Ok(match d {
        NetnsRefDoc::Path(path) => NetnsRef::Path(path),
        NetnsRefDoc::Pid(pid) => {
            NetnsRef::Pid(json_whole(op, &format!("{at}pid"), &pid, 0..=u32::MAX)?)
        }
    })
}

impl TryFrom<ControllerOptionsDoc> for ControllerOptions {
    type Error = Error;

    fn try_from(d: ControllerOptionsDoc) -> Result<Self> {
        let ms = |field: &str, n: &Number| {
            json_whole(OPEN, field, n, 0..=u64::MAX).map(Duration::from_millis)
        };
        let default_pools = d.default_pools.map(|pools| {
            pools
                .iter()
                .enumerate()
                .map(|(i, p)| address_pool(OPEN, &format!("default_pools[{i}]."), p))
                .collect::<Result<Vec<_>>>()
        });
        Ok(ControllerOptions {
            store: d.store,
            advertise: d.advertise,
            host_id: d.host_id,
            host_netns: d.host_netns,
            mtu: d
                .mtu
                .map(|n| json_whole(OPEN, "mtu", &n, 0..=u32::MAX))
                .transpose()?,
            vxlan_port: json_whole(OPEN, "vxlan_port", &d.vxlan_port, 0..=u16::MAX)?,
            default_pools: default_pools.transpose()?,
            sticky_grace: ms("sticky_grace", &d.sticky_grace)?,
            host_ttl: ms("host_ttl", &d.host_ttl)?,
            reclaim_grace: ms("reclaim_grace", &d.reclaim_grace)?,
            gateway_pool: optional_text(OPEN, "gateway_pool", d.gateway_pool)?,
            gateway_bridge: d.gateway_bridge,
            dns: d.dns,
            dns_upstreams: d
                .dns_upstreams
                .map(|list| {
                    list.iter()
                        .enumerate()
                        .map(|(i, t)| dns_upstream(&format!("dns_upstreams[{i}]"), t))
                        .collect::<Result<Vec<_>>>()
                })
                .transpose()?,
            state_dir: d.state_dir,
        })
    }
}

impl TryFrom<AddressPoolDoc> for AddressPool {
    type Error = Error;

    fn try_from(d: AddressPoolDoc) -> Result<Self> {
        address_pool(OPEN, "", &d)
    }
}

impl TryFrom<SubnetOptionsDoc> for SubnetOptions {
    type Error = Error;

    fn try_from(d: SubnetOptionsDoc) -> Result<Self> {
        subnet_options(CREATE, "", d)
    }
}

impl TryFrom<NetworkOptionsDoc> for NetworkOptions {
    type Error = Error;

    fn try_from(d: NetworkOptionsDoc) -> Result<Self> {
        Ok(NetworkOptions {
            subnets: d
                .subnets
                .into_iter()
                .enumerate()
                .map(|(i, s)| subnet_options(CREATE, &format!("subnets[{i}]."), s))
                .collect::<Result<_>>()?,
            ipv6: d.ipv6,
            vni: d
                .vni
                .map(|n| json_whole(CREATE, "vni", &n, Vni::MIN..=Vni::MAX))
                .transpose()?,
            labels: d.labels,
            internal: d.internal,
            mtu: d
                .mtu
                .map(|n| json_whole(CREATE, "mtu", &n, 0..=u32::MAX))
                .transpose()?,
        })
    }
}

impl TryFrom<NetnsRefDoc> for NetnsRef {
    type Error = Error;

    fn try_from(d: NetnsRefDoc) -> Result<Self> {
        netns_ref(CONNECT, "", d)
    }
}

impl TryFrom<ContainerSpecDoc> for ContainerSpec {
    type Error = Error;

    fn try_from(d: ContainerSpecDoc) -> Result<Self> {
        Ok(ContainerSpec {
            id: d.id,
            name: d.name,
            netns: netns_ref(CONNECT, "netns.", d.netns)?,
            aliases: d.aliases,
            ipv4: optional_text(CONNECT, "ipv4", d.ipv4)?,
            ipv6: optional_text(CONNECT, "ipv6", d.ipv6)?,
            sticky: d.sticky,
            hosts_file: d.hosts_file,
            resolv_conf: d.resolv_conf,
            ifname: d.ifname,
            publish: d.publish.iter().map(|p| p.parse()).collect::<Result<_>>()?,
            owner: d.owner,
        })
    }
}

/// A value callers write as text: an address or a subnet.
pub trait TextValue: FromStr<Err: std::error::Error + Send + Sync + 'static> {
    /// What it is, for messages: "subnet".
    const WHAT: &'static str;
    /// How to write one, the hint of the error.
    const HOW: &'static str;
}

impl TextValue for IpNet {
    const WHAT: &'static str = "subnet";
    const HOW: &'static str = "write a subnet as ADDRESS/PREFIX, e.g. 10.0.9.0/24 or fd00:1::/64";
}

impl TextValue for IpAddr {
    const WHAT: &'static str = "IP address";
    const HOW: &'static str = "write an IPv4 or IPv6 address, e.g. 10.0.9.2 or fd00:1::2";
}

impl TextValue for ipnet::Ipv4Net {
    const WHAT: &'static str = "IPv4 subnet";
    const HOW: &'static str = "write an IPv4 subnet as ADDRESS/PREFIX, e.g. 172.18.0.0/16";
}

impl TextValue for Ipv4Addr {
    const WHAT: &'static str = "IPv4 address";
    const HOW: &'static str = "write four numbers from 0 to 255, e.g. 10.0.9.2";
}

impl TextValue for Ipv6Addr {
    const WHAT: &'static str = "IPv6 address";
    const HOW: &'static str = "write an IPv6 address, e.g. fd00:1::2";
}

/// Parses the text of one field; a bad value is an InvalidArgument error of `op` naming
/// `field` (as the caller wrote it: `subnets[0].gateway`, or a keyword argument) and the value.
pub fn parse_text<T: TextValue>(op: &'static str, field: &str, text: &str) -> Result<T> {
    text.parse().map_err(|e| {
        Error::invalid(op, format!("{field} {text:?} is not a valid {}", T::WHAT))
            .with_hint(T::HOW)
            .with_source(e)
    })
}

/// An upstream resolver written as `IP` (port 53) or `IP:PORT` (`[IPv6]:PORT`), given for
/// `field` (named in the error).
pub fn dns_upstream(field: &str, text: &str) -> Result<std::net::SocketAddr> {
    if let Ok(a) = text.parse() {
        return Ok(a);
    }
    match text.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(std::net::SocketAddr::new(ip, crate::dns::PORT)),
        Err(_) => Err(Error::invalid(
            OPEN,
            format!("{field} = {text:?} is not a resolver address"),
        )
        .with_hint("write IP or IP:PORT, such as 192.0.2.53 or [2001:db8::53]:5353")),
    }
}

fn optional_text<T: TextValue>(
    op: &'static str,
    field: &str,
    text: Option<String>,
) -> Result<Option<T>> {
    text.map(|t| parse_text(op, field, &t)).transpose()
}

/// Checks a whole number given for `field` against `range` (the field's type, or a narrower
/// rule such as the VNI's), as [`parse_text`] does for text.
pub fn whole_number<T>(
    op: &'static str,
    field: &str,
    value: i128,
    range: RangeInclusive<T>,
) -> Result<T>
where
    T: TryFrom<i128> + PartialOrd + Display,
{
    in_range(value, &range).ok_or_else(|| out_of_range(op, field, value, &range))
}

fn in_range<T: TryFrom<i128> + PartialOrd>(value: i128, range: &RangeInclusive<T>) -> Option<T> {
    T::try_from(value).ok().filter(|v| range.contains(v))
}

/// The error for a number outside `range`; `shown` is the value as the caller wrote it (for
/// callers whose numbers do not fit an `i128`).
pub fn out_of_range<T: Display>(
    op: &'static str,
    field: &str,
    shown: impl Display,
    range: &RangeInclusive<T>,
) -> Error {
    Error::invalid(op, format!("{field} {shown} is out of range")).with_hint(whole_hint(range))
}

fn whole_hint<T: Display>(range: &RangeInclusive<T>) -> String {
    format!(
        "use a whole number from {} to {}",
        range.start(),
        range.end()
    )
}

/// A JSON number for `field`, which must be whole and within `range`.
fn json_whole<T>(op: &'static str, field: &str, n: &Number, range: RangeInclusive<T>) -> Result<T>
where
    T: TryFrom<i128> + PartialOrd + Display,
{
    let whole = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from));
    // JSON has one number type: `24.0` is the whole number 24, and serde_json reads an integer
    // too large for a u64 as a float. `as` saturates beyond i128, far outside every range here.
    let whole = whole.or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i128));
    match whole {
        Some(v) => in_range(v, &range).ok_or_else(|| out_of_range(op, field, n, &range)),
        None => Err(
            Error::invalid(op, format!("{field} {n} is not a whole number"))
                .with_hint(whole_hint(&range)),
        ),
    }
}
