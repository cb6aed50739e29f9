//! The Consul backend. No Consul package exists for this build machine, so the tests against a
//! real agent are `#[ignore]`d (cargo reports them as ignored, never as passed) and run with
//! `OVERLAY_TEST_CONSUL=host:port cargo test -p overlay-core --test store_consul -- --ignored`
//! against an agent such as `consul agent -dev`. The check that needs no agent (an unreachable
//! agent fails fast) always runs.

mod common;

use std::time::Duration;

use overlay_core::store::conformance::{self, PeerProcess};
use overlay_core::store::{self, KvStore};

/// Why the agent tests are ignored by default.
const NEEDS_AGENT: &str =
    "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored";

/// The agent's address; fails the test when none is named (it was run with `--ignored`).
fn agent() -> String {
    match std::env::var("OVERLAY_TEST_CONSUL") {
        Ok(a) if !a.trim().is_empty() => a.trim().to_string(),
        _ => overlay_testkit::missing("a Consul agent", NEEDS_AGENT),
    }
}

fn url(agent: &str) -> String {
    // Consul's shortest session TTL is 10 s.
    format!(
        "consul://{agent}/{}?timeout=5s&ttl=10s",
        overlay_testkit::unique_prefix()
    )
}

async fn open(url: &str) -> std::sync::Arc<dyn KvStore> {
    store::connect_str(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored"]
async fn conformance_suite() {
    let agent = agent();
    let store = open(&url(&agent)).await;
    conformance::run_all(&*store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored"]
async fn ephemeral_keys() {
    let agent = agent();
    let u = url(&agent);
    let observer = open(&u).await;
    conformance::ephemeral_removed_on_close(&*observer, open(&u).await).await;
    let peer = PeerProcess {
        exe: env!("CARGO_BIN_EXE_overlay-kv").into(),
        url: u.clone(),
    };
    // Consul invalidates a session between TTL and twice the TTL after its last renewal.
    conformance::ephemeral_removed_when_owner_killed(&*observer, &peer, Duration::from_secs(20))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Consul agent: set OVERLAY_TEST_CONSUL=host:port, run with --ignored"]
async fn across_processes() {
    let agent = agent();
    let u = url(&agent);
    let store = open(&u).await;
    let peer = PeerProcess {
        exe: env!("CARGO_BIN_EXE_overlay-kv").into(),
        url: u,
    };
    conformance::watch_across_processes(&*store, &peer).await;
    conformance::cas_race_across_processes(&*store, &peer, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_agent_fails_fast() {
    common::unreachable_server_fails_fast("consul").await;
}
