//! The nf_tables expressions the gateway rules are made of. A match is a load into register 1
//! and a comparison; the kernel runs a rule's expressions in order and stops at the first that
//! fails.
//!
//! `netlink-packet-netfilter` has typed payload, meta, bitwise, cmp and immediate expressions;
//! `nat`, `masq` and `fib` are not among them and are built here from their attributes
//! (`include/uapi/linux/netfilter/nf_tables.h`).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::DefaultNla;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, ExpressionAttribute, Expressions, Immediate, ListAttribute, Meta,
    MetaKey, Operator, Payload, Register,
};

/// One expression of a rule, ready for a rule message.
pub(super) type Expr = ListAttribute<ExpressionAttribute>;

/// Payload bases.
const NETWORK_HEADER: u32 = 1;
const TRANSPORT_HEADER: u32 = 2;

/// The interface-name length the kernel compares (IFNAMSIZ).
const IFNAMSIZ: usize = 16;

fn value(bytes: impl Into<Vec<u8>>) -> DataAttribute {
    DataAttribute::Value(bytes.into())
}

fn cmp(op: Operator, bytes: impl Into<Vec<u8>>) -> Expr {
    Expressions::Cmp(vec![
        Cmp::SourceRegister(Register::Reg1),
        Cmp::Op(op),
        Cmp::Data(value(bytes)),
    ])
    .into()
}

fn load_payload(base: u32, offset: u32, len: u32) -> Expr {
    Expressions::Payload(vec![
        Payload::DestinationRegister(Register::Reg1),
        Payload::Base(base),
        Payload::Offset(offset),
        Payload::Len(len),
    ])
    .into()
}

fn load_meta(key: MetaKey) -> Expr {
    Expressions::Meta(vec![
        Meta::DestinationRegister(Register::Reg1),
        Meta::Key(key),
    ])
    .into()
}

/// An interface name as the kernel compares it: NUL-padded to IFNAMSIZ.
fn ifname(name: &str) -> Vec<u8> {
    let mut b = name.as_bytes().to_vec();
    b.resize(IFNAMSIZ, 0);
    b
}

/// A big-endian u32 attribute of a hand-built expression.
fn be32(kind: u16, v: u32) -> DefaultNla {
    DefaultNla::new(kind, v.to_be_bytes().to_vec())
}

/// `ip saddr NET`: the source address, masked to the prefix, equals the network.
pub(super) fn ip_saddr_in(net: Ipv4Net) -> Vec<Expr> {
    ip_addr_in(12, net)
}

/// `ip daddr ADDR`.
pub(super) fn ip_daddr_is(addr: Ipv4Addr) -> Vec<Expr> {
    vec![
        load_payload(NETWORK_HEADER, 16, 4),
        cmp(Operator::Equal, addr.octets()),
    ]
}

fn ip_addr_in(offset: u32, net: Ipv4Net) -> Vec<Expr> {
    let bitwise = Expressions::Bitwise(vec![
        Bitwise::SourceRegister(Register::Reg1),
        Bitwise::DestinationRegister(Register::Reg1),
        Bitwise::Length(4),
        Bitwise::Mask(value(net.netmask().octets())),
        Bitwise::Xor(value([0u8; 4])),
    ])
    .into();
    vec![
        load_payload(NETWORK_HEADER, offset, 4),
        bitwise,
        cmp(Operator::Equal, net.network().octets()),
    ]
}

/// `oifname NAME` (`equal`) or `oifname != NAME`.
pub(super) fn oifname(name: &str, equal: bool) -> Vec<Expr> {
    vec![load_meta(MetaKey::Oifname), cmp(op(equal), ifname(name))]
}

fn op(equal: bool) -> Operator {
    if equal {
        Operator::Equal
    } else {
        Operator::NotEqual
    }
}

/// `meta l4proto PROTO th dport PORT`.
pub(super) fn dport(proto: u8, port: u16) -> Vec<Expr> {
    vec![
        load_meta(MetaKey::L4Proto),
        cmp(Operator::Equal, [proto]),
        load_payload(TRANSPORT_HEADER, 2, 2),
        cmp(Operator::Equal, port.to_be_bytes()),
    ]
}

/// `fib daddr type local`: the destination is one of this namespace's own addresses.
pub(super) fn daddr_is_local() -> Vec<Expr> {
    const NFTA_FIB_DREG: u16 = 1;
    const NFTA_FIB_RESULT: u16 = 2;
    const NFTA_FIB_FLAGS: u16 = 3;
    const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
    const NFTA_FIB_F_DADDR: u32 = 1 << 1;
    const RTN_LOCAL: u32 = 2;
    let fib = Expressions::Other {
        expression_type: "fib".into(),
        attributes: vec![
            be32(NFTA_FIB_DREG, Register::Reg1.into()),
            be32(NFTA_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE),
            be32(NFTA_FIB_FLAGS, NFTA_FIB_F_DADDR),
        ],
    }
    .into();
    // The address type is stored in host order.
    vec![fib, cmp(Operator::Equal, RTN_LOCAL.to_ne_bytes())]
}

/// `masquerade`: source NAT to the outgoing interface's address.
pub(super) fn masquerade() -> Expr {
    Expressions::Other {
        expression_type: "masq".into(),
        attributes: vec![],
    }
    .into()
}

/// `dnat to ADDR:PORT`: the address into register 1, the port into register 2, then nat.
pub(super) fn dnat(addr: Ipv4Addr, port: u16) -> Vec<Expr> {
    const NFTA_NAT_TYPE: u16 = 1;
    const NFTA_NAT_FAMILY: u16 = 2;
    const NFTA_NAT_REG_ADDR_MIN: u16 = 3;
    const NFTA_NAT_REG_PROTO_MIN: u16 = 5;
    const NFT_NAT_DNAT: u32 = 1;
    const NFPROTO_IPV4: u32 = 2;
    let load = |reg: Register, bytes: Vec<u8>| -> Expr {
        Expressions::Immediate(vec![
            Immediate::DestinationRegister(reg),
            Immediate::Data(value(bytes)),
        ])
        .into()
    };
    let nat = Expressions::Other {
        expression_type: "nat".into(),
        attributes: vec![
            be32(NFTA_NAT_TYPE, NFT_NAT_DNAT),
            be32(NFTA_NAT_FAMILY, NFPROTO_IPV4),
            be32(NFTA_NAT_REG_ADDR_MIN, Register::Reg1.into()),
            be32(NFTA_NAT_REG_PROTO_MIN, Register::Reg2.into()),
        ],
    }
    .into();
    vec![
        load(Register::Reg1, addr.octets().to_vec()),
        load(Register::Reg2, port.to_be_bytes().to_vec()),
        nat,
    ]
}
