//! `overlay-host`: one host of an overlay cluster, driven by JSON lines on standard input.
//!
//! ```sh
//! overlay-host --config '{"store":"etcd://127.0.0.1:2379","advertise":"eth0"}'
//! ```
//!
//! It opens a controller (and so runs this host's agent), prints
//! `{"ready":{"host":ID,"advertise":IP}}` (or, when the controller cannot be opened,
//! `{"error":{"kind":…,"message":…}}` and exits with 1), then answers each request line of
//! `overlay_core::rpc` with one response line, until standard input closes; then it
//! closes the controller (connected containers keep their kernel state). Logs go to standard
//! error, filtered by `RUST_LOG`. Test rigs run one per simulated host.

use std::process::ExitCode;

use overlay::rpc::WireError;
use overlay::{Controller, ControllerOptions};
use tokio::io::{AsyncWriteExt, BufReader};

async fn run(config: &str) -> overlay::Result<()> {
    let mut out = tokio::io::stdout();
    let io = |e| overlay::Error::io("overlay-host", "standard output", e);
    let opened = match serde_json::from_str::<ControllerOptions>(config) {
        Ok(opts) => Controller::open(opts).await,
        Err(e) => Err(overlay::Error::invalid(
            "parse config",
            format!("--config is not valid: {e}"),
        )
        .with_hint("pass the controller options as one JSON object")),
    };
    let ctl = match opened {
        Ok(ctl) => ctl,
        Err(e) => {
            // The rig reads the first line: a failure to start is an answer too.
            let line = serde_json::json!({ "error": WireError::from(&e) });
            let _ = out.write_all(format!("{line}\n").as_bytes()).await;
            let _ = out.flush().await;
            return Err(e);
        }
    };
    let ready = serde_json::json!({"ready": {"host": ctl.host_id(), "advertise": ctl.advertise()}});
    out.write_all(format!("{ready}\n").as_bytes())
        .await
        .map_err(io)?;
    out.flush().await.map_err(io)?;
    let served = ctl
        .serve_lines(BufReader::new(tokio::io::stdin()), out)
        .await;
    let closed = ctl.close().await;
    served.map_err(|e| overlay::Error::io("overlay-host", "standard input or output", e))?;
    closed
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match args.as_slice() {
        [flag, config] if flag == "--config" => config.clone(),
        _ => {
            eprintln!("usage: overlay-host --config JSON");
            return ExitCode::from(2);
        }
    };
    match run(&config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("overlay-host: {e}");
            ExitCode::FAILURE
        }
    }
}
