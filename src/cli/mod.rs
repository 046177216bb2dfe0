//! Command-line interface: parses arguments, runs the chosen subcommand, reports errors.

mod convert;
mod forward;
mod info;
mod loss_args;
mod losses;
mod owned_dir;
mod stages;

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
    /// Run the whole pipeline on synthetic data: synth, SFT, sample, pairs, align (each method), eval.
    Demo(stages::DemoArgs),
    /// Show the backends this binary was built with and the devices they find.
    Info,
    /// Optimize free answer logits with a preference loss and print how its metrics evolve.
    Losses(Box<losses::LossesArgs>),
    /// Generate the synthetic lesion benchmark (images, masks, questions, reports).
    Synth(stages::SynthArgs),
    /// Convert SLAKE, VQA-RAD or IU-Xray (R2Gen layout) to firempo records, one JSONL per split.
    Convert(convert::ConvertArgs),
    /// Supervised fine-tuning on records (the demo's tiny VLM from scratch, a model directory or
    /// a HuggingFace LLaVA checkpoint).
    Sft(Box<stages::SftArgs>),
    /// On-policy samples: the model's own greedy answers to records' questions.
    Sample(Box<stages::SampleArgs>),
    /// Minimal-edit preference pairs from samples and ground truth, with lesion-corrupted images.
    Pairs(Box<stages::PairsArgs>),
    /// Preference alignment (DPO, RRPO, mDPO, FiRe-MPO) of a model or HF checkpoint on pairs.
    Align(Box<stages::AlignArgs>),
    /// Evaluate a model or HF checkpoint on test records (accuracy, recall, reports, visual
    /// sensitivity).
    Eval(Box<stages::EvalArgs>),
    /// One forward pass on a HF processor's tensors; writes the logits and compares them with a
    /// reference (check a checkpoint or adapter against transformers).
    Forward(Box<forward::ForwardArgs>),
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
        Command::Demo(args) => stages::demo(args),
        Command::Info => info::run(),
        Command::Losses(args) => losses::run(*args),
        Command::Synth(args) => stages::synth(args),
        Command::Convert(args) => convert::run(args),
        Command::Sft(args) => stages::sft(*args),
        Command::Sample(args) => stages::sample(*args),
        Command::Pairs(args) => stages::pairs(*args),
        Command::Align(args) => stages::align(*args),
        Command::Eval(args) => stages::eval(*args),
        Command::Forward(args) => forward::run(*args),
    }
}
