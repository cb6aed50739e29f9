//! The `overlay-cni` plugin binary: reads the runtime's environment and the network
//! configuration on stdin, prints the result (or the error object) on stdout.

use std::io::{Read, Write};
use std::process::ExitCode;

use overlay_cni::error::{CniError, Code};

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let outcome = match std::io::stdin().read_to_end(&mut stdin) {
        // A bug is still answered as CNI: an error object (internal, 110), never a bare
        // panic message the runtime cannot decode.
        Ok(_) => {
            std::panic::catch_unwind(|| overlay_cni::plugin::run(|k| std::env::var(k).ok(), &stdin))
                .unwrap_or_else(|_| {
                    Err(CniError {
                        cni_version: overlay_cni::CURRENT_VERSION.to_string(),
                        code: overlay_cni::error::code_for(overlay_core::ErrorKind::Internal),
                        msg: "the plugin failed on a bug".into(),
                        details: "please report it with the message printed on stderr".into(),
                    })
                })
        }
        Err(e) => Err(CniError::new(
            overlay_cni::CURRENT_VERSION,
            Code::Io,
            format!("cannot read the network configuration from stdin: {e}"),
            "the runtime feeds the configuration on stdin",
        )),
    };
    let (doc, status) = match outcome {
        Ok(None) => return ExitCode::SUCCESS,
        Ok(Some(doc)) => (doc, ExitCode::SUCCESS),
        Err(e) => {
            let status = ExitCode::from(e.exit_status());
            (serde_json::to_value(&e).unwrap_or_default(), status)
        }
    };
    let mut out = std::io::stdout().lock();
    // Nothing to do if the runtime closed stdout: it is not listening any more.
    let _ = writeln!(out, "{doc}");
    status
}
