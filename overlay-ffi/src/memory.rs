//! Freeing what the library hands out: each kind of result has exactly one free function.

use std::ffi::{CString, c_char};

use crate::boundary;

/// Frees a string returned through a `char **` out-parameter (JSON documents, addresses).
/// NULL is a no-op. Never pass a string from elsewhere, or free one twice.
///
/// # Safety
/// `s` is NULL or a string this library returned and that was not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_string_free(s: *mut c_char) {
    boundary::run_value((), || {
        if !s.is_null() {
            // SAFETY: the caller passes a string made by CString::into_raw in this library.
            drop(unsafe { CString::from_raw(s) });
        }
    });
}

/// Frees a byte buffer returned through a `uint8_t **` out-parameter, with the length
/// returned alongside it. NULL is a no-op (an empty value is returned as NULL with length 0).
///
/// # Safety
/// `ptr` is NULL or a buffer this library returned with length `len`, not freed yet.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn ovl_bytes_free(ptr: *mut u8, len: usize) {
    boundary::run_value((), || {
        if !ptr.is_null() {
            // SAFETY: the caller passes a buffer made by `bytes_into_raw` with this length.
            drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) });
        }
    });
}

/// Hands a byte buffer to C: its pointer (NULL when empty) and length, freed by
/// [`ovl_bytes_free`].
pub(crate) fn bytes_into_raw(bytes: Vec<u8>) -> (*mut u8, usize) {
    if bytes.is_empty() {
        return (std::ptr::null_mut(), 0);
    }
    let len = bytes.len();
    (Box::into_raw(bytes.into_boxed_slice()).cast::<u8>(), len)
}
