//! `ovl_store`: the cluster store, directly. Useful for tools that inspect or seed the store,
//! and for embedders that keep their own records next to the overlay's.
//!
//! Keys are relative to the URL's prefix (default `overlay/v1`) and are `/`-separated segments
//! of printable ASCII; values are bytes with a version that increases on every write.

use std::ffi::c_char;
use std::sync::Arc;

use overlay_core::store::{self, KvStore};
use serde_json::{Map, Value, json};

use crate::boundary::{self, Failure, FfiResult, Out, arg_bytes, arg_ref, arg_str, c_json};
use crate::memory::bytes_into_raw;
use crate::runtime::block_on;
use crate::status::ovl_status;

/// A connection to a cluster store. Opaque: create it with `ovl_store_open`, free it with
/// `ovl_store_free`.
///
/// Thread-safe: any number of threads may use one handle at once. Only `ovl_store_free` must
/// not race with other calls on the same handle.
pub struct ovl_store {
    inner: Arc<dyn KvStore>,
}

/// Borrows the store behind a handle argument.
///
/// # Safety
/// `ptr` is NULL or a live handle.
unsafe fn handle<'a>(ptr: *const ovl_store) -> FfiResult<&'a dyn KvStore> {
    // SAFETY: forwarded from the caller.
    Ok(unsafe { arg_ref("store", ptr) }?.inner.as_ref())
}

/// Opens the cluster store `url` names: `file:///PATH` (the embedded single-host store),
/// `etcd://HOST:PORT[,HOST:PORT...]/PREFIX`, `zk://...` or `consul://...`, with options such
/// as `?timeout=5s`. On success `*out` holds a new handle.
///
/// Errors: `OVL_ERR_INVALID_ARGUMENT` for a malformed URL, `OVL_ERR_UNSUPPORTED` for a backend
/// not part of this build, `OVL_ERR_UNAVAILABLE` or `OVL_ERR_TIMEOUT` when the store cannot be
/// reached.
///
/// # Safety
/// `url` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_open(
    url: *const c_char,
    out: *mut *mut ovl_store,
) -> ovl_status {
    boundary::run("ovl_store_open", || {
        // SAFETY: forwarded from the caller.
        let url = unsafe { arg_str("url", url) }?;
        let out = Out::required("out", out)?;
        let inner = block_on(store::connect_str(url))??;
        let handle = Box::into_raw(Box::new(ovl_store { inner }));
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out.write(handle) };
        Ok(())
    })
}

/// Closes the store if it is still open (removing this client's ephemeral keys) and frees the
/// handle. NULL is a no-op. No other call may use the handle during or after this one.
///
/// # Safety
/// `store` is NULL or a handle from `ovl_store_open` not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_free(store: *mut ovl_store) {
    boundary::run_value((), || {
        if store.is_null() {
            return;
        }
        // SAFETY: the caller hands back ownership of a handle made by Box::into_raw.
        let store = unsafe { Box::from_raw(store) };
        // Best effort: a failed close (a store that is already gone) leaves nothing to free.
        let _ = block_on(store.inner.close());
    });
}

/// Closes the store: ends the session, removing this client's ephemeral keys, and stops
/// background work. Every later call on the handle fails with `OVL_ERR_UNAVAILABLE`; the
/// handle must still be freed with `ovl_store_free`. Closing twice is not an error.
///
/// # Safety
/// `store` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_close(store: *mut ovl_store) -> ovl_status {
    boundary::run("ovl_store_close", || {
        // SAFETY: forwarded from the caller.
        let store = unsafe { handle(store) }?;
        Ok(block_on(store.close())??)
    })
}

