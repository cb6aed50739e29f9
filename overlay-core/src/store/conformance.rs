//! The conformance suite every [`KvStore`](super::KvStore) backend must pass.
