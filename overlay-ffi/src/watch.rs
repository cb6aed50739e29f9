//! `ovl_watch`: controller events (networks created and removed, endpoints up and down on any
//! host) delivered to a C callback on a thread of their own.

use std::ffi::{CString, c_char, c_void};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use serde_json::json;
use tokio::sync::{Notify, broadcast};

use crate::boundary::{self, Failure, Out, arg_ref};
use crate::controller::ovl_controller;
use crate::runtime::runtime;
use crate::status::ovl_status;

/// Receives one controller event as a JSON document; `event_json` is valid only during the
/// call. `userdata` is the pointer given to `ovl_watch`.
///
/// Events, by `"type"`:
///
/// ```json
/// {"type": "network_created", "id": "<64 hex>", "name": "my-net"}
/// {"type": "network_removed", "id": "<64 hex>", "name": "my-net"}
/// {"type": "endpoint_up", "network": "<64 hex network id>", "container_id": "3cfba8da9b6f",
///  "name": "zookeeper1", "ip": "10.0.9.2", "host": "host1"}
/// {"type": "endpoint_down", "network": "<64 hex network id>", "container_id": "3cfba8da9b6f",
///  "name": "zookeeper1", "host": "host1"}
/// {"type": "lagged", "missed": 12}
/// ```
///
/// Network events come from every host. Endpoint events come for networks that have a
/// container on this host: this host's own connects and disconnects, and other hosts'.
/// `lagged` means the callback fell behind and `missed` events were dropped: re-read the
/// state (`ovl_network_list`, `ovl_network_inspect`) if it matters.
/// Other types may be added; ignore the ones you do not know.
pub type ovl_event_callback =
    Option<unsafe extern "C" fn(event_json: *const c_char, userdata: *mut c_void)>;

/// A running subscription to controller events. Opaque: create it with `ovl_watch`, stop and
/// free it with `ovl_watcher_free`.
pub struct ovl_watcher {
    stop: Arc<Notify>,
    thread: Option<JoinHandle<()>>,
}

/// The C side's pointer, carried to the delivery thread; the caller of `ovl_watch` promises
/// the callback may be called with it from another thread.
struct UserData(*mut c_void);

// SAFETY: ovl_watch documents that the callback and its userdata are used from the watcher's
// own thread; the library never dereferences the pointer.
unsafe impl Send for UserData {}

/// Subscribes to the controller's events: from now on, `callback(event_json, userdata)` is
/// called for each event, in order, one at a time, on a thread the library creates for this
/// watcher (never the thread that called `ovl_watch`). The callback may call any `ovl_`
/// function, including on the same controller, and may free its own watcher (delivery then
/// stops after the callback returns). It should return quickly: events arriving while it runs
/// are queued, and a callback that falls far behind is told with a `lagged` event.
///
/// On success `*out` holds the watcher; `ovl_watcher_free` stops it. After the controller is
/// closed or freed, no more events arrive, but the watcher must still be freed.
///
/// # Safety
/// `ctl` is NULL or a live handle; `callback` NULL or a function safe to call from another
/// thread with `userdata` until the watcher is freed; `out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_watch(
    ctl: *mut ovl_controller,
    callback: ovl_event_callback,
    userdata: *mut c_void,
    out: *mut *mut ovl_watcher,
) -> ovl_status {
    boundary::run("ovl_watch", || {
        // SAFETY: forwarded from the caller.
        let ctl = unsafe { arg_ref("ctl", ctl) }?;
        let callback = callback.ok_or_else(|| {
            Failure::new(
                ovl_status::OVL_ERR_NULL_ARGUMENT,
                "argument `callback` is NULL (pass a function)",
            )
        })?;
        let out = Out::required("out", out)?;
        let rt = runtime()?;
        let mut events = ctl.inner.events();
        let stop = Arc::new(Notify::new());
        let stopped = stop.clone();
        let userdata = UserData(userdata);
        let thread = thread::Builder::new()
            .name("overlay-watch".into())
            .spawn(move || {
                let userdata = userdata;
                loop {
                    let next = rt.block_on(async {
                        tokio::select! {
                            biased;
                            () = stopped.notified() => None,
                            event = events.recv() => Some(event),
                        }
                    });
                    let text = match next {
                        None | Some(Err(broadcast::error::RecvError::Closed)) => break,
                        Some(Ok(event)) => serde_json::to_string(&event).ok(),
                        Some(Err(broadcast::error::RecvError::Lagged(missed))) => {
                            Some(json!({ "type": "lagged", "missed": missed }).to_string())
                        }
                    };
                    // JSON text never holds a NUL, and events always serialise; skip anything
                    // else rather than hand C a broken document.
                    if let Some(text) = text.and_then(|t| CString::new(t).ok()) {
                        // SAFETY: ovl_watch's caller promises the callback may be called from
                        // this thread with this userdata until the watcher is freed, and
                        // ovl_watcher_free joins this thread before returning.
                        unsafe { callback(text.as_ptr(), userdata.0) };
                    }
                }
            })
            .map_err(|e| {
                Failure::new(
                    ovl_status::OVL_ERR_INTERNAL,
                    format!("could not start the event thread: {e} (check the thread limit)"),
                )
            })?;
        let watcher = Box::into_raw(Box::new(ovl_watcher {
            stop,
            thread: Some(thread),
        }));
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out.write(watcher) };
        Ok(())
    })
}

/// Stops a watcher and frees it. When it returns, the callback is not running and will not be
/// called again, except when called from the callback itself: then delivery stops once the
/// callback returns. NULL is a no-op.
///
/// # Safety
/// `watcher` is NULL or a watcher from `ovl_watch` not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_watcher_free(watcher: *mut ovl_watcher) {
    boundary::run_value((), || {
        if watcher.is_null() {
            return;
        }
        // SAFETY: the caller hands back ownership of a watcher made by Box::into_raw.
        let mut watcher = unsafe { Box::from_raw(watcher) };
        // notify_one keeps the wake-up if the thread is not waiting yet (it is in the callback).
        watcher.stop.notify_one();
        if let Some(thread) = watcher.thread.take()
            && thread.thread().id() != thread::current().id()
        {
            // A panic on the delivery thread has already ended it; nothing is left to stop.
            let _ = thread.join();
        }
    });
}