/// Reads `key`. On success `*out_value` and `*out_len` hold a copy of the value (freed with
/// `ovl_bytes_free(*out_value, *out_len)`; an empty value is NULL with length 0) and
/// `*out_version` its version (`out_version` may be NULL).
///
/// Errors: `OVL_ERR_NOT_FOUND` when the key does not exist, `OVL_ERR_INVALID_ARGUMENT` for a
/// malformed key.
///
/// # Safety
/// `store` is NULL or a live handle; `key` NULL or a NUL-terminated string; the out-pointers
/// NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_get(
    store: *mut ovl_store,
    key: *const c_char,
    out_value: *mut *mut u8,
    out_len: *mut usize,
    out_version: *mut u64,
) -> ovl_status {
    boundary::run("ovl_store_get", || {
        // SAFETY: forwarded from the caller.
        let (store, key) = unsafe { (handle(store)?, arg_str("key", key)?) };
        let out_value = Out::required("out_value", out_value)?;
        let out_len = Out::required("out_len", out_len)?;
        let out_version = Out::optional(out_version);
        let kv = block_on(store.get(key))??.ok_or_else(|| {
            Failure::new(
                ovl_status::OVL_ERR_NOT_FOUND,
                format!("key {key:?} does not exist (list the prefix to see what does)"),
            )
        })?;
        let (ptr, len) = bytes_into_raw(kv.value);
        // SAFETY: checked or optional pointers the caller promises are writable.
        unsafe {
            out_value.write(ptr);
            out_len.write(len);
            out_version.write(kv.version);
        }
        Ok(())
    })
}

/// Which write [`write`] performs.
#[derive(Clone, Copy)]
enum Write {
    Put,
    Create,
    Ephemeral,
    Swap(u64),
}

/// The body shared by the four writes.
///
/// # Safety
/// As the exported writes.
unsafe fn write(
    func: &'static str,
    how: Write,
    store: *mut ovl_store,
    key: *const c_char,
    value: *const u8,
    len: usize,
    out_version: *mut u64,
) -> ovl_status {
    boundary::run(func, || {
        // SAFETY: forwarded from the caller.
        let (store, key, value) = unsafe {
            (
                handle(store)?,
                arg_str("key", key)?,
                arg_bytes("value", value, len)?,
            )
        };
        let out_version = Out::optional(out_version);
        let version = block_on(async {
            match how {
                Write::Put => store.put(key, value).await,
                Write::Create => store.create(key, value).await,
                Write::Ephemeral => store.put_ephemeral(key, value).await,
                Write::Swap(expected) => store.compare_and_swap(key, value, expected).await,
            }
        })??;
        // SAFETY: optional pointer the caller promises is writable.
        unsafe { out_version.write(version) };
        Ok(())
    })
}

/// Writes `len` bytes at `value` to `key`, whatever is there. `value` may be NULL when `len`
/// is 0. On success `*out_version` (if not NULL) holds the new version.
///
/// # Safety
/// `store` is NULL or a live handle; `key` NULL or a NUL-terminated string; `value` NULL or
/// `len` readable bytes; `out_version` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_put(
    store: *mut ovl_store,
    key: *const c_char,
    value: *const u8,
    len: usize,
    out_version: *mut u64,
) -> ovl_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        write(
            "ovl_store_put",
            Write::Put,
            store,
            key,
            value,
            len,
            out_version,
        )
    }
}

/// Like `ovl_store_put`, but only if `key` does not exist; else `OVL_ERR_ALREADY_EXISTS` and
/// nothing is written.
///
/// # Safety
/// As `ovl_store_put`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_create(
    store: *mut ovl_store,
    key: *const c_char,
    value: *const u8,
    len: usize,
    out_version: *mut u64,
) -> ovl_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        write(
            "ovl_store_create",
            Write::Create,
            store,
            key,
            value,
            len,
            out_version,
        )
    }
}

/// Like `ovl_store_put`, but the key is bound to this handle's session: it is deleted when the
/// store is closed or freed, or within the session TTL after the process dies.
///
/// # Safety
/// As `ovl_store_put`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_put_ephemeral(
    store: *mut ovl_store,
    key: *const c_char,
    value: *const u8,
    len: usize,
    out_version: *mut u64,
) -> ovl_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        write(
            "ovl_store_put_ephemeral",
            Write::Ephemeral,
            store,
            key,
            value,
            len,
            out_version,
        )
    }
}

