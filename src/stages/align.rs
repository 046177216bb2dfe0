//! `firempo align`: preference alignment of a model directory on preference pairs with DPO, RRPO,
//! mDPO or FiRe-MPO (LoRA by default, the reference being the adapters-off model); writes a model
//! directory with the adapters merged.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use firempo_datasets::{read_pairs_jsonl, BadRecordPolicy, PreferencePair};
use firempo_losses::logps::{masked_sum, token_log_probs};
use firempo_losses::PreferenceLoss;
use firempo_models::precision::{check_full_finetune, WeightDType};
use firempo_models::LoraConfig;
use serde::{Deserialize, Serialize};

use super::data::read_records;
use super::held_out::{HeldOutProbe, WithHeldOut};
use super::{train_into_model_dir, WeightsOutput};
use crate::backend::BackendTask;
use crate::pipeline::align::{
    align_examples, reference_of, whole_answer_spans, AlignExample, AlignObjective,
};
use crate::pipeline::batch::scoring_batch;
use crate::pipeline::file_processor::FileProcessor;
use crate::pipeline::image_check::check_images;
use crate::pipeline::model::Model;
use crate::pipeline::model_dir::load_model_in;
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
        let objective = AlignObjective::<B> {
            processor: &processor,
            examples,
            loss: self.loss,
            reference: reference_of(&policy),
            device: device.clone(),
        };
        let probe = match &self.held_out {
            Some(held_out) => Some(HeldOutProbe::new::<B>(
                held_out,
                &processor,
                &objective.reference,
                self.trainer.steps,
                &device,
            )?),
            None => None,
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
    let mut out = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch.max(1)) {
        let prompts: Vec<Vec<i64>> = chunk.iter().map(|e| e.prompt.clone()).collect();
        let answers: Vec<Vec<Vec<i64>>> = chunk
            .iter()
            .map(|e| vec![e.chosen.0.clone(), e.rejected.0.clone()])
            .collect();
        let images: Vec<&Path> = chunk.iter().map(|e| e.image.as_path()).collect();
        let pixels = processor.pixels::<B>(&images, device)?;
        let scored = scoring_batch(&prompts, &answers, processor.special.pad, device);
        let logits = model.score_answers(&scored.packed, pixels)?; // [n, 2, T, V]
        let [n, _, t, v] = logits.dims();
        let mask = scored.answer_mask.reshape([2 * n, t]);
        let logps = masked_sum(
            token_log_probs(
                logits.reshape([2 * n, t, v]),
                scored.labels.reshape([2 * n, t]),
                mask.clone(),
            ),
            mask,
        ); // [2n]: chosen, rejected of each pair
        let values: Vec<f64> = logps
            .into_data()
            .convert::<f64>()
            .to_vec()
            .map_err(|e| anyhow::anyhow!("reading log-probs back: {e:?}"))?;
        out.extend(values.chunks(2).map(|pair| [pair[0], pair[1]]));
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
