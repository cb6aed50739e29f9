//! Shell completions and man pages, generated from the clap definition.

use std::io::Write;
use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::failure::{CliResult, Failure};

/// Prints the completion script for `shell`.
pub(crate) fn completions(shell: clap_complete::Shell) {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "overlayctl", &mut std::io::stdout());
}

/// Prints the main man page, or writes one page per command into `dir`.
pub(crate) fn man(dir: Option<&Path>) -> CliResult {
    let cmd = Cli::command();
    match dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(cmd, dir))
            .map_err(|e| {
                Failure::failed(format!(
                    "man: cannot write pages into {}: {e} (pick a writable --dir)",
                    dir.display()
                ))
            }),
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut out)
                .and_then(|()| std::io::stdout().write_all(&out))
                .map_err(|e| Failure::failed(format!("man: cannot print the page: {e}")))
        }
    }
}
