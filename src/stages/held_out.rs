//! Held-out reward accuracy during alignment: every K optimizer steps (and after the last) the
//! policy scores pairs it never trains on, and the run's metrics log gets the fraction whose DPO
//! implicit reward margin `β[(log π(y+) − log π_ref(y+)) − (log π(y−) − log π_ref(y−))]` is > 0,
//! and the mean margin. The reference log-probs (the adapters-off model or the frozen copy) are
//! computed once, before training. The curve shows when the policy starts to prefer `y+` on new
//! images; the demo plots it in `training_curves.png`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use firempo_datasets::{read_pairs_jsonl, BadRecordPolicy};
use firempo_losses::LossOutput;
use serde::{Deserialize, Serialize};

use super::align::{pair_logps, reward_margins};
use crate::pipeline::align::{align_examples, AlignExample};
use crate::pipeline::file_processor::FileProcessor;
use crate::pipeline::model::Model;
use crate::train::metrics_log::MetricRow;
use crate::train::{CheckpointedLoss, Objective};

/// Metrics-log key of the held-out reward accuracy (a fraction in [0, 1]).
pub const HELD_OUT_ACC: &str = "held_out/reward_acc";
/// Metrics-log key of the held-out pairs' mean reward margin.
pub const HELD_OUT_MARGIN: &str = "held_out/margin";
/// Metrics-log key of the seconds one held-out evaluation took (its cost).
pub const HELD_OUT_SECONDS: &str = "held_out/seconds";
/// Metrics-log key (first evaluated row) of the seconds the reference log-probs took, once.
pub const HELD_OUT_REFERENCE_SECONDS: &str = "held_out/reference_seconds";

/// Pairs scored during alignment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldOutPairs {
    /// Pairs JSONL (image paths relative to its folder), none of them trained on.
    pub pairs: PathBuf,
    /// Evaluate after every `every`-th optimizer step, and after the last.
    pub every: usize,
    /// β of the implicit reward.
    pub beta: f64,
}

/// Scores the held-out pairs with the policy at the due steps.
pub struct HeldOutProbe<'a> {
    processor: &'a FileProcessor,
    examples: Vec<AlignExample>,
    reference: Vec<[f64; 2]>,
    reference_seconds: f64,
    every: usize,
    last_step: usize,
    beta: f64,
}

/// Pairs per forward pass of the probe.
const PROBE_BATCH: usize = 32;

impl<'a> HeldOutProbe<'a> {
    /// Reads and tokenizes the pairs and scores them once with `reference`.
    pub fn new<B: AutodiffBackend>(
        config: &HeldOutPairs,
        processor: &'a FileProcessor,
        reference: &Model<B::InnerBackend>,
        last_step: usize,
        device: &B::Device,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            config.every > 0,
            "held-out pairs {}: `every` must be >= 1 (evaluate every N optimizer steps)",
            config.pairs.display()
        );
        let pairs = read_pairs_jsonl(&config.pairs, BadRecordPolicy::Stop)
            .with_context(|| format!("reading the held-out pairs {}", config.pairs.display()))?
            .items;
        anyhow::ensure!(
            !pairs.is_empty(),
            "{} holds no held-out pairs",
            config.pairs.display()
        );
        let root = config.pairs.parent().unwrap_or(Path::new("."));
        let examples = align_examples(processor, &pairs, root)?;
        let started = Instant::now();
        let reference = pair_logps(reference, processor, &examples, PROBE_BATCH, device)
            .context("scoring the held-out pairs with the reference")?;
        Ok(Self {
            processor,
            examples,
            reference,
            reference_seconds: started.elapsed().as_secs_f64(),
            every: config.every,
            last_step,
            beta: config.beta,
        })
    }

    /// The held-out metrics after `step` when it is due (every `every`-th step and the last),
    /// else none.
    pub fn metrics<B: AutodiffBackend>(
        &self,
        policy: &Model<B>,
        step: usize,
        device: &B::Device,
    ) -> anyhow::Result<MetricRow> {
        let mut row = MetricRow::new();
        if !step.is_multiple_of(self.every) && step != self.last_step {
            return Ok(row);
        }
        let started = Instant::now();
        let logps = pair_logps(
            &policy.valid(),
            self.processor,
            &self.examples,
            PROBE_BATCH,
            device,
        )
        .with_context(|| format!("scoring the held-out pairs after step {step}"))?;
        let margins = reward_margins(&logps, &self.reference, self.beta);
        let n = margins.len() as f64;
        let right = margins.iter().filter(|&&m| m > 0.0).count() as f64;
        row.insert(HELD_OUT_ACC.into(), right / n);
        row.insert(HELD_OUT_MARGIN.into(), margins.iter().sum::<f64>() / n);
        row.insert(HELD_OUT_SECONDS.into(), started.elapsed().as_secs_f64());
        if step <= self.every.min(self.last_step) {
            row.insert(HELD_OUT_REFERENCE_SECONDS.into(), self.reference_seconds);
        }
        Ok(row)
    }
}

/// An objective with an optional held-out probe logged through [`Objective::step_metrics`].
pub struct WithHeldOut<'a, B: AutodiffBackend, O> {
    /// The trained objective (unchanged: the probe never touches gradients or the RNG).
    pub inner: O,
    pub probe: Option<HeldOutProbe<'a>>,
    pub device: B::Device,
}

impl<B: AutodiffBackend, O: Objective<B, Model = Model<B>>> Objective<B> for WithHeldOut<'_, B, O> {
    type Model = Model<B>;

    fn num_examples(&self) -> usize {
        self.inner.num_examples()
    }

    fn loss(&self, model: &Model<B>, examples: &[usize]) -> anyhow::Result<LossOutput<B>> {
        self.inner.loss(model, examples)
    }

    fn loss_weight(&self, examples: &[usize]) -> f64 {
        self.inner.loss_weight(examples)
    }

    /// Data-parallel peers past 0 need no probe: only peer 0 logs [`Objective::step_metrics`].
    fn for_device(&self, device: &B::Device) -> anyhow::Result<Self> {
        Ok(Self {
            inner: self.inner.for_device(device)?,
            probe: None,
            device: device.clone(),
        })
    }

    fn checkpointed_loss(
        &self,
        model: &Model<B>,
        examples: &[usize],
    ) -> anyhow::Result<CheckpointedLoss<B>> {
        self.inner.checkpointed_loss(model, examples)
    }

    fn step_metrics(&self, model: &Model<B>, step: usize) -> anyhow::Result<MetricRow> {
        let mut row = self.inner.step_metrics(model, step)?;
        if let Some(probe) = &self.probe {
            row.extend(probe.metrics(model, step, &self.device)?);
        }
        Ok(row)
    }
}
