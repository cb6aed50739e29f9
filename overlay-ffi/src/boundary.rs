//! The C boundary: every exported body runs inside [`run`] (or [`run_value`]), which catches
//! panics so nothing ever unwinds into C, turns failures into a status code, and records the
//! message for `ovl_last_error`. The argument helpers check pointers, UTF-8 and JSON before
//! any work is done, so a refused call changes nothing and leaves its out-pointers untouched.
//!
//! A JSON argument fails one of two ways, told apart as overlay.h promises: a document that is
//! not JSON or not of the documented shape is `OVL_ERR_JSON`; one of the right shape with a bad
//! value (a subnet such as `"10.999.0.0/24"`) is `OVL_ERR_INVALID_ARGUMENT` ([`arg_document`]).

use std::any::Any;
use std::cell::RefCell;
use std::ffi::{CStr, CString, c_char};
use std::panic::{self, AssertUnwindSafe};

use overlay_core::document::FromDocument;
use serde::de::DeserializeOwned;

use crate::status::ovl_status;

/// Why a call failed: the status to return and the message for `ovl_last_error`.
#[derive(Debug)]
pub(crate) struct Failure {
    status: ovl_status,
    message: String,
}

impl Failure {
    /// A failure with `status` and `message` (which should say what to do about it).
    pub(crate) fn new(status: ovl_status, message: impl Into<String>) -> Self {
        Failure {
            status,
            message: message.into(),
        }
    }

    fn null(name: &str) -> Self {
        Failure::new(
            ovl_status::OVL_ERR_NULL_ARGUMENT,
            format!("argument `{name}` is NULL (pass a valid pointer)"),
        )
    }
}

impl From<overlay_core::Error> for Failure {
    fn from(e: overlay_core::Error) -> Self {
        Failure::new(ovl_status::of_kind(e.kind()), e.to_string())
    }
}

/// Result of a body run inside the boundary.
pub(crate) type FfiResult<T = ()> = Result<T, Failure>;

thread_local! {
    /// The message of the last failure on this thread; replaced by the next failure only, so
    /// the pointer `ovl_last_error` hands out stays valid across successful calls.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

fn set_last_error(func: &str, message: &str) {
    // Messages come from Display impls and can in principle hold a NUL; C would cut there.
    let text = format!("{func}: {message}").replace('\0', "\\0");
    let text = CString::new(text).unwrap_or_default();
    // During thread teardown the slot may be gone already; then there is nobody to read it.
    let _ = LAST_ERROR.try_with(|slot| *slot.borrow_mut() = Some(text));
}

/// The current thread's last failure message, or an empty string.
pub(crate) fn last_error_ptr() -> *const c_char {
    LAST_ERROR
        .try_with(|slot| slot.borrow().as_ref().map(|s| s.as_ptr()))
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}

fn panic_text(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "a panic without a message"
    }
}

/// Runs the body of the exported function `func`: its status on success or failure, and
/// `OVL_ERR_PANIC` if it panicked. Failures are recorded for `ovl_last_error`.
pub(crate) fn run(func: &str, body: impl FnOnce() -> FfiResult) -> ovl_status {
    match panic::catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => ovl_status::OVL_OK,
        Ok(Err(failure)) => {
            set_last_error(func, &failure.message);
            failure.status
        }
        Err(payload) => {
            set_last_error(
                func,
                &format!(
                    "the library panicked: {} (this is a bug in overlay; please report it)",
                    panic_text(payload.as_ref())
                ),
            );
            ovl_status::OVL_ERR_PANIC
        }
    }
}

/// Runs the body of an exported function that cannot fail, returning `fallback` if it
/// panicked.
pub(crate) fn run_value<T>(fallback: T, body: impl FnOnce() -> T) -> T {
    panic::catch_unwind(AssertUnwindSafe(body)).unwrap_or(fallback)
}

