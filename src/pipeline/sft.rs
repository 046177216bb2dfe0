//! Supervised fine-tuning objective: teacher-forced answer NLL on `(image, question, answer)`
//! records, scored with the shared-prefix API (logits only at answer positions).

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use firempo_datasets::Record;
use firempo_losses::{sft_loss, LossOutput};
use firempo_models::{FullGraph, Trunk};

use super::batch::scoring_batch;
use super::file_processor::FileProcessor;
use super::model::Model;
use crate::train::{CheckpointedLoss, Objective};

/// One tokenized training example.
#[derive(Debug, Clone, PartialEq)]
pub struct SftExample {
    /// Prompt ids (with the expanded image tokens).
    pub prompt: Vec<i64>,
    /// Answer ids ending in `</s>`.
    pub answer: Vec<i64>,
    /// The image file.
    pub image: PathBuf,
}

/// Tokenizes `records` (image paths resolved against `root`).
pub fn sft_examples(
    processor: &FileProcessor,
    records: &[Record],
    root: &Path,
) -> anyhow::Result<Vec<SftExample>> {
    records
        .iter()
        .map(|record| -> anyhow::Result<SftExample> {
            let image = record.image_path(root);
            let example = SftExample {
                prompt: processor.prompt_for(&record.question, &image)?,
                answer: processor.answer_ids(&record.answer)?,
                image,
            };
            processor.check_fits(example.prompt.len(), example.answer.len())?;
            Ok(example)
        })
        .zip(records)
        .map(|(example, record)| example.with_context(|| format!("record `{}`", record.id)))
        .collect()
}

/// Mean answer-token NLL over a micro-batch of examples.
pub struct SftObjective<'a, B: Backend> {
    /// Tokenizer and image preprocessing.
    pub processor: &'a FileProcessor,
    /// The training examples.
    pub examples: Vec<SftExample>,
    /// Where batches are built.
    pub device: B::Device,
}

impl<B: AutodiffBackend> Objective<B> for SftObjective<'_, B> {
    type Model = Model<B>;

    fn num_examples(&self) -> usize {
        self.examples.len()
    }

    fn loss(&self, model: &Model<B>, indices: &[usize]) -> anyhow::Result<LossOutput<B>> {
        self.loss_with(model, indices, &mut FullGraph)
    }

    /// The loss is a mean over answer tokens: weigh examples by their answer length.
    fn loss_weight(&self, indices: &[usize]) -> f64 {
        indices
            .iter()
            .map(|&i| self.examples[i].answer.len())
            .sum::<usize>() as f64
    }

    fn for_device(&self, device: &B::Device) -> anyhow::Result<Self> {
        Ok(Self {
            processor: self.processor,
            examples: self.examples.clone(),
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

impl<B: AutodiffBackend> SftObjective<'_, B> {
    /// The loss with the decoder's layers run by `trunk`.
    fn loss_with(
        &self,
        model: &Model<B>,
        indices: &[usize],
        trunk: &mut dyn Trunk<B>,
    ) -> anyhow::Result<LossOutput<B>> {
        let examples: Vec<&SftExample> = indices.iter().map(|&i| &self.examples[i]).collect();
        let prompts: Vec<Vec<i64>> = examples.iter().map(|e| e.prompt.clone()).collect();
        let answers: Vec<Vec<Vec<i64>>> = examples.iter().map(|e| vec![e.answer.clone()]).collect();
        let paths: Vec<&Path> = examples.iter().map(|e| e.image.as_path()).collect();
        let pixels = self.processor.pixels::<B>(&paths, &self.device)?;
        let batch = scoring_batch(&prompts, &answers, self.processor.special.pad, &self.device);
        let logits = model.score_answers_with(&batch.packed, pixels, trunk)?; // [batch, 1, answer_len, vocab]
        let [n, _, t, v] = logits.dims();
        Ok(sft_loss(
            logits.reshape([n, t, v]),
            batch.labels.reshape([n, t]),
            batch.answer_mask.reshape([n, t]),
        )?)
    }
}
