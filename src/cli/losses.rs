//! `firempo losses`: the loss playground from the command line.

use std::path::PathBuf;

use clap::Args;
use firempo_losses::Metric;

use super::owned_dir::claim_output_dir;
use super::LossArgs;
use crate::backend::{require_compiled, run_on, BackendKind};
use crate::playground::PlaygroundConfig;
use crate::train::{interrupt, run_dir_entries, TrainerConfig};

/// Options of `firempo losses`.
#[derive(Debug, Clone, Args)]
pub struct LossesArgs {
    #[command(flatten)]
    pub loss: LossArgs,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
    /// Preference pairs in the playground "dataset".
    #[arg(long, default_value_t = 16)]
    pub pairs: usize,
    /// Pairs per micro-batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Tokens per answer.
    #[arg(long, default_value_t = 16)]
    pub answer_len: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 1000)]
    pub vocab: usize,
    /// Optimizer steps.
    #[arg(long, default_value_t = 40)]
    pub steps: usize,
    /// Peak AdamW learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f64,
    /// Linear warmup steps before the cosine decay.
    #[arg(long, default_value_t = 4)]
    pub warmup: usize,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 20)]
    pub checkpoint_every: usize,
    /// Seed of the random reference, data order and RNG.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Run directory for metrics.jsonl, metrics.csv and checkpoints.
    #[arg(long, default_value = "runs/losses")]
    pub out: PathBuf,
    /// Continue from the newest checkpoint in --out (otherwise a previous playground run there is
    /// replaced; a folder holding anything else is refused, never deleted).
    #[arg(long)]
    pub resume: bool,
    /// Print metrics every N steps.
    #[arg(long, default_value_t = 10)]
    pub every: usize,
}

const COLUMNS: [Metric; 7] = [
    Metric::Loss,
    Metric::RewardAccuracy,
    Metric::RewardMargin,
    Metric::ForwardKl,
    Metric::ReverseKl,
    Metric::VisualMargin,
    Metric::ChosenLogps,
];

pub fn run(args: LossesArgs) -> anyhow::Result<()> {
    let loss = args.loss.to_loss()?;
    require_compiled(args.backend)?;
    println!(
        "loss playground: {} on {} ({} pairs x {} tokens, vocab {}), {} steps, lr {}, run dir {}",
        serde_json::to_string(&loss)?,
        args.backend,
        args.pairs,
        args.answer_len,
        args.vocab,
        args.steps,
        args.lr,
        args.out.display()
    );
    let trainer = TrainerConfig {
        steps: args.steps,
        micro_batch_size: args.batch,
        grad_accum: args.grad_accum,
        lr: args.lr,
        warmup_steps: args.warmup,
        max_grad_norm: Some(args.max_grad_norm),
        checkpoint_every: args.checkpoint_every,
        seed: args.seed,
        ..TrainerConfig::default()
    };
    if !args.resume {
        let removed = claim_output_dir(&args.out, "losses", &run_dir_entries())?;
        if !removed.is_empty() {
            println!(
                "replacing the previous playground run in {}",
                args.out.display()
            );
        }
    }
    interrupt::install_ctrl_c_handler();
    let config = PlaygroundConfig {
        loss,
        pairs: args.pairs,
        answer_len: args.answer_len,
        vocab: args.vocab,
        trainer,
        run_dir: args.out.clone(),
        resume: args.resume,
    };
    let outcome = run_on(args.backend, config)?;
    let header: Vec<String> = COLUMNS
        .iter()
        .map(|m| format!("{:>22}", m.name()))
        .collect();
    println!("{:>5}{}", "step", header.join(""));
    let every = args.every.max(1);
    for row in &outcome.rows {
        let step = row.get("step").copied().unwrap_or(0.0) as usize;
        if !step.is_multiple_of(every) && step != 1 && step != outcome.steps_done {
            continue;
        }
        let cells: Vec<String> = COLUMNS
            .iter()
            .map(|m| {
                row.get(m.name())
                    .map_or_else(|| format!("{:>22}", "-"), |v| format!("{v:>22.5}"))
            })
            .collect();
        println!("{step:>5}{}", cells.join(""));
    }
    let checkpoint = outcome
        .last_checkpoint
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    if outcome.interrupted {
        println!(
            "interrupted after step {}; resume with --resume (checkpoint {checkpoint})",
            outcome.steps_done
        );
    } else {
        println!(
            "metrics: {0}/metrics.jsonl, {0}/metrics.csv; checkpoint {checkpoint}",
            args.out.display()
        );
    }
    Ok(())
}
