//! `firempo align`: preference alignment of a model directory on preference pairs with DPO, RRPO,
//! mDPO or FiRe-MPO (LoRA by default, the reference being the adapters-off model); writes a model
//! directory with the adapters merged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use firempo_datasets::{read_pairs_jsonl, BadRecordPolicy, PreferencePair};
use firempo_losses::PreferenceLoss;
use firempo_models::precision::{check_full_finetune, WeightDType};
use firempo_models::LoraConfig;
use serde::{Deserialize, Serialize};

use super::data::read_records;
use super::held_out::{HeldOutProbe, WithHeldOut};
use super::{train_into_model_dir, WeightsOutput};
use crate::backend::BackendTask;
use crate::pipeline::align::{
    align_examples, answer_label_logps, reference_model, whole_answer_spans, AlignExample,
    AlignObjective, PairImage, Reference,
};
use crate::pipeline::file_processor::FileProcessor;
use crate::pipeline::image_check::check_images;
use crate::pipeline::model::Model;
use crate::pipeline::model_dir::load_model_in;
use crate::pipeline::reference_cache::ReferenceCache;
use crate::train::{check_resume, RunIdentity, TrainerConfig};

/// Settings of the alignment stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlignStage {
    /// Preference pairs (JSONL).
    pub pairs: PathBuf,
    /// Folder the pairs' image paths are relative to (default: the pairs file's folder).
    pub root: Option<PathBuf>,
    /// The model directory to align (usually the SFT output).
    pub model: PathBuf,
    /// Output model directory (the run's checkpoints go to `out/run`).
    pub out: PathBuf,
    /// The preference loss.
    pub loss: PreferenceLoss,
    /// LoRA adapters (None: full fine-tuning against a frozen copy).
    pub lora: Option<LoraConfig>,
    /// Keep the vision tower and projector frozen (the paper's setting).
    pub freeze_vision: bool,
    /// Off-policy DPO baseline: replace `y+` with the ground-truth answer of the pair's record,
    /// read from this records file (the setup the paper criticises).
    pub ground_truth_chosen: Option<PathBuf>,
    /// Optimization.
    pub trainer: TrainerConfig,
    /// Continue an interrupted run.
    pub resume: bool,
    /// LoRA runs: write the merged model (`model.mpk`) instead of the adapters and a reference
    /// to the starting model (`base.json`). Not part of the run's identity.
    #[serde(default)]
    pub merge: bool,
    /// Dtype of the decoder projections' frozen base weights (`--dtype`; bf16/f16 need a
    /// backend with half precision). Recorded in the run's identity unless f32.
    #[serde(default, skip_serializing_if = "super::is_f32")]
    pub dtype: WeightDType,
    /// Named prompt format (`--prompt-format`) for a HF checkpoint `model`, overriding its chat
    /// template; `None`: the checkpoint's template (or a model directory's own format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format: Option<String>,
    /// Pairs scored every K steps during training (held-out reward accuracy and margin in the
    /// run's metrics log, [`super::held_out`]); `None`: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_out: Option<super::held_out::HeldOutPairs>,
    /// Score the reference on every pair once, before training, into
    /// `out/run/reference_logps` ([`crate::pipeline::reference_cache`]; DPO and mDPO only), so
    /// the steps run the policy alone. Not part of the run's identity: the result is the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub precompute_reference: bool,
}

/// Reads pairs, optionally swapping `y+` for the ground truth.
fn read_pairs(stage: &AlignStage) -> anyhow::Result<Vec<PreferencePair>> {
    let loaded = read_pairs_jsonl(&stage.pairs, BadRecordPolicy::Skip)
        .with_context(|| format!("reading pairs from {}", stage.pairs.display()))?;
    if loaded.skipped > 0 {
        eprintln!(
            "warning: {}: skipped {} bad pairs; first problem: {}",
            stage.pairs.display(),
            loaded.skipped,
            loaded.problems[0]
        );
    }
    let mut pairs = loaded.items;
    anyhow::ensure!(
        !pairs.is_empty(),
        "{} holds no usable pairs",
        stage.pairs.display()
    );
    if let Some(records_path) = &stage.ground_truth_chosen {
        let records = read_records(records_path, BadRecordPolicy::Skip, None)?;
        let truth: HashMap<&str, &str> = records
            .records
            .iter()
            .map(|r| (r.id.as_str(), r.answer.as_str()))
            .collect();
        for pair in &mut pairs {
            let answer = truth.get(pair.record_id.as_str()).with_context(|| {
                format!(
                    "pair {} names record {} which {} lacks",
                    pair.id,
                    pair.record_id,
                    records_path.display()
                )
            })?;
            // Sequence-level losses ignore spans; whole-answer spans keep the pair valid.
            pair.chosen = answer.to_string();
            pair.chosen_spans = whole_answer_spans(answer);
        }
        // A ground truth equal to the rejected answer (or empty) leaves no preference to learn.
        let before = pairs.len();
        let mut first_problem = None;
        pairs.retain(|pair| match pair.validate() {
            Ok(()) => true,
            Err(why) => {
                first_problem.get_or_insert_with(|| format!("pair {}: {why}", pair.id));
                false
            }
        });
        if let Some(problem) = first_problem {
            eprintln!(
                "warning: skipped {} of {before} pairs whose ground-truth `chosen` from {} makes \
                 them invalid; first: {problem}",
                before - pairs.len(),
                records_path.display()
            );
        }
        anyhow::ensure!(
            !pairs.is_empty(),
            "no pair is left once `chosen` is replaced by the ground truth of {}",
            records_path.display()
        );
    }
    Ok(pairs)
}

