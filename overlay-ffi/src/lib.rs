//! C ABI of `overlay`. The exported functions arrive with the C ABI issue; until then this crate
//! only proves that the core links into a `cdylib` and a `staticlib`.

/// Version of the library, as the C ABI will report it through `ovl_version`.
pub const VERSION: &str = overlay_core::VERSION;
