//! `acorn backend serve`: the registration service in production, configured by a TOML file
//! and `ACORN_*` environment variables (see `acorn_backend::config` and `docs/deploy.md`).
//! Secrets come from files or the environment, never from this command line. Logs are JSON
//! lines on stderr (or text); SIGTERM (or Ctrl-C) drains: `/v1/ready` answers 503 for
//! `drain_seconds`, then the listener closes and requests in flight finish (at most 10 s).

use std::path::PathBuf;
use std::process::ExitCode;

use acorn_backend::config::{LogFormat, ServeConfig};
use acorn_backend::Backend;
use anyhow::{Context, Result};
use clap::{Args, Subcommand};

/// `acorn backend …`
#[derive(Subcommand)]
pub enum Command {
    /// Run the registration service (HTTP API, registry, signer) until SIGTERM.
    ///
    /// Every setting is a key of the TOML file and an ACORN_* environment variable (the
    /// variable wins): ACORN_LISTEN, ACORN_DATABASE_URL (sqlite:PATH or postgres://…),
    /// ACORN_SIGNER (local or aws), ACORN_DATA_DIR, ACORN_ADMIN_KEY_FILE,
    /// ACORN_AWS_POLICY_NAME, … (docs/deploy.md lists them all).
    Serve(ServeArgs),
}

/// Arguments of `acorn backend serve`.
#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file (optional; ACORN_* variables override it).
    #[arg(long, value_name = "FILE", env = "ACORN_CONFIG")]
    pub config: Option<PathBuf>,
}

/// Runs an `acorn backend` command.
pub fn run(cmd: Command) -> Result<ExitCode> {
    match cmd {
        Command::Serve(args) => serve(args),
    }
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let mut config = ServeConfig::load(args.config.as_deref(), &|name| std::env::var(name).ok())
        .context("acorn backend serve: the configuration is not usable")?;
    if config.console {
        config.backend.console = Some(acorn_console::Console::new().mount());
    }
    crate::cli::init_logs("info", config.log_format == LogFormat::Json);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let drain = config.drain;
        let backend = Backend::start(config.backend)
            .await
            .context("acorn backend serve: the service did not start")?;
        tracing::info!(
            url = %backend.base_url(),
            registry = %backend.registry().describe(),
            signer = backend.signer_name(),
            schema_version = backend.registry().schema_version().await.unwrap_or(0),
            "acorn backend serving"
        );
        wait_for_stop_signal().await?;
        backend.begin_drain();
        tokio::time::sleep(drain).await;
        tracing::info!("shutting down: closing the listener, finishing requests in flight");
        backend
            .shutdown()
            .await
            .context("the service did not shut down cleanly")?;
        tracing::info!("stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Waits for SIGTERM (orchestrators, systemd) or SIGINT (Ctrl-C).
async fn wait_for_stop_signal() -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "stop requested: draining");
    Ok(())
}
