//! The gateway's firewall: nftables rules in one table of this host's own, programmed over
//! netlink (`netlink-packet-netfilter`'s nf_tables messages; never `nft` or `iptables`).
//!
//! The whole table is the unit: [`apply`] replaces it in one transaction (add, delete, add again
//! with every chain and rule), so that whatever a crashed agent or an older version left in it
//! converges to exactly what is asked, nothing else is touched, and no packet ever sees half a
//! ruleset. Other tables (Docker's, the distribution's) are never read, flushed or reordered.
//!
//! What a table holds:
//! - `postrouting` (nat, srcnat priority): the gateway pool's traffic leaving through any
//!   interface but the gateway bridge is masqueraded, as `docker_gwbridge`'s is;
//! - `prerouting` and `output` (nat, dstnat priority): each published port is DNAT to its
//!   container's gateway address, for packets addressed to this host (one of its addresses, or
//!   the address the port was published on).

mod batch;
mod expr;

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use netlink_packet_core::{NLM_F_APPEND, NLM_F_CREATE};
use netlink_packet_netfilter::NetfilterProtoFamily;
use netlink_packet_netfilter::nftables::{
    ChainAttribute, ChainMessage, Hook, HookNumber, InetHookNumber, NfTablesMessage, RuleAttribute,
    RuleMessage, TableAttribute, TableMessage,
};

use self::batch::Op;
use self::expr::Expr;
use super::errors::nl_failure;
use super::netns::{Netns, run_on_thread};
use super::sandbox::blocking;
use crate::error::Result;
use crate::model::PortProto;

/// One published port: `[host_ip:]host_port:container_port/proto` to a container's gateway
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PublishedPort {
    /// The protocol.
    pub proto: PortProto,
    /// The host address it is published on; `None`: every address of the host.
    pub host_ip: Option<Ipv4Addr>,
    /// The host's port.
    pub host_port: u16,
    /// The container's address on the gateway bridge.
    pub container_ip: Ipv4Addr,
    /// The container's port.
    pub container_port: u16,
}

/// Everything one host's gateway table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GatewayRules {
    /// The table's name (family `ip`).
    pub(crate) table: String,
    /// The gateway bridge.
    pub(crate) bridge: String,
    /// The gateway bridge's pool.
    pub(crate) pool: Ipv4Net,
    /// The published ports.
    pub(crate) ports: Vec<PublishedPort>,
}

const SRCNAT: i32 = 100;
const DSTNAT: i32 = -100;

fn table_op(message: NfTablesMessage, flags: u16) -> Op {
    Op {
        family: NetfilterProtoFamily::IPv4,
        message,
        flags,
    }
}

fn table(name: &str) -> TableMessage {
    TableMessage {
        attributes: vec![TableAttribute::Name(name.to_string())],
    }
}

fn nat_chain(table: &str, name: &str, hook: InetHookNumber, priority: i32) -> Op {
    table_op(
        NfTablesMessage::NewChain(ChainMessage {
            attributes: vec![
                ChainAttribute::Table(table.to_string()),
                ChainAttribute::Name(name.to_string()),
                ChainAttribute::Hook(vec![
                    Hook::Number(HookNumber::Inet(hook)),
                    // The kernel reads the priority as a signed 32-bit number.
                    Hook::Priority(priority as u32),
                ]),
                ChainAttribute::Type("nat".to_string()),
            ],
        }),
        NLM_F_CREATE,
    )
}

fn rule(table: &str, chain: &str, exprs: Vec<Expr>) -> Op {
    table_op(
        NfTablesMessage::NewRule(RuleMessage {
            attributes: vec![
                RuleAttribute::Table(table.to_string()),
                RuleAttribute::Chain(chain.to_string()),
                RuleAttribute::Expressions(exprs),
            ],
        }),
        NLM_F_CREATE | NLM_F_APPEND,
    )
}

/// The DNAT rule of `p` for one of the nat chains.
fn dnat_rule(table: &str, chain: &str, p: &PublishedPort) -> Op {
    let mut exprs = match p.host_ip {
        Some(ip) => expr::ip_daddr_is(ip),
        None => expr::daddr_is_local(),
    };
    exprs.extend(expr::dport(p.proto.number(), p.host_port));
    exprs.extend(expr::dnat(p.container_ip, p.container_port));
    rule(table, chain, exprs)
}

/// The transaction that makes the table exactly `r`: added (a no-op when it exists), deleted
/// with whatever it held, and made again.
fn replace_ops(r: &GatewayRules) -> Vec<Op> {
    let t = r.table.as_str();
    let mut ops = vec![
        table_op(NfTablesMessage::NewTable(table(t)), NLM_F_CREATE),
        table_op(NfTablesMessage::DeleteTable(table(t)), 0),
        table_op(NfTablesMessage::NewTable(table(t)), NLM_F_CREATE),
        nat_chain(t, "postrouting", InetHookNumber::PostRouting, SRCNAT),
        nat_chain(t, "prerouting", InetHookNumber::PreRouting, DSTNAT),
        nat_chain(t, "output", InetHookNumber::LocalOut, DSTNAT),
    ];
    let mut masq = expr::ip_saddr_in(r.pool);
    masq.extend(expr::oifname(&r.bridge, false));
    masq.push(expr::masquerade());
    ops.push(rule(t, "postrouting", masq));
    for p in &r.ports {
        ops.push(dnat_rule(t, "prerouting", p));
        ops.push(dnat_rule(t, "output", p));
    }
    ops
}

/// Runs one transaction in `ns` (the calling process's namespace when `None`).
async fn run(ns: Option<&Netns>, what: String, ops: Vec<Op>) -> Result<()> {
    let ns = ns.map(Netns::try_clone).transpose()?;
    let label = ns.as_ref().map_or_else(
        || "this namespace".to_string(),
        |n| n.path().display().to_string(),
    );
    blocking(move || {
        run_on_thread(move || {
            if let Some(ns) = &ns {
                ns.enter()?;
            }
            batch::commit(ops).map_err(|e| {
                let err = nl_failure(e, "program firewall", what, &label);
                match e.errno() {
                    Some(libc::ENOENT | libc::EOPNOTSUPP | libc::EAFNOSUPPORT) => err.with_hint(
                        "load the nftables modules: modprobe nf_tables nft_nat nft_masq \
                         nft_fib_ipv4 nft_chain_nat",
                    ),
                    _ => err,
                }
            })
        })
    })
    .await
}

/// Makes the table of `r` in `ns` hold exactly `r`, in one transaction.
pub(crate) async fn apply(ns: Option<&Netns>, r: &GatewayRules) -> Result<()> {
    run(ns, format!("table ip {}", r.table), replace_ops(r)).await
}

/// Removes table `name` from `ns`; nothing there is not an error.
pub(crate) async fn remove(ns: Option<&Netns>, name: &str) -> Result<()> {
    let ops = vec![
        table_op(NfTablesMessage::NewTable(table(name)), NLM_F_CREATE),
        table_op(NfTablesMessage::DeleteTable(table(name)), 0),
    ];
    run(ns, format!("table ip {name}"), ops).await
}

#[cfg(test)]
mod tests;