/// Borrows a NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that outlives `'a`.
pub(crate) unsafe fn arg_str<'a>(name: &str, ptr: *const c_char) -> FfiResult<&'a str> {
    if ptr.is_null() {
        return Err(Failure::null(name));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string living for 'a.
    let bytes = unsafe { CStr::from_ptr(ptr) };
    bytes.to_str().map_err(|e| {
        Failure::new(
            ovl_status::OVL_ERR_UTF8,
            format!(
                "argument `{name}` is not valid UTF-8 (first bad byte at offset {}); pass UTF-8 \
                 text",
                e.valid_up_to()
            ),
        )
    })
}

/// Parses a JSON string argument into `T`, refusing unknown keys where `T` does.
///
/// # Safety
/// As [`arg_str`].
pub(crate) unsafe fn arg_json<T: DeserializeOwned>(name: &str, ptr: *const c_char) -> FfiResult<T> {
    // SAFETY: forwarded from the caller.
    let text = unsafe { arg_str(name, ptr) }?;
    serde_json::from_str(text).map_err(|e| {
        Failure::new(
            ovl_status::OVL_ERR_JSON,
            format!(
                "argument `{name}` is not a valid JSON document of the expected shape: {e}; see \
                 overlay.h for the accepted keys"
            ),
        )
    })
}

/// Reads a JSON document argument in the two steps of [`FromDocument`]: its shape
/// (`OVL_ERR_JSON`, as [`arg_json`]), then its values (`OVL_ERR_INVALID_ARGUMENT`, with the
/// core's message naming the field and the value).
///
/// # Safety
/// As [`arg_str`].
pub(crate) unsafe fn arg_document<T: FromDocument>(name: &str, ptr: *const c_char) -> FfiResult<T> {
    // SAFETY: forwarded from the caller.
    let document: T::Document = unsafe { arg_json(name, ptr) }?;
    Ok(T::try_from(document)?)
}

/// Borrows the object behind a handle argument.
///
/// # Safety
/// `ptr` is NULL or a live handle of type `T` that outlives `'a`.
pub(crate) unsafe fn arg_ref<'a, T>(name: &str, ptr: *const T) -> FfiResult<&'a T> {
    // SAFETY: the caller promises a live handle when non-NULL.
    unsafe { ptr.as_ref() }.ok_or_else(|| Failure::null(name))
}

/// Borrows a byte buffer argument; NULL is accepted for an empty buffer.
///
/// # Safety
/// `ptr` is NULL or points to `len` readable bytes that outlive `'a`.
pub(crate) unsafe fn arg_bytes<'a>(name: &str, ptr: *const u8, len: usize) -> FfiResult<&'a [u8]> {
    if len == 0 {
        return Ok(&[]);
    }
    if ptr.is_null() {
        return Err(Failure::new(
            ovl_status::OVL_ERR_NULL_ARGUMENT,
            format!("argument `{name}` is NULL but its length is {len} (pass the bytes, or 0)"),
        ));
    }
    // SAFETY: non-NULL, and the caller promises `len` readable bytes living for 'a.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// An out-pointer checked for NULL before any work, written only once the call succeeded.
pub(crate) struct Out<T>(*mut T);

impl<T> Out<T> {
    /// Checks a required out-pointer.
    pub(crate) fn required(name: &str, ptr: *mut T) -> FfiResult<Self> {
        if ptr.is_null() {
            Err(Failure::null(name))
        } else {
            Ok(Out(ptr))
        }
    }

    /// Accepts an optional out-pointer (NULL: the caller does not want the value).
    pub(crate) fn optional(ptr: *mut T) -> Self {
        Out(ptr)
    }

    /// Whether the caller wants the value (the pointer is not NULL), so results nobody reads
    /// are not built.
    pub(crate) fn is_wanted(&self) -> bool {
        !self.0.is_null()
    }

    /// Stores `value`, unless the caller passed NULL for an optional pointer.
    ///
    /// # Safety
    /// The pointer given at construction is NULL or valid for a write of `T`.
    pub(crate) unsafe fn write(self, value: T) {
        if !self.0.is_null() {
            // SAFETY: non-NULL, and the caller promises it is writable.
            unsafe { self.0.write(value) };
        }
    }
}

/// Moves a Rust string into a C string owned by the caller (freed with `ovl_string_free`).
pub(crate) fn c_string(text: String) -> FfiResult<*mut c_char> {
    CString::new(text).map(CString::into_raw).map_err(|_| {
        Failure::new(
            ovl_status::OVL_ERR_INTERNAL,
            "a result held a NUL byte and cannot be returned as a C string (this is a bug in \
             overlay; please report it)",
        )
    })
}

/// Serialises `value` as JSON into a C string owned by the caller.
pub(crate) fn c_json<T: serde::Serialize + ?Sized>(value: &T) -> FfiResult<*mut c_char> {
    let text = serde_json::to_string(value).map_err(|e| {
        Failure::new(
            ovl_status::OVL_ERR_INTERNAL,
            format!("could not encode the result as JSON: {e} (this is a bug in overlay)"),
        )
    })?;
    c_string(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: last_error_ptr always returns a NUL-terminated string.
        unsafe { CStr::from_ptr(last_error_ptr()) }
            .to_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message() {
        let status = run("ovl_test", || panic!("boom {}", 7));
        assert_eq!(status, ovl_status::OVL_ERR_PANIC);
        assert!(
            last().starts_with("ovl_test: the library panicked: boom 7"),
            "{}",
            last()
        );
        assert_eq!(run_value(5, || panic!("again")), 5);
    }

    #[test]
    fn failures_set_the_message_and_successes_keep_it() {
        let status = run("ovl_a", || {
            Err(Failure::from(overlay_core::Error::new(
                overlay_core::ErrorKind::Conflict,
                "store cas",
                "version 3 is stale",
            )))
        });
        assert_eq!(status, ovl_status::OVL_ERR_CONFLICT);
        let before = last_error_ptr();
        assert!(last().starts_with("ovl_a: store cas: version 3 is stale ("));
        assert_eq!(run("ovl_b", || Ok(())), ovl_status::OVL_OK);
        assert_eq!(
            last_error_ptr(),
            before,
            "a success must not move the message"
        );
    }

    #[test]
    fn arguments_are_checked() {
        // SAFETY: NULL and valid NUL-terminated literals.
        unsafe {
            assert_eq!(
                arg_str("k", std::ptr::null()).unwrap_err().status,
                ovl_status::OVL_ERR_NULL_ARGUMENT
            );
            let bad = b"a\xffb\0";
            let e = arg_str("k", bad.as_ptr().cast()).unwrap_err();
            assert_eq!(e.status, ovl_status::OVL_ERR_UTF8);
            assert!(e.message.contains("offset 1"), "{}", e.message);
            let e = arg_json::<serde_json::Value>("j", c"{".as_ptr()).unwrap_err();
            assert_eq!(e.status, ovl_status::OVL_ERR_JSON);
            type Options = overlay_core::NetworkOptions;
            let e = arg_document::<Options>("o", c"{\"subnets\": 5}".as_ptr()).unwrap_err();
            assert_eq!(e.status, ovl_status::OVL_ERR_JSON);
            let bad = c"{\"subnets\": [{\"subnet\": \"10.999.0.0/24\"}]}";
            let e = arg_document::<Options>("o", bad.as_ptr()).unwrap_err();
            assert_eq!(e.status, ovl_status::OVL_ERR_INVALID_ARGUMENT);
            assert!(e.message.contains("subnets[0].subnet"), "{}", e.message);
            assert_eq!(arg_bytes("v", std::ptr::null(), 0).unwrap(), b"");
            assert!(arg_bytes("v", std::ptr::null(), 1).is_err());
        }
        assert!(Out::<u64>::required("out", std::ptr::null_mut()).is_err());
        let e = c_string("a\0b".into()).unwrap_err();
        assert_eq!(e.status, ovl_status::OVL_ERR_INTERNAL);
    }
}
