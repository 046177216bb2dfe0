//! Preference-alignment objective: scores `(v, y+)`, `(v, y−)` and, when the loss needs them,
//! `(v', y+)`, `(v', y−)` with the policy and a graph-free reference, and applies the chosen
//! preference loss (DPO, RRPO, mDPO, FiRe-MPO).
//!
//! Cost layout (METHOD.md, "Cost"): each image is encoded and each prompt run once per model; the
//! two answers share it (shared-prefix scoring), and vocabulary logits exist only at answer
//! positions. The reference runs on the inner backend, without an autograd graph.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{Int, Tensor, TensorData};
use firempo_datasets::{PhraseSpan, PreferencePair};
use firempo_losses::{CorruptedAnswers, LossOutput, PreferenceBatch, PreferenceLoss, ScoredAnswer};
use firempo_models::{FullGraph, Trunk};

use super::batch::{pad_rows, scoring_batch};
use super::file_processor::FileProcessor;
use super::model::Model;
use crate::train::{CheckpointedLoss, Objective};

/// One tokenized preference pair.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignExample {
    /// Prompt ids.
    pub prompt: Vec<i64>,
    /// `y+` ids and their phrase ids.
    pub chosen: (Vec<i64>, Vec<i64>),
    /// `y−` ids and their phrase ids.
    pub rejected: (Vec<i64>, Vec<i64>),
    /// Clean image.
    pub image: PathBuf,
    /// Corrupted image, if the pair has one.
    pub corrupted_image: Option<PathBuf>,
}

/// Tokenizes pairs (paths resolved against `root`).
pub fn align_examples(
    processor: &FileProcessor,
    pairs: &[PreferencePair],
    root: &Path,
) -> anyhow::Result<Vec<AlignExample>> {
    pairs
        .iter()
        .map(|pair| -> anyhow::Result<AlignExample> {
            let image = root.join(&pair.image);
            let corrupted_image = pair.corrupted_image.as_ref().map(|p| root.join(p));
            let prompt = processor.prompt_for(&pair.question, &image)?;
            if let Some(corrupted) = &corrupted_image {
                // Both images are scored after one prompt: they need the same image tokens.
                anyhow::ensure!(
                    processor.image_tokens_of(corrupted)? == processor.image_tokens_of(&image)?,
                    "the corrupted image {} takes another number of image tokens than the clean \
                     {} (a different size, for a model that reads images at their own \
                     resolution); fix: use the corrupted copy `firempo pairs` writes, which keeps the size",
                    corrupted.display(),
                    image.display()
                );
            }
            let example = AlignExample {
                prompt,
                chosen: processor.answer_with_spans(&pair.chosen, &pair.chosen_spans)?,
                rejected: processor
                    .answer_with_spans(&pair.rejected, &pair.rejected_spans)?,
                image,
                corrupted_image,
            };
            let longest = example.chosen.0.len().max(example.rejected.0.len());
            processor.check_fits(example.prompt.len(), longest)?;
            Ok(example)
        })
        .zip(pairs)
        .map(|(example, pair)| example.with_context(|| format!("pair `{}`", pair.id)))
        .collect()
}

/// Marks every token of an answer as one phrase (for losses that need no edit spans).
pub fn whole_answer_spans(answer: &str) -> Vec<PhraseSpan> {
    vec![PhraseSpan {
        start: 0,
        end: answer.len(),
        id: 1,
    }]
}

/// The alignment objective over tokenized pairs.
pub struct AlignObjective<'a, B: AutodiffBackend> {
    /// Tokenizer and image preprocessing.
    pub processor: &'a FileProcessor,
    /// The pairs.
    pub examples: Vec<AlignExample>,
    /// The preference loss.
    pub loss: PreferenceLoss,
    /// The frozen reference (with LoRA: the same base weights with adapters off; tensors shared).
    pub reference: Model<B::InnerBackend>,
    /// Where batches are built.
    pub device: B::Device,
}

/// Policy and reference logits of the answers after `n_prompts` prompts, `[n_prompts, 2, T, V]` each.
struct ScoredPrompts<B: AutodiffBackend> {
    policy: Tensor<B, 4>,
    reference: Tensor<B, 4>,
    labels: Tensor<B, 3, Int>,
    mask: Tensor<B, 3>,
    phrases: Tensor<B, 3, Int>,
}