/// Compare-and-swap: writes the value only if `key` is at `version`; else `OVL_ERR_CONFLICT`
/// (also when the key does not exist) and nothing is written. On success `*out_version` (if
/// not NULL) holds the new version.
///
/// # Safety
/// As `ovl_store_put`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_cas(
    store: *mut ovl_store,
    key: *const c_char,
    value: *const u8,
    len: usize,
    version: u64,
    out_version: *mut u64,
) -> ovl_status {
    // SAFETY: forwarded from the caller.
    unsafe {
        write(
            "ovl_store_cas",
            Write::Swap(version),
            store,
            key,
            value,
            len,
            out_version,
        )
    }
}

/// Deletes `key`. Deleting a key that does not exist is not an error: `*out_existed` (if not
/// NULL) says whether it did.
///
/// # Safety
/// `store` is NULL or a live handle; `key` NULL or a NUL-terminated string; `out_existed` NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_delete(
    store: *mut ovl_store,
    key: *const c_char,
    out_existed: *mut bool,
) -> ovl_status {
    boundary::run("ovl_store_delete", || {
        // SAFETY: forwarded from the caller.
        let (store, key) = unsafe { (handle(store)?, arg_str("key", key)?) };
        let out_existed = Out::optional(out_existed);
        let existed = block_on(store.delete(key))??;
        // SAFETY: optional pointer the caller promises is writable.
        unsafe { out_existed.write(existed) };
        Ok(())
    })
}

/// Deletes `key` only if it is at `version`; else `OVL_ERR_CONFLICT` (also when the key does
/// not exist) and nothing is deleted.
///
/// # Safety
/// `store` is NULL or a live handle; `key` NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_cas_delete(
    store: *mut ovl_store,
    key: *const c_char,
    version: u64,
) -> ovl_status {
    boundary::run("ovl_store_cas_delete", || {
        // SAFETY: forwarded from the caller.
        let (store, key) = unsafe { (handle(store)?, arg_str("key", key)?) };
        Ok(block_on(store.compare_and_delete(key, version))??)
    })
}

/// Lists every key below `prefix` (at any depth; `""` for all). On success `*out_json` holds a
/// JSON document, freed with `ovl_string_free`:
///
/// ```json
/// {"revision": 42,
///  "kvs": [{"key": "networks/ab12...", "version": 40, "value": "{\"name\":...}"},
///          {"key": "blob", "version": 41, "value_hex": "00ff"}]}
/// ```
///
/// Keys are sorted. A value that is UTF-8 text is given as `value`; any other as `value_hex`
/// (lowercase hex); exactly one of the two is present. `revision` is the store revision the
/// listing was taken at.
///
/// # Safety
/// `store` is NULL or a live handle; `prefix` NULL or a NUL-terminated string; `out_json` NULL
/// or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_store_list(
    store: *mut ovl_store,
    prefix: *const c_char,
    out_json: *mut *mut c_char,
) -> ovl_status {
    boundary::run("ovl_store_list", || {
        // SAFETY: forwarded from the caller.
        let (store, prefix) = unsafe { (handle(store)?, arg_str("prefix", prefix)?) };
        let out_json = Out::required("out_json", out_json)?;
        let listing = block_on(store.list(prefix))??;
        let kvs: Vec<Value> = listing
            .kvs
            .into_iter()
            .map(|kv| {
                let mut entry = Map::new();
                entry.insert("key".into(), kv.key.into());
                entry.insert("version".into(), kv.version.into());
                match String::from_utf8(kv.value) {
                    Ok(text) => entry.insert("value".into(), text.into()),
                    Err(e) => entry.insert("value_hex".into(), hex::encode(e.as_bytes()).into()),
                };
                Value::Object(entry)
            })
            .collect();
        let text = c_json(&json!({ "revision": listing.revision, "kvs": kvs }))?;
        // SAFETY: checked non-NULL; the caller promises it is writable.
        unsafe { out_json.write(text) };
        Ok(())
    })
}