/// Optimizer steps of `epochs` passes over `pairs` pairs at `global_batch` pairs per step:
/// `⌈pairs × epochs / global_batch⌉` (a last, partial batch still takes a step, as an epoch of a
/// PyTorch `DataLoader` without `drop_last` does).
pub fn steps_for_epochs(pairs: usize, epochs: usize, global_batch: usize) -> usize {
    (pairs * epochs).div_ceil(global_batch.max(1))
}

impl AlignStage {
    /// How many pairs this run trains on: the usable pairs of the file, after the ground-truth
    /// swap drops those it makes invalid (what an epoch counts).
    pub fn usable_pairs(&self) -> anyhow::Result<usize> {
        Ok(read_pairs(self)?.len())
    }

    /// Sets `trainer.steps` to `epochs` passes over the usable pairs; returns the pair count.
    pub fn train_epochs(&mut self, epochs: usize) -> anyhow::Result<usize> {
        let pairs = self.usable_pairs()?;
        let global = self.trainer.micro_batch_size * self.trainer.grad_accum;
        self.trainer.steps = steps_for_epochs(pairs, epochs, global);
        Ok(pairs)
    }

    /// What defines this run: its settings and digests of its pairs, model and ground truth.
    fn identity(&self) -> anyhow::Result<RunIdentity> {
        let identity = RunIdentity::of_stage("align", self)
            .without("merge")
            .without("precompute_reference")
            .without("pairs")
            .without("model")
            .without("ground_truth_chosen")
            .with_file_digest("pairs", &self.pairs)?
            .with_model_dir_digest("model", &self.model)?;
        match &self.ground_truth_chosen {
            Some(records) => identity.with_file_digest("ground_truth_chosen", records),
            None => Ok(identity.with("ground_truth_chosen", None::<String>)),
        }
    }

    /// What the reference's scores of the pairs depend on: the pairs (and ground truth), the
    /// model, where the images are, the base-weight dtype and the prompt format; not the
    /// trained part (the reference has no adapters) nor the loss's hyperparameters.
    fn reference_inputs(&self, root: &Path) -> anyhow::Result<RunIdentity> {
        let inputs = RunIdentity::new("reference-logps")
            .with_file_digest("pairs", &self.pairs)?
            .with_model_dir_digest("model", &self.model)?
            .with("root", root)
            .with("dtype", self.dtype)
            .with("prompt_format", &self.prompt_format);
        match &self.ground_truth_chosen {
            Some(records) => inputs.with_file_digest("ground_truth_chosen", records),
            None => Ok(inputs.with("ground_truth_chosen", None::<String>)),
        }
    }

    /// Refuses `--precompute-reference` for the losses whose KL reads the reference's whole
    /// distribution (not cached; README, "Pipeline stages", gives the measurement).
    fn check_precompute_reference(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.precompute_reference || !self.loss.reads_reference_distribution(),
            "--precompute-reference stores the reference's log-probs of the answer tokens, all \
             that DPO and mDPO read; {}'s KL term reads the reference's distribution over the \
             whole vocabulary at every {} token (128 KB per token at a 32k vocabulary, 608 KB \
             at 152k), which is not cached. Drop --precompute-reference for --method {}, or use \
             --method dpo or mdpo",
            self.loss.name(),
            match self.loss {
                PreferenceLoss::Rrpo(_) => "chosen-answer",
                _ => "edited-phrase",
            },
            self.loss.name()
        );
        Ok(())
    }
}