impl<B: AutodiffBackend> AlignObjective<'_, B> {
    fn score(
        &self,
        model: &Model<B>,
        examples: &[&AlignExample],
        images: &[&Path],
        trunk: &mut dyn Trunk<B>,
    ) -> anyhow::Result<ScoredPrompts<B>> {
        let prompts: Vec<Vec<i64>> = examples.iter().map(|e| e.prompt.clone()).collect();
        let answers: Vec<Vec<Vec<i64>>> = examples
            .iter()
            .map(|e| vec![e.chosen.0.clone(), e.rejected.0.clone()])
            .collect();
        let phrases: Vec<Vec<Vec<i64>>> = examples
            .iter()
            .map(|e| vec![e.chosen.1.clone(), e.rejected.1.clone()])
            .collect();
        let pad = self.processor.special.pad;
        let pixels = self.processor.pixels::<B>(images, &self.device)?;
        let inner_pixels = pixels.inner();
        let policy_batch = scoring_batch(&prompts, &answers, pad, &self.device);
        let policy = model.score_answers_with(&policy_batch.packed, pixels, trunk)?;
        let reference = Tensor::from_inner(
            self.reference
                .score_answers(&policy_batch.packed, inner_pixels)?,
        );
        let [_, _, answer_len] = policy_batch.labels.dims();
        Ok(ScoredPrompts {
            policy,
            reference,
            phrases: pad_rows(&phrases, answer_len, &self.device),
            labels: policy_batch.labels,
            mask: policy_batch.answer_mask,
        })
    }
}

impl<B: AutodiffBackend> ScoredPrompts<B> {
    /// Answer `slot` (0 = chosen, 1 = rejected) of every prompt as a loss input.
    fn answer(&self, slot: usize) -> ScoredAnswer<B> {
        let [n, _, t, v] = self.policy.dims();
        ScoredAnswer {
            policy_logits: self.policy.clone().narrow(1, slot, 1).reshape([n, t, v]),
            reference_logits: self.reference.clone().narrow(1, slot, 1).reshape([n, t, v]),
            labels: self.labels.clone().narrow(1, slot, 1).reshape([n, t]),
            answer_mask: self.mask.clone().narrow(1, slot, 1).reshape([n, t]),
            phrase_ids: self.phrases.clone().narrow(1, slot, 1).reshape([n, t]),
        }
    }
}

impl<B: AutodiffBackend> Objective<B> for AlignObjective<'_, B> {
    type Model = Model<B>;

    fn num_examples(&self) -> usize {
        self.examples.len()
    }

    fn loss(&self, model: &Model<B>, indices: &[usize]) -> anyhow::Result<LossOutput<B>> {
        self.loss_with(model, indices, &mut FullGraph)
    }

    fn checkpointed_loss(
        &self,
        model: &Model<B>,
        indices: &[usize],
    ) -> anyhow::Result<CheckpointedLoss<B>> {
        CheckpointedLoss::run(|trunk| self.loss_with(model, indices, trunk))
    }
}

impl<B: AutodiffBackend> AlignObjective<'_, B> {
    /// The loss with the policy's decoder layers run by `trunk` (the reference runs plain, on
    /// the inner backend).
    fn loss_with(
        &self,
        model: &Model<B>,
        indices: &[usize],
        trunk: &mut dyn Trunk<B>,
    ) -> anyhow::Result<LossOutput<B>> {
        let examples: Vec<&AlignExample> = indices.iter().map(|&i| &self.examples[i]).collect();
        let clean_images: Vec<&Path> = examples.iter().map(|e| e.image.as_path()).collect();
        let clean = self.score(model, &examples, &clean_images, trunk)?;
        let needs = self.loss.requirements();
        let corrupted = if needs.corrupted_chosen || needs.corrupted_rejected {
            // Examples without a corrupted image are scored on the clean one and flagged absent.
            let images: Vec<&Path> = examples
                .iter()
                .map(|e| e.corrupted_image.as_deref().unwrap_or(e.image.as_path()))
                .collect();
            let present: Vec<f32> = examples
                .iter()
                .map(|e| f32::from(u8::from(e.corrupted_image.is_some())))
                .collect();
            let scored = self.score(model, &examples, &images, trunk)?;
            Some(CorruptedAnswers {
                chosen: scored.answer(0),
                rejected: needs.corrupted_rejected.then(|| scored.answer(1)),
                present: Tensor::from_data(
                    TensorData::new(present, [examples.len()]),
                    &self.device,
                ),
            })
        } else {
            None
        };
        let batch = PreferenceBatch {
            chosen: clean.answer(0),
            rejected: clean.answer(1),
            corrupted,
        };
        Ok(self.loss.loss(batch)?)
    }
}

/// The reference for a policy about to be trained: adapters off (LoRA) or a frozen copy, on the
/// inner backend so it builds no autograd graph.
pub fn reference_of<B: AutodiffBackend>(policy: &Model<B>) -> Model<B::InnerBackend> {
    policy.clone().with_adapters(false).valid()
}
