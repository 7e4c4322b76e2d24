//! Not implemented yet.
use std::process::ExitCode;

/// Subcommands (none yet).
#[derive(clap::Subcommand)]
pub enum Command {}

/// Runs a subcommand.
pub fn run(cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {}
}
