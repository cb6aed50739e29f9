//! `overlay`: Docker-1.9-style multi-host overlay networking as a library.
//!
//! This crate is the workspace's front door: it re-exports [`overlay_core`], so embedders depend
//! on `overlay` and the examples and cross-crate tests live beside it.
//! See the README for a tour of the API.

pub use overlay_core::*;
