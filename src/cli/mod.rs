//! Command-line interface: parses arguments, runs the chosen subcommand, reports errors.

mod info;
mod loss_args;
mod losses;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use loss_args::{LossArgs, Method};

/// Fine-grained, on-policy, visually grounded preference optimization for medical VLMs.
#[derive(Debug, Parser)]
#[command(name = "firempo", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the backends this binary was built with and the devices they find.
    Info,
    /// Optimize free answer logits with a preference loss and print how its metrics evolve.
    Losses(Box<losses::LossesArgs>),
}

/// Entry point of the binary: runs the command and turns errors into a message and exit code 1.
pub fn main() -> ExitCode {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Info => info::run(),
        Command::Losses(args) => losses::run(*args),
    }
}
