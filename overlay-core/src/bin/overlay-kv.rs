//! `overlay-kv`: a small tool to look at and poke a cluster store, and the second process of the
//! store conformance suite's cross-process checks.
//!
//! ```text
//! overlay-kv URL get KEY
//! overlay-kv URL put KEY VALUE
//! overlay-kv URL delete KEY
//! overlay-kv URL list [PREFIX]
//! overlay-kv URL watch PREFIX [--from VERSION] [--count N]   prints "ready", then one line per event
//! overlay-kv URL hold KEY VALUE      puts an ephemeral key, prints "ready VERSION", holds it
//!                                    until standard input closes, then closes the session
//! overlay-kv URL incr KEY N [--report]   N compare-and-swap increments of a decimal counter
//!                                        (--report: each committed count on a line of its own)
//! ```
//! Exit codes: 0 success, 1 failure (message on stderr), 2 usage error.

use std::process::ExitCode;

use overlay_core::store::{self, conformance};
use tokio::io::AsyncReadExt;

const USAGE: &str = "usage: overlay-kv URL (get KEY | put KEY VALUE | delete KEY | list [PREFIX] \
                     | watch PREFIX [--from VERSION] [--count N] | hold KEY VALUE | incr KEY N [--report])";

enum Failure {
    Usage(String),
    Store(overlay_core::Error),
}

impl From<overlay_core::Error> for Failure {
    fn from(e: overlay_core::Error) -> Self {
        Failure::Store(e)
    }
}

fn number(what: &str, s: &str) -> Result<u64, Failure> {
    s.parse()
        .map_err(|_| Failure::Usage(format!("{what} must be a number, not {s:?}")))
}

async fn run(args: Vec<String>) -> Result<(), Failure> {
    let usage = || Failure::Usage(USAGE.to_string());
    let (url, cmd) = match args.as_slice() {
        [url, cmd, ..] => (url.as_str(), cmd.as_str()),
        _ => return Err(usage()),
    };
    let rest: Vec<&str> = args[2..].iter().map(String::as_str).collect();
    let store = store::connect_str(url).await?;
    let result = async {
        match (cmd, rest.as_slice()) {
            ("get", [key]) => match store.get(key).await? {
                Some(kv) => println!("{} {}", kv.version, String::from_utf8_lossy(&kv.value)),
                None => {
                    return Err(Failure::Store(overlay_core::Error::new(
                        overlay_core::ErrorKind::NotFound,
                        "get",
                        format!("no key {key:?}"),
                    )));
                }
            },
            ("put", [key, value]) => println!("{}", store.put(key, value.as_bytes()).await?),
            ("delete", [key]) => println!("{}", store.delete(key).await?),
            ("list", prefix) if prefix.len() <= 1 => {
                let listing = store.list(prefix.first().copied().unwrap_or("")).await?;
                for kv in listing.kvs {
                    println!(
                        "{} {} {}",
                        kv.key,
                        kv.version,
                        String::from_utf8_lossy(&kv.value)
                    );
                }
            }
            ("watch", [prefix, opts @ ..]) => {
                let (mut from, mut count) = (None, None);
                let mut it = opts.iter();
                while let Some(opt) = it.next() {
                    let val = it.next().ok_or_else(usage)?;
                    match *opt {
                        "--from" => from = Some(number("--from", val)?),
                        "--count" => count = Some(number("--count", val)?),
                        _ => return Err(usage()),
                    }
                }
                let mut watch = store.watch(prefix, from).await?;
                println!("ready");
                let mut seen = 0;
                while count.is_none_or(|c| seen < c) {
                    match watch.next().await {
                        Some(ev) => println!("{}", conformance::event_line(&ev?)),
                        None => break,
                    }
                    seen += 1;
                }
            }
            ("hold", [key, value]) => {
                let version = store.put_ephemeral(key, value.as_bytes()).await?;
                println!("ready {version}");
                // Hold until our stdin closes (the parent went away or asked us to stop).
                let mut sink = Vec::new();
                let _ = tokio::io::stdin().read_to_end(&mut sink).await;
            }
            ("incr", [key, n, flags @ ..]) if flags.iter().all(|f| *f == "--report") => {
                let report = !flags.is_empty();
                for _ in 0..number("N", n)? {
                    let count = conformance::cas_increment(store.as_ref(), key).await?;
                    if report {
                        println!("{count}");
                    }
                }
                println!("done");
            }
            _ => return Err(usage()),
        }
        Ok(())
    }
    .await;
    let closed = store.close().await;
    result?;
    Ok(closed?)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(msg)) => {
            eprintln!("overlay-kv: {msg}");
            ExitCode::from(2)
        }
        Err(Failure::Store(e)) => {
            eprintln!("overlay-kv: {e}");
            ExitCode::FAILURE
        }
    }
}
