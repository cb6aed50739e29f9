//! `overlay`: Docker-1.9-style multi-host overlay networking as a library.
//!
//! This crate is the workspace's front door: it re-exports [`overlay_core`], so embedders depend
//! on `overlay` and the examples and cross-crate tests live beside it.
//! See the README for a tour of the API.

pub use overlay_core::*;

// The README's Rust blocks are doctests of this crate, so its tour cannot drift from the API
// (`scripts/check-docs` fails on a Rust block in a file not included here).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
