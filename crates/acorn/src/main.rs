//! `acorn`: the command-line tool for Acorn Pups device identity, NVS partition images,
//! the device agent, the local dev stack and the demo.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backend;
mod certs;
mod cli;
mod demo;
mod dev;
mod device;
mod image_file;
mod nvs;
mod provision;
mod sim;

/// Device identity, NVS images and MQTT for Acorn Pups devices.
#[derive(Parser)]
#[command(name = "acorn", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Make, inspect and edit ESP-IDF NVS partition images.
    #[command(subcommand)]
    Nvs(nvs::Command),
    /// Check, import, show and provision device certificates.
    #[command(subcommand)]
    Certs(certs::Command),
    /// Run a device agent, ping a broker, register a device.
    #[command(subcommand)]
    Device(device::Command),
    /// Local development stack: registration backend and broker.
    #[command(subcommand)]
    Dev(dev::Command),
    /// Run the whole system on this machine: CA, broker, backend and simulated devices.
    Demo(demo::Args),
    /// The registration service in production: `acorn backend serve [--config FILE]`.
    #[command(subcommand)]
    Backend(backend::Command),
    /// Simulate a fleet of devices (thousands of real mutual-TLS connections) and account
    /// for every press end to end, optionally under chaos.
    Sim(Box<sim::Args>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Nvs(cmd) => nvs::run(cmd),
        Command::Certs(cmd) => certs::run(cmd),
        Command::Device(cmd) => device::run(cmd),
        Command::Dev(cmd) => dev::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Backend(cmd) => backend::run(cmd),
        Command::Sim(args) => sim::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(1)
        }
    }
}
