//! One rtnetlink connection inside one network namespace.
//!
//! A netlink socket belongs to the namespace it was created in, forever. So each connection
//! gets a dedicated OS thread that enters the namespace once, opens the socket and then drives
//! it on a small single-threaded runtime; callers on any runtime (or none) talk to it through
//! the cloneable [`rtnetlink::Handle`]. No tokio worker of the caller ever calls `setns`.

use std::num::NonZeroI32;
use std::os::fd::AsRawFd;

use futures::stream::StreamExt;
use netlink_packet_core::{NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::AsyncSocket;

use super::errors::NlError;
use super::netns::Netns;
use crate::error::{Error, Result};

/// Receive buffer for dumps of many neighbour entries (10,000 peers and more).
const RECV_BUFFER: usize = 8 * 1024 * 1024;

/// A netlink connection living in one namespace, served by its own thread until dropped.
#[derive(Debug)]
pub(crate) struct NlConn {
    handle: rtnetlink::Handle,
    label: String,
    // Dropping this ends the serving thread.
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// What the kernel announces on a connection opened with [`NlConn::open_watching`]: link and
/// neighbour changes in its namespace, until the connection is dropped.
pub(crate) type Notifications = futures::channel::mpsc::UnboundedReceiver<(
    NetlinkMessage<RouteNetlinkMessage>,
    netlink_sys::SocketAddr,
)>;

impl NlConn {
    /// Opens a connection inside `ns`, or in the caller's own namespace when `ns` is `None`.
    /// `label` names the namespace in errors.
    pub(crate) async fn open(ns: Option<&Netns>, label: &str) -> Result<NlConn> {
        Ok(Self::open_with(ns, label, false).await?.0)
    }

    /// Like [`NlConn::open`], also subscribed to the namespace's link and neighbour
    /// notifications (the kernel's own account of a device or entry deleted behind our back).
    pub(crate) async fn open_watching(
        ns: Option<&Netns>,
        label: &str,
    ) -> Result<(NlConn, Notifications)> {
        let (conn, notes) = Self::open_with(ns, label, true).await?;
        let notes = notes.ok_or_else(|| {
            Error::internal(
                "open netlink",
                "the notification stream was not handed over",
            )
        })?;
        Ok((conn, notes))
    }

    async fn open_with(
        ns: Option<&Netns>,
        label: &str,
        watch: bool,
    ) -> Result<(NlConn, Option<Notifications>)> {
        let ns = ns.map(Netns::try_clone).transpose()?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_label = label.to_string();
        std::thread::Builder::new()
            .name("overlay-netlink".into())
            .spawn(move || serve(ns.as_ref(), &thread_label, watch, ready_tx, stop_rx))
            .map_err(|e| Error::io("open netlink", "cannot start the netlink thread", e))?;
        let (handle, notes) = ready_rx.await.map_err(|_| {
            Error::internal(
                "open netlink",
                format!("the netlink thread for {label} died"),
            )
        })??;
        let conn = NlConn {
            handle,
            label: label.to_string(),
            _stop: stop_tx,
        };
        Ok((conn, notes))
    }

    /// Collects the replies of a get or dump made through one of rtnetlink's requests.
    pub(crate) async fn collect<T>(
        replies: impl futures::Stream<Item = Result<T, rtnetlink::Error>>,
    ) -> Result<Vec<T>, NlError> {
        use futures::TryStreamExt;
        Ok(replies.try_collect().await?)
    }

    /// Waits for a request made through one of rtnetlink's builders to be acked.
    pub(crate) async fn done(
        request: impl std::future::Future<Output = Result<(), rtnetlink::Error>>,
    ) -> Result<(), NlError> {
        Ok(request.await?)
    }

    /// Creates the link `m` describes (CREATE|EXCL: an existing name fails with EEXIST).
    pub(crate) async fn add_link(
        &self,
        m: netlink_packet_route::link::LinkMessage,
    ) -> Result<(), NlError> {
        Ok(self.handle.link().add(m).execute().await?)
    }

    /// The rtnetlink handle, for requests made through its builders.
    pub(crate) fn handle(&self) -> &rtnetlink::Handle {
        &self.handle
    }

    /// The namespace label used in errors.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Sends a request built by hand and collects every reply message (a get, or a dump when
    /// `dump`): for what rtnetlink has no request for (a single neighbour or FDB entry).
    pub(crate) async fn query(
        &self,
        msg: RouteNetlinkMessage,
        dump: bool,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req).map_err(|_| NlError::closed())?;
        let mut out = Vec::new();
        while let Some(m) = responses.next().await {
            match m.payload {
                NetlinkPayload::InnerMessage(inner) => out.push(inner),
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(NlError::from_code(code));
                    }
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

fn serve(
    ns: Option<&Netns>,
    label: &str,
    watch: bool,
    ready: tokio::sync::oneshot::Sender<Result<(rtnetlink::Handle, Option<Notifications>)>>,
    stop: tokio::sync::oneshot::Receiver<()>,
) {
    let setup = (|| {
        if let Some(ns) = ns {
            ns.enter()?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| {
                Error::io(
                    "open netlink",
                    format!("cannot build the runtime for {label}"),
                    e,
                )
            })?;
        let opened = rt.block_on(async {
            let (mut conn, handle, _) = rtnetlink::new_connection().map_err(|e| {
                Error::io(
                    "open netlink",
                    format!("cannot open a netlink socket in {label}"),
                    e,
                )
            })?;
            let sock = conn.socket_mut().socket_mut();
            // Dumps filtered by ifindex need strict checking; a bigger buffer keeps large
            // dumps and bursts of acks from overflowing (ENOBUFS).
            sock.set_netlink_get_strict_chk(true).map_err(|e| {
                Error::io("open netlink", "cannot enable NETLINK_GET_STRICT_CHK", e)
            })?;
            let _ = sock.set_rx_buf_sz(RECV_BUFFER);
            // Notifications get a socket of their own: a burst of them (10,000 peers
            // programmed) that overruns a socket's buffer must never cost a request its ack.
            let watcher = if watch { Some(subscribe(label)?) } else { None };
            Ok::<_, Error>((conn, handle, watcher))
        });
        opened.map(|(conn, handle, watcher)| (rt, conn, handle, watcher))
    })();
    match setup {
        Ok((rt, conn, handle, watcher)) => {
            let (watcher, notes) = match watcher {
                Some((w, n)) => (Some(w), Some(n)),
                None => (None, None),
            };
            if ready.send(Ok((handle, notes))).is_err() {
                return;
            }
            rt.block_on(async {
                let watching = async {
                    match watcher {
                        Some(w) => w.await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = conn => {}
                    () = watching => {}
                    _ = stop => {}
                }
            });
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

/// A connection subscribed to the link and neighbour notifications of the current namespace
/// (it sends no requests).
fn subscribe(
    label: &str,
) -> Result<(
    rtnetlink::proto::Connection<RouteNetlinkMessage>,
    Notifications,
)> {
    let failed = |e| {
        Error::io(
            "open netlink",
            format!("cannot subscribe to link and neighbour changes in {label}"),
            e,
        )
    };
    let (mut conn, _, notes) = rtnetlink::new_connection().map_err(failed)?;
    let sock = conn.socket_mut().socket_mut();
    let _ = sock.set_rx_buf_sz(RECV_BUFFER);
    sock.bind(&netlink_sys::SocketAddr::new(0, 0))
        .map_err(failed)?;
    // Filtered before joining the groups, so that no addition is ever queued.
    only_deletions(sock.as_raw_fd()).map_err(failed)?;
    for group in [libc::RTNLGRP_LINK, libc::RTNLGRP_NEIGH] {
        sock.add_membership(group).map_err(failed)?;
    }
    Ok((conn, notes))
}

/// Attaches a socket filter that lets through only link and neighbour deletions (and errors),
/// so the kernel drops the additions (20,000 of them for 10,000 peers programmed) before they
/// wake anyone. Each notification is a datagram of one message; the filter reads its type.
fn only_deletions(fd: std::os::fd::RawFd) -> std::io::Result<()> {
    // A classic BPF load of a half-word reads it big-endian; the header is in host order.
    let wire = |t: u16| u32::from(u16::from_be_bytes(t.to_ne_bytes()));
    let ld_type = libc::sock_filter {
        code: (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: 4, // offsetof(struct nlmsghdr, nlmsg_type)
    };
    let accept_if = |t: u16, skip: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt: skip,
        jf: 0,
        k: wire(t),
    };
    let ret = |k: u32| libc::sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let program = [
        ld_type,
        accept_if(libc::RTM_DELLINK, 3),
        accept_if(libc::RTM_DELNEIGH, 2),
        accept_if(libc::NLMSG_ERROR as u16, 1),
        ret(0),
        ret(u32::MAX),
    ];
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it, and
    // `fd` is the open socket the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::from_ref(&fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl NlError {
    pub(crate) fn from_code(code: NonZeroI32) -> NlError {
        NlError::Errno(code.get().abs())
    }
}