impl BackendTask for AlignStage {
    type Output = PathBuf;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<PathBuf> {
        self.loss.validate()?;
        if self.ground_truth_chosen.is_some() {
            anyhow::ensure!(
                !self.loss.reads_phrases(),
                "--ground-truth-chosen is the off-policy baseline of sequence-level losses (DPO, \
                 mDPO): the ground truth is not a minimal edit of the rejected answer, so it has \
                 no edited spans for {}'s phrase terms. Use --method dpo or mdpo with it, or drop it",
                self.loss.name()
            );
        }
        if self.lora.is_none() {
            check_full_finetune(self.dtype)?;
        }
        self.check_precompute_reference()?;
        let identity = self.identity()?;
        let weights = WeightsOutput::choose(self.lora.is_some(), self.merge, Some(&self.model))?;
        if self.resume {
            check_resume(&self.out.join("run"), &identity, &self.trainer)?;
        }
        let pairs = read_pairs(&self)?;
        let root = self.root.clone().unwrap_or_else(|| {
            self.pairs
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        });
        let (model, processor) = load_model_in::<B>(
            &self.model,
            self.prompt_format.as_deref(),
            self.dtype,
            &device,
        )?;
        let model = if self.freeze_vision {
            model.freeze_vision()
        } else {
            model
        };
        B::seed(&device, self.trainer.seed);
        let policy = match &self.lora {
            Some(lora) => model.with_lora(lora, &device)?,
            None => model,
        };
        let examples = align_examples(&processor, &pairs, &root)?;
        check_images(
            &self.pairs,
            pairs.iter().zip(&examples).flat_map(|(pair, example)| {
                std::iter::once(example.image.as_path())
                    .chain(example.corrupted_image.as_deref())
                    .map(|path| (format!("pair {}", pair.id), path))
            }),
        )?;
        let reference_model = reference_model(&policy);
        let probe = match &self.held_out {
            Some(held_out) => Some(HeldOutProbe::new::<B>(
                held_out,
                &processor,
                &reference_model,
                self.trainer.steps,
                &device,
            )?),
            None => None,
        };
        let reference = if self.precompute_reference {
            let cache = ReferenceCache::new(
                &self.out.join("run"),
                self.reference_inputs(&root)?,
                &self.loss,
                self.trainer.micro_batch_size,
            );
            let logps = cache.load_or_score(&reference_model, &processor, &examples, &device)?;
            Reference::Precomputed(std::sync::Arc::new(logps))
        } else {
            Reference::Model(reference_model)
        };
        let objective = AlignObjective::<B> {
            processor: &processor,
            examples,
            loss: self.loss,
            reference,
            device: device.clone(),
        };
        let objective = WithHeldOut {
            inner: objective,
            probe,
            device: device.clone(),
        };
        train_into_model_dir(
            "alignment",
            &self.trainer,
            &objective,
            policy,
            &processor,
            &self.out,
            self.resume,
            &identity,
            &weights,
            &device,
        )
    }
}

/// Summed log-probs `[log π(y+ | v, q), log π(y− | v, q)]` of each pair's answers under `model`
/// on the clean image, `batch` pairs per forward pass (graph-free: pass an inner-backend model).
pub fn pair_logps<B: Backend>(
    model: &Model<B>,
    processor: &FileProcessor,
    examples: &[AlignExample],
    batch: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<[f64; 2]>> {
    let sum = |tokens: &[f32]| tokens.iter().copied().map(f64::from).sum::<f64>();
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let chunk: Vec<&AlignExample> = chunk.iter().collect();
        let logps = answer_label_logps(model, processor, &chunk, PairImage::Clean, device)?;
        out.extend(
            logps
                .iter()
                .map(|[chosen, rejected]| [sum(chosen), sum(rejected)]),
        );
    }
    Ok(out)
}

/// The implicit reward margin of DPO (Rafailov et al. 2023, eq. 7) for each pair,
/// `β [(log π(y+) − log π_ref(y+)) − (log π(y−) − log π_ref(y−))]`, over whole answers: one
/// measure for every method (the phrase losses' own rewards sum over phrase tokens only, so their
/// logged rewards are not comparable with DPO's). The pair is ranked right when it is > 0.
pub fn reward_margins(policy: &[[f64; 2]], reference: &[[f64; 2]], beta: f64) -> Vec<f64> {
    policy
        .iter()
        .zip(reference)
        .map(|(p, r)| beta * ((p[0] - r[0]) - (p[1] - r[1])))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::{reward_margins, steps_for_epochs};

    #[test]
    fn reward_margin_is_the_dpo_implicit_reward_difference() {
        // policy gains 2 nats on y+ and loses 1 on y−: margin 0.1 · (2 − (−1)) = 0.3.
        let m = reward_margins(
            &[[-3.0, -6.0], [-5.0, -4.0]],
            &[[-5.0, -5.0], [-5.0, -5.0]],
            0.1,
        );
        assert!((m[0] - 0.3).abs() < 1e-12);
        assert!((m[1] - 0.1 * (0.0 - 1.0)).abs() < 1e-12);
    }

    #[test]
    fn one_epoch_counts_a_partial_last_batch() {
        assert_eq!(steps_for_epochs(800, 1, 8), 100);
        assert_eq!(steps_for_epochs(801, 1, 8), 101);
        assert_eq!(steps_for_epochs(5, 1, 8), 1);
        assert_eq!(steps_for_epochs(100, 3, 8), 38); // ⌈300 / 8⌉
    }
}
