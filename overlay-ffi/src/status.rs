//! Status codes: one per [`ErrorKind`], plus the failures only the C boundary can see.
//!
//! The numbers are part of the ABI. A code is never renumbered or reused; new kinds get new
//! numbers at the end.

use std::ffi::{c_char, c_int};

use overlay_core::ErrorKind;

use crate::boundary;

/// The result of every fallible `ovl_` function.
///
/// `OVL_OK` (0) is success; every other value is a failure, and `ovl_last_error()` then holds
/// a message saying what was wrong and what to do about it. Codes 1 to 10 follow the library's
/// error kinds one to one; the codes after them come from the C boundary itself.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ovl_status {
    /// Success.
    OVL_OK = 0,
    /// The named thing (key, network, endpoint, container, name) does not exist.
    OVL_ERR_NOT_FOUND = 1,
    /// A create found the thing already there.
    OVL_ERR_ALREADY_EXISTS = 2,
    /// A conditional write lost a race or a precondition does not hold; nothing was changed.
    OVL_ERR_CONFLICT = 3,
    /// An argument is malformed or out of range (a bad key, URL, name, address); nothing was
    /// changed.
    OVL_ERR_INVALID_ARGUMENT = 4,
    /// The cluster store or another dependency cannot be reached right now, or the handle was
    /// closed.
    OVL_ERR_UNAVAILABLE = 5,
    /// An operation did not complete within its deadline.
    OVL_ERR_TIMEOUT = 6,
    /// The process lacks a privilege (usually `CAP_NET_ADMIN` or `CAP_SYS_ADMIN`).
    OVL_ERR_PERMISSION_DENIED = 7,
    /// The request is valid but this backend, kernel or build cannot do it.
    OVL_ERR_UNSUPPORTED = 8,
    /// The kernel refused a netlink or namespace operation.
    OVL_ERR_KERNEL = 9,
    /// A bug or broken invariant inside the library.
    OVL_ERR_INTERNAL = 10,
    /// A pointer argument that must not be NULL was NULL.
    OVL_ERR_NULL_ARGUMENT = 11,
    /// A string argument is not valid UTF-8.
    OVL_ERR_UTF8 = 12,
    /// The library panicked; the call was abandoned and its out-pointers left untouched.
    OVL_ERR_PANIC = 13,
    /// A JSON argument is not JSON, or not of the documented shape (an unknown key, a wrong
    /// type, a missing field).
    OVL_ERR_JSON = 14,
}

impl ovl_status {
    /// Every status, in numeric order.
    pub const ALL: [ovl_status; 15] = [
        ovl_status::OVL_OK,
        ovl_status::OVL_ERR_NOT_FOUND,
        ovl_status::OVL_ERR_ALREADY_EXISTS,
        ovl_status::OVL_ERR_CONFLICT,
        ovl_status::OVL_ERR_INVALID_ARGUMENT,
        ovl_status::OVL_ERR_UNAVAILABLE,
        ovl_status::OVL_ERR_TIMEOUT,
        ovl_status::OVL_ERR_PERMISSION_DENIED,
        ovl_status::OVL_ERR_UNSUPPORTED,
        ovl_status::OVL_ERR_KERNEL,
        ovl_status::OVL_ERR_INTERNAL,
        ovl_status::OVL_ERR_NULL_ARGUMENT,
        ovl_status::OVL_ERR_UTF8,
        ovl_status::OVL_ERR_PANIC,
        ovl_status::OVL_ERR_JSON,
    ];

