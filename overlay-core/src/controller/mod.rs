//! The facade: networks and endpoints. What the C and Python faces wrap.

pub mod inspect;
pub mod spec;
