//! Not implemented yet.
use std::process::ExitCode;

/// Demo options.
#[derive(clap::Args)]
pub struct Args {}

/// Runs the demo.
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("the demo is not implemented yet")
}
