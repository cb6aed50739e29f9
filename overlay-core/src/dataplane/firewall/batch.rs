//! One nf_tables transaction over a NETLINK_NETFILTER socket: the messages between a batch
//! begin and a batch end, which the kernel applies all or none of.
//!
//! rtnetlink's connection type expects one reply per request; batch markers get none, so the
//! batch is written and its acks read on a plain socket, on a thread that entered the
//! namespace (the socket stays in it).

use std::time::Duration;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_REQUEST, NetlinkBuffer, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::nftables::NfTablesMessage;
use netlink_packet_netfilter::none::ControlMessage;
use netlink_packet_netfilter::{NetfilterHeader, NetfilterMessage, NetfilterProtoFamily};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};

use crate::dataplane::NlError;

/// The nf_tables subsystem, as the batch markers name it.
const NFNL_SUBSYS_NFTABLES: u16 = 10;

/// How long the kernel may take to answer a batch before the socket gives up.
const ANSWER: Duration = Duration::from_secs(5);

/// Socket buffers for one batch and its acks: a table with hundreds of published ports is a
/// request of hundreds of KiB (the default buffers refuse it with ENOBUFS).
const BUFFER: libc::c_int = 8 << 20;

/// One message of a batch: its family, its body and its extra netlink flags (CREATE, EXCL...).
pub(super) struct Op {
    pub(super) family: NetfilterProtoFamily,
    pub(super) message: NfTablesMessage,
    pub(super) flags: u16,
}

fn marker(kind: ControlMessage, seq: u32) -> NetlinkMessage<NetfilterMessage> {
    let header = NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, NFNL_SUBSYS_NFTABLES);
    let mut m = NetlinkMessage::from(NetfilterMessage::new(header, kind));
    m.header.flags = NLM_F_REQUEST;
    m.header.sequence_number = seq;
    m.finalize();
    m
}

/// Serializes `ops` as one batch; every op asks for an ack, so that each gets an answer.
fn encode(ops: Vec<Op>) -> Vec<u8> {
    let mut msgs = vec![marker(ControlMessage::BatchBegin, 0)];
    for (i, op) in ops.into_iter().enumerate() {
        let header = NetfilterHeader::new(op.family, 0, 0);
        let mut m = NetlinkMessage::from(NetfilterMessage::new(header, op.message));
        m.header.flags = NLM_F_REQUEST | NLM_F_ACK | op.flags;
        m.header.sequence_number = i as u32 + 1;
        m.finalize();
        msgs.push(m);
    }
    let end = msgs.len() as u32;
    msgs.push(marker(ControlMessage::BatchEnd, end));
    let mut buf = vec![0u8; msgs.iter().map(|m| m.header.length as usize).sum()];
    let mut at = 0;
    for m in &msgs {
        let len = m.header.length as usize;
        m.serialize(&mut buf[at..at + len]);
        at += len;
    }
    buf
}

/// Sends `ops` as one transaction on a socket of the calling thread's namespace and waits for
/// the kernel's answer to each: the first errno, if any (the kernel then applied nothing).
pub(super) fn commit(ops: Vec<Op>) -> Result<(), NlError> {
    if ops.is_empty() {
        return Ok(());
    }
    let want = ops.len();
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io_errno(&e))?;
    sock.bind_auto().map_err(|e| io_errno(&e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| io_errno(&e))?;
    set_timeout(&sock, ANSWER)?;
    for opt in [libc::SO_SNDBUFFORCE, libc::SO_RCVBUFFORCE] {
        set_int(&sock, opt, BUFFER)?;
    }
    let buf = encode(ops);
    sock.send(&buf, 0).map_err(|e| io_errno(&e))?;
    let mut answered = 0;
    let mut first_error = None;
    let mut rx = vec![0u8; 64 * 1024];
    while answered < want {
        let n = sock.recv(&mut &mut rx[..], 0).map_err(|e| io_errno(&e))?;
        let mut at = 0;
        while at < n {
            let header =
                NetlinkBuffer::new_checked(&rx[at..n]).map_err(|_| NlError::Errno(libc::EPROTO))?;
            let len = header.length() as usize;
            if len == 0 || at + len > n {
                return Err(NlError::Errno(libc::EPROTO));
            }
            let msg = NetlinkMessage::<NetfilterMessage>::deserialize(&rx[at..at + len])
                .map_err(|_| NlError::Errno(libc::EPROTO))?;
            if let NetlinkPayload::Error(e) = msg.payload {
                answered += 1;
                if let Some(code) = e.code {
                    first_error.get_or_insert(NlError::from_code(code));
                }
            }
            at += len.next_multiple_of(4);
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn io_errno(e: &std::io::Error) -> NlError {
    NlError::Errno(e.raw_os_error().unwrap_or(libc::EIO))
}

fn set_int(sock: &Socket, opt: libc::c_int, value: libc::c_int) -> Result<(), NlError> {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket descriptor this function borrows and an int that lives for the
    // call; the SOL_SOCKET buffer options take exactly that.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_errno(&std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_timeout(sock: &Socket, limit: Duration) -> Result<(), NlError> {
    use std::os::fd::AsRawFd;
    let tv = libc::timeval {
        tv_sec: limit.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: a valid socket descriptor this function borrows and a timeval that lives for the
    // call; SO_RCVTIMEO takes exactly that struct.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_errno(&std::io::Error::last_os_error()));
    }
    Ok(())
}
