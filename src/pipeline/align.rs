//! Preference-alignment objective: scores `(v, y+)`, `(v, y−)` and, when the loss needs them,
//! `(v', y+)`, `(v', y−)` with the policy and a graph-free reference, and applies the chosen
//! preference loss (DPO, RRPO, mDPO, FiRe-MPO).
//!
//! Cost layout (METHOD.md, "Cost"): each image is encoded and each prompt run once per model; the
//! two answers share it (shared-prefix scoring), and vocabulary logits exist only at answer
//! positions. The reference runs on the inner backend, without an autograd graph, or not at all
//! when its label log-probs were precomputed ([`Reference::Precomputed`], DPO and mDPO).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use firempo_datasets::{PhraseSpan, PreferencePair};
use firempo_losses::logps::token_log_probs;
use firempo_losses::{
    CorruptedAnswers, LossOutput, PreferenceBatch, PreferenceLoss, ReferenceScores, ScoredAnswer,
};
use firempo_models::{FullGraph, Trunk};

use super::batch::{pad_rows, scoring_batch};
use super::file_processor::FileProcessor;
use super::model::Model;
use super::reference_cache::ReferenceLogps;
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

/// Which image of a pair its answers are scored after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PairImage {
    /// The clean image `v`.
    Clean,
    /// The lesion-corrupted image `v'`; a pair without one is scored on its clean image (the
    /// losses flag its corrupted terms absent).
    Corrupted,
}

impl PairImage {
    /// The image file of `example` this names.
    pub fn of(self, example: &AlignExample) -> &Path {
        match self {
            PairImage::Clean => &example.image,
            PairImage::Corrupted => example.corrupted_image.as_deref().unwrap_or(&example.image),
        }
    }

    /// The images `loss` scores the answers after: the clean one, and the corrupted one when it
    /// reads a corrupted variant.
    pub fn scored_by(loss: &PreferenceLoss) -> Vec<PairImage> {
        let needs = loss.requirements();
        if needs.corrupted_chosen || needs.corrupted_rejected {
            vec![PairImage::Clean, PairImage::Corrupted]
        } else {
            vec![PairImage::Clean]
        }
    }

    /// `clean` or `corrupted`.
    pub fn name(self) -> &'static str {
        match self {
            PairImage::Clean => "clean",
            PairImage::Corrupted => "corrupted",
        }
    }
}

/// Per-token label log-probs `log π(y_t | v, q, y_<t)` of each example's chosen and rejected
/// answers after its prompt and `image`, under `model` (graph-free: pass an inner-backend
/// model), in one shared-prefix forward pass; each list as long as its answer. What the
/// precomputed reference and the held-out probe store.
pub fn answer_label_logps<B: Backend>(
    model: &Model<B>,
    processor: &FileProcessor,
    examples: &[&AlignExample],
    image: PairImage,
    device: &B::Device,
) -> anyhow::Result<Vec<[Vec<f32>; 2]>> {
    let prompts: Vec<Vec<i64>> = examples.iter().map(|e| e.prompt.clone()).collect();
    let answers: Vec<Vec<Vec<i64>>> = examples
        .iter()
        .map(|e| vec![e.chosen.0.clone(), e.rejected.0.clone()])
        .collect();
    let images: Vec<&Path> = examples.iter().map(|e| image.of(e)).collect();
    let pixels = processor.pixels::<B>(&images, device)?;
    let scored = scoring_batch(&prompts, &answers, processor.special.pad, device);
    let logits = model.score_answers(&scored.packed, pixels)?; // [n, 2, T, V]
    let [n, _, t, v] = logits.dims();
    anyhow::ensure!(t > 0, "every answer of these pairs is empty");
    let logps = token_log_probs(
        logits.reshape([2 * n, t, v]),
        scored.labels.reshape([2 * n, t]),
        scored.answer_mask.reshape([2 * n, t]),
    ); // [2n, T]: chosen, rejected of each example
    let values: Vec<f32> = logps
        .into_data()
        .convert::<f32>()
        .to_vec()
        .map_err(|e| anyhow::anyhow!("reading log-probs back: {e:?}"))?;
    Ok(examples
        .iter()
        .zip(values.chunks(2 * t))
        .map(|(e, row)| {
            [
                row[..e.chosen.0.len()].to_vec(),
                row[t..t + e.rejected.0.len()].to_vec(),
            ]
        })
        .collect())
}

/// The frozen reference of an alignment run.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // one per run (and per data-parallel peer): boxing buys nothing
pub enum Reference<B: Backend> {
    /// The model (with LoRA: the policy's base weights with adapters off; else a frozen copy),
    /// scored at every step.
    Model(Model<B>),
    /// Its label log-probs of every pair, scored once before training
    /// (`--precompute-reference`, [`super::reference_cache`]): the steps run the policy only.
    /// Enough for DPO and mDPO; RRPO's and FiRe-MPO's KL need [`Reference::Model`].
    Precomputed(Arc<ReferenceLogps>),
}

