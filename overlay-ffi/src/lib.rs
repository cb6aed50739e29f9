//! C ABI of `overlay`, built as a `cdylib` and a `staticlib`, described by the cbindgen header
//! `include/overlay.h`.
//!
//! Conventions every function follows (repeated in the header):
//! - Fallible functions return an [`ovl_status`]; results come back through
//!   out-pointers, which are written only on success.
//! - Every exported body runs inside a panic boundary: a panic becomes `OVL_ERR_PANIC`, never an
//!   unwind into C or an abort.
//! - After a failure, [`ovl_last_error`] returns a message for this thread saying what was
//!   wrong and what to do about it.
//! - Each handle and each returned string or buffer has exactly one free function.
//! - Blocking calls run the library's async runtime on the caller's thread; they must not be
//!   made from a thread that runs a tokio runtime.

// Exported types carry their C names (`ovl_status`, `ovl_store`) so cbindgen writes the header
// in C style without renaming tables.
#![allow(non_camel_case_types)]

use std::ffi::c_char;

mod boundary;
mod runtime;

pub mod controller;
pub mod memory;
pub mod status;
pub mod store;
pub mod watch;

pub use status::ovl_status;

/// Version of the library, as `ovl_version` reports it.
pub const VERSION: &str = overlay_core::VERSION;

/// The library's version, e.g. `"0.1.0"`. The string is static: never free it.
#[unsafe(no_mangle)]
pub extern "C" fn ovl_version() -> *const c_char {
    boundary::run_value(c"".as_ptr(), || {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    })
}

/// The message of the last failed call on the calling thread, saying what was wrong and what
/// to do about it, e.g. `"ovl_store_create: store create: key \"a\" already exists (...)"`.
///
/// The string belongs to the library: never free it. It stays valid until the next failing
/// call on the same thread (successful calls leave it alone). Before any failure it is `""`;
/// it is never NULL.
#[unsafe(no_mangle)]
pub extern "C" fn ovl_last_error() -> *const c_char {
    boundary::run_value(c"".as_ptr(), boundary::last_error_ptr)
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;

    #[test]
    fn version_matches_the_core() {
        // SAFETY: ovl_version returns a static NUL-terminated string.
        let v = unsafe { CStr::from_ptr(super::ovl_version()) };
        assert_eq!(v.to_str().unwrap(), overlay_core::VERSION);
    }
}
