//! Loss playground: trains free answer logits against a frozen reference with any preference
//! loss, through the real trainer (AdamW, schedule, clipping, checkpoints, metrics), so users can
//! watch each loss's dynamics (rewards, KL, visual margin) on any backend in seconds.
//!
//! The "policy" is a table of logits per answer variant (no model): chosen and rejected answers
//! differ only inside their edited phrase, as FiRe-MPO's minimal-edit pairs do.

use std::path::PathBuf;

use burn::module::{Module, Param};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use firempo_losses::{
    CorruptedAnswers, LossOutput, PreferenceBatch, PreferenceLoss, ReferenceScores, ScoredAnswer,
};

use crate::backend::BackendTask;
use crate::train::{train, Objective, RunIdentity, TrainOutcome, TrainerConfig};

/// Trainable policy logits of every variant, `[variants, pairs, answer_len, vocab]`, variants in
/// the order `(v,y+)`, `(v,y−)`, `(v',y+)`, `(v',y−)`.
#[derive(Module, Debug)]
pub struct LogitTable<B: Backend> {
    /// The policy logits.
    pub logits: Param<Tensor<B, 4>>,
}

/// A playground run: sizes, loss and trainer settings.
#[derive(Debug, Clone)]
pub struct PlaygroundConfig {
    /// The loss to optimize.
    pub loss: PreferenceLoss,
    /// Preference pairs (the "dataset").
    pub pairs: usize,
    /// Answer tokens per answer.
    pub answer_len: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Optimization settings (`micro_batch_size` pairs per step).
    pub trainer: TrainerConfig,
    /// Where metrics and checkpoints go.
    pub run_dir: PathBuf,
    /// Continue from the newest checkpoint in `run_dir`.
    pub resume: bool,
}

/// The frozen inputs: reference logits, labels and phrase ids.
pub struct Playground<B: Backend> {
    loss: PreferenceLoss,
    reference: Tensor<B, 4>,
    labels: [Tensor<B, 2, Int>; 2],
    phrase_ids: [Tensor<B, 2, Int>; 2],
}

impl<B: Backend> Playground<B> {
    /// Random references (seeded) and answers that differ only in their middle token.
    pub fn new(config: &PlaygroundConfig, device: &B::Device) -> (Self, LogitTable<B>) {
        B::seed(device, config.trainer.seed);
        let (n, t, v) = (config.pairs, config.answer_len, config.vocab);
        let clean = Tensor::<B, 4>::random([2, n, t, v], Distribution::Normal(0.0, 2.0), device);
        // The corrupted image shifts the reference a little.
        let corrupted =
            clean.clone() + Tensor::random([2, n, t, v], Distribution::Normal(0.0, 1.0), device);
        let reference = Tensor::cat(vec![clean, corrupted], 0); // [variants, pairs, answer_len, vocab]
        let chosen: Vec<i64> = (0..n * t).map(|i| ((i * 7 + 3) % v) as i64).collect();
        let phrase_at = t / 2;
        let rejected: Vec<i64> = chosen
            .iter()
            .enumerate()
            .map(|(i, &tok)| {
                if i % t == phrase_at {
                    (tok + 1) % v as i64
                } else {
                    tok
                }
            })
            .collect();
        let phrase: Vec<i64> = (0..n * t).map(|i| i64::from(i % t == phrase_at)).collect();
        let int = |values: Vec<i64>| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(values, [n, t]), device)
        };
        let table = LogitTable {
            logits: Param::from_tensor(reference.clone()),
        };
        let playground = Self {
            loss: config.loss,
            reference,
            labels: [int(chosen), int(rejected)],
            phrase_ids: [int(phrase.clone()), int(phrase)],
        };
        (playground, table)
    }

    fn batch(&self, policy: Tensor<B, 4>, examples: &[usize]) -> PreferenceBatch<B> {
        let device = policy.device();
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(
                examples.iter().map(|&e| e as i64).collect::<Vec<_>>(),
                [examples.len()],
            ),
            &device,
        );
        let pick = |table: &Tensor<B, 4>, variant: usize| -> Tensor<B, 3> {
            let [_, n, t, v] = table.dims();
            table
                .clone()
                .narrow(0, variant, 1)
                .reshape([n, t, v]) // [pairs, answer_len, vocab]
                .select(0, index.clone())
        };
        let answer = |variant: usize| {
            let side = variant % 2;
            let labels = self.labels[side].clone().select(0, index.clone());
            ScoredAnswer {
                policy_logits: pick(&policy, variant),
                reference: ReferenceScores::Logits(pick(&self.reference, variant)),
                answer_mask: labels.ones_like().float(),
                labels,
                phrase_ids: self.phrase_ids[side].clone().select(0, index.clone()),
            }
        };
        PreferenceBatch {
            chosen: answer(0),
            rejected: answer(1),
            corrupted: Some(CorruptedAnswers {
                chosen: answer(2),
                rejected: Some(answer(3)),
                present: Tensor::ones([examples.len()], &device),
            }),
        }
    }
}

impl<B: AutodiffBackend> Objective<B> for Playground<B> {
    type Model = LogitTable<B>;

    fn num_examples(&self) -> usize {
        self.labels[0].dims()[0]
    }

    fn loss(&self, model: &LogitTable<B>, examples: &[usize]) -> anyhow::Result<LossOutput<B>> {
        Ok(self.loss.loss(self.batch(model.logits.val(), examples))?)
    }
}

impl PlaygroundConfig {
    /// What defines a playground run (checked on `--resume`).
    fn identity(&self) -> RunIdentity {
        RunIdentity::new("losses")
            .with("loss", self.loss)
            .with("pairs", self.pairs)
            .with("answer_len", self.answer_len)
            .with("vocab", self.vocab)
    }
}

impl BackendTask for PlaygroundConfig {
    type Output = TrainOutcome<()>;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<TrainOutcome<()>> {
        self.loss.validate()?;
        anyhow::ensure!(
            self.pairs > 0 && self.answer_len > 1 && self.vocab > 1,
            "pairs must be > 0, answer length and vocabulary at least 2"
        );
        let (playground, table) = Playground::<B>::new(&self, &device);
        let outcome = train(
            &self.trainer,
            &playground,
            table,
            &self.run_dir,
            self.resume,
            &self.identity(),
            &device,
        )?;
        Ok(TrainOutcome {
            model: (),
            steps_done: outcome.steps_done,
            last_checkpoint: outcome.last_checkpoint,
            interrupted: outcome.interrupted,
            rows: outcome.rows,
        })
    }
}