    /// The status a library error of `kind` is reported as.
    pub fn of_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::NotFound => ovl_status::OVL_ERR_NOT_FOUND,
            ErrorKind::AlreadyExists => ovl_status::OVL_ERR_ALREADY_EXISTS,
            ErrorKind::Conflict => ovl_status::OVL_ERR_CONFLICT,
            ErrorKind::InvalidArgument => ovl_status::OVL_ERR_INVALID_ARGUMENT,
            ErrorKind::Unavailable => ovl_status::OVL_ERR_UNAVAILABLE,
            ErrorKind::Timeout => ovl_status::OVL_ERR_TIMEOUT,
            ErrorKind::PermissionDenied => ovl_status::OVL_ERR_PERMISSION_DENIED,
            ErrorKind::Unsupported => ovl_status::OVL_ERR_UNSUPPORTED,
            ErrorKind::Kernel => ovl_status::OVL_ERR_KERNEL,
            ErrorKind::Internal => ovl_status::OVL_ERR_INTERNAL,
            // A kind added after this build has no code of its own yet; the message still
            // names it.
            _ => ovl_status::OVL_ERR_INTERNAL,
        }
    }

    /// The constant's name as written in C, NUL-terminated.
    fn name(self) -> &'static std::ffi::CStr {
        match self {
            ovl_status::OVL_OK => c"OVL_OK",
            ovl_status::OVL_ERR_NOT_FOUND => c"OVL_ERR_NOT_FOUND",
            ovl_status::OVL_ERR_ALREADY_EXISTS => c"OVL_ERR_ALREADY_EXISTS",
            ovl_status::OVL_ERR_CONFLICT => c"OVL_ERR_CONFLICT",
            ovl_status::OVL_ERR_INVALID_ARGUMENT => c"OVL_ERR_INVALID_ARGUMENT",
            ovl_status::OVL_ERR_UNAVAILABLE => c"OVL_ERR_UNAVAILABLE",
            ovl_status::OVL_ERR_TIMEOUT => c"OVL_ERR_TIMEOUT",
            ovl_status::OVL_ERR_PERMISSION_DENIED => c"OVL_ERR_PERMISSION_DENIED",
            ovl_status::OVL_ERR_UNSUPPORTED => c"OVL_ERR_UNSUPPORTED",
            ovl_status::OVL_ERR_KERNEL => c"OVL_ERR_KERNEL",
            ovl_status::OVL_ERR_INTERNAL => c"OVL_ERR_INTERNAL",
            ovl_status::OVL_ERR_NULL_ARGUMENT => c"OVL_ERR_NULL_ARGUMENT",
            ovl_status::OVL_ERR_UTF8 => c"OVL_ERR_UTF8",
            ovl_status::OVL_ERR_PANIC => c"OVL_ERR_PANIC",
            ovl_status::OVL_ERR_JSON => c"OVL_ERR_JSON",
        }
    }
}

/// The name of a status code (`"OVL_ERR_NOT_FOUND"` for 1), or `"OVL_UNKNOWN"` for a number
/// this build does not know. The string is static: never free it.
///
/// Takes an `int` rather than an `ovl_status` so any number, even one from a newer build, is
/// safe to pass.
#[unsafe(no_mangle)]
pub extern "C" fn ovl_status_name(status: c_int) -> *const c_char {
    boundary::run_value(c"OVL_UNKNOWN".as_ptr(), || {
        ovl_status::ALL
            .iter()
            .find(|s| **s as c_int == status)
            .map_or(c"OVL_UNKNOWN", |s| s.name())
            .as_ptr()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_in_order_onto_codes_one_to_ten() {
        for (i, kind) in ErrorKind::ALL.iter().enumerate() {
            assert_eq!(ovl_status::of_kind(*kind) as i32, i as i32 + 1, "{kind:?}");
        }
    }

    #[test]
    fn numbers_are_dense_and_names_match() {
        for (i, s) in ovl_status::ALL.iter().enumerate() {
            assert_eq!(*s as i32, i as i32);
            // SAFETY: ovl_status_name returns a static NUL-terminated string.
            let name = unsafe { std::ffi::CStr::from_ptr(ovl_status_name(i as c_int)) };
            assert_eq!(name.to_str().unwrap(), format!("{s:?}"));
        }
        // SAFETY: as above.
        let unknown = unsafe { std::ffi::CStr::from_ptr(ovl_status_name(99)) };
        assert_eq!(unknown, c"OVL_UNKNOWN");
    }
}
