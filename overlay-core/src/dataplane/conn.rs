//! One rtnetlink connection inside one network namespace.
//!
//! A netlink socket belongs to the namespace it was created in, forever. So each connection
//! gets a dedicated OS thread that enters the namespace once, opens the socket and then drives
//! it on a small single-threaded runtime; callers on any runtime (or none) talk to it through
//! the cloneable [`rtnetlink::Handle`]. No tokio worker of the caller ever calls `setns`.

use std::num::NonZeroI32;

use futures::stream::StreamExt;
use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::AsyncSocket;

use super::errors::{NlError, nl_failure};
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

impl NlConn {
    /// Opens a connection inside `ns`, or in the caller's own namespace when `ns` is `None`.
    /// `label` names the namespace in errors.
    pub(crate) async fn open(ns: Option<&Netns>, label: &str) -> Result<NlConn> {
        let ns = ns.map(Netns::try_clone).transpose()?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread_label = label.to_string();
        std::thread::Builder::new()
            .name("overlay-netlink".into())
            .spawn(move || serve(ns.as_ref(), &thread_label, ready_tx, stop_rx))
            .map_err(|e| Error::io("open netlink", "cannot start the netlink thread", e))?;
        let handle = ready_rx.await.map_err(|_| {
            Error::internal(
                "open netlink",
                format!("the netlink thread for {label} died"),
            )
        })??;
        Ok(NlConn {
            handle,
            label: label.to_string(),
            _stop: stop_tx,
        })
    }

    /// The namespace label used in errors.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// Sends one request with `flags` (REQUEST and ACK are added) and waits for its ack.
    pub(crate) async fn ack(&self, msg: RouteNetlinkMessage, flags: u16) -> Result<(), NlError> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        let mut handle = self.handle.clone();
        let mut responses = handle.request(req).map_err(|_| NlError::closed())?;
        while let Some(m) = responses.next().await {
            if let NetlinkPayload::Error(e) = m.payload
                && let Some(code) = e.code
            {
                return Err(NlError::from_code(code));
            }
        }
        Ok(())
    }

    /// Sends a request and collects every reply message (a get or a dump when `dump`).
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

    /// Like [`Self::ack`], mapping a failure to an [`Error`] for operation `op` on `what`.
    pub(crate) async fn ack_or(
        &self,
        msg: RouteNetlinkMessage,
        flags: u16,
        op: &'static str,
        what: impl FnOnce() -> String,
    ) -> Result<()> {
        self.ack(msg, flags)
            .await
            .map_err(|e| nl_failure(e, op, what(), &self.label))
    }
}

fn serve(
    ns: Option<&Netns>,
    label: &str,
    ready: tokio::sync::oneshot::Sender<Result<rtnetlink::Handle>>,
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
            Ok::<_, Error>((conn, handle))
        });
        opened.map(|(conn, handle)| (rt, conn, handle))
    })();
    match setup {
        Ok((rt, conn, handle)) => {
            if ready.send(Ok(handle)).is_err() {
                return;
            }
            rt.block_on(async {
                tokio::select! {
                    () = conn => {}
                    _ = stop => {}
                }
            });
        }
        Err(e) => {
            let _ = ready.send(Err(e));
        }
    }
}

impl NlError {
    fn from_code(code: NonZeroI32) -> NlError {
        NlError::Errno(code.get().abs())
    }
}