impl<B: Backend> Reference<B> {
    /// The same reference on `device` (a data-parallel peer): the model copied there, the
    /// precomputed log-probs shared.
    pub fn fork(&self, device: &B::Device) -> Self {
        match self {
            Reference::Model(model) => {
                Reference::Model(burn::module::Module::fork(model.clone(), device))
            }
            Reference::Precomputed(logps) => Reference::Precomputed(Arc::clone(logps)),
        }
    }
}

/// The alignment objective over tokenized pairs.
pub struct AlignObjective<'a, B: AutodiffBackend> {
    /// Tokenizer and image preprocessing.
    pub processor: &'a FileProcessor,
    /// The pairs.
    pub examples: Vec<AlignExample>,
    /// The preference loss.
    pub loss: PreferenceLoss,
    /// The frozen reference: a model (with LoRA: the same base weights with adapters off;
    /// tensors shared), or its precomputed label log-probs.
    pub reference: Reference<B::InnerBackend>,
    /// Where batches are built.
    pub device: B::Device,
}

/// The reference's side of [`ScoredPrompts`].
enum PromptsReference<B: Backend> {
    /// Logits `[n_prompts, 2, T, V]`.
    Logits(Tensor<B, 4>),
    /// Precomputed label log-probs `[n_prompts, 2, T]`.
    LabelLogProbs(Tensor<B, 3>),
}

/// Policy logits of the answers after `n_prompts` prompts, `[n_prompts, 2, T, V]`, and the
/// reference's scores of them.
struct ScoredPrompts<B: AutodiffBackend> {
    policy: Tensor<B, 4>,
    reference: PromptsReference<B>,
    labels: Tensor<B, 3, Int>,
    mask: Tensor<B, 3>,
    phrases: Tensor<B, 3, Int>,
}

impl<B: AutodiffBackend> AlignObjective<'_, B> {
    /// Scores the answers of the pairs `indices` after `image`: the policy (through `trunk`) and
    /// the reference (run here, or read from its precomputed log-probs).
    fn score(
        &self,
        model: &Model<B>,
        indices: &[usize],
        image: PairImage,
        trunk: &mut dyn Trunk<B>,
    ) -> anyhow::Result<ScoredPrompts<B>> {
        let examples: Vec<&AlignExample> = indices.iter().map(|&i| &self.examples[i]).collect();
        let images: Vec<&Path> = examples.iter().map(|e| image.of(e)).collect();
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
        let pixels = self.processor.pixels::<B>(&images, &self.device)?;
        let inner_pixels = pixels.inner();
        let policy_batch = scoring_batch(&prompts, &answers, pad, &self.device);
        let policy = model.score_answers_with(&policy_batch.packed, pixels, trunk)?;
        let [_, _, answer_len] = policy_batch.labels.dims();
        let reference =
            match &self.reference {
                Reference::Model(reference) => PromptsReference::Logits(Tensor::from_inner(
                    reference.score_answers(&policy_batch.packed, inner_pixels)?,
                )),
                Reference::Precomputed(logps) => PromptsReference::LabelLogProbs(
                    logps.label_logps(indices, image, answer_len, &self.device)?,
                ),
            };
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
            reference: match &self.reference {
                PromptsReference::Logits(logits) => {
                    ReferenceScores::Logits(logits.clone().narrow(1, slot, 1).reshape([n, t, v]))
                }
                PromptsReference::LabelLogProbs(logps) => {
                    ReferenceScores::LabelLogProbs(logps.clone().narrow(1, slot, 1).reshape([n, t]))
                }
            },
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

    /// Data-parallel peer: the reference copied to `device` (the losses are means over pairs,
    /// the default [`Objective::loss_weight`]).
    fn for_device(&self, device: &B::Device) -> anyhow::Result<Self> {
        Ok(Self {
            processor: self.processor,
            examples: self.examples.clone(),
            loss: self.loss,
            reference: self.reference.fork(device),
            device: device.clone(),
        })
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
        let clean = self.score(model, indices, PairImage::Clean, trunk)?;
        let needs = self.loss.requirements();
        let corrupted = if PairImage::scored_by(&self.loss).contains(&PairImage::Corrupted) {
            // Examples without a corrupted image are scored on the clean one and flagged absent.
            let present: Vec<f32> = examples
                .iter()
                .map(|e| f32::from(u8::from(e.corrupted_image.is_some())))
                .collect();
            let scored = self.score(model, indices, PairImage::Corrupted, trunk)?;
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

/// The reference model of a policy about to be trained: adapters off (LoRA) or a frozen copy,
/// on the inner backend so it builds no autograd graph (nor applies dropout).
pub fn reference_model<B: AutodiffBackend>(policy: &Model<B>) -> Model<B::InnerBackend> {
    policy.clone().with_adapters(false).valid()
}

/// [`reference_model`] as the reference scored at every step.
pub fn reference_of<B: AutodiffBackend>(policy: &Model<B>) -> Reference<B::InnerBackend> {
    Reference::Model(reference_model(policy))
}
