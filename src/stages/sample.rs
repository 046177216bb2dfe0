//! `firempo sample`: the model's own greedy answers to the records' questions (on-policy samples),
//! written as JSONL for `firempo pairs`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use firempo_datasets::{write_jsonl, AnswerType, BadRecordPolicy, Record, Sample};
use firempo_models::precision::WeightDType;
use firempo_models::GenerationConfig;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::data::read_records;
use super::decoders::Decoders;
use crate::backend::BackendTask;
use crate::pipeline::batch::left_pad;
use crate::pipeline::file_processor::FileProcessor;
use crate::pipeline::model::Model;
use crate::pipeline::model_dir::load_model_in;
use crate::train::DeviceSpec;

/// Settings of the sampling stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleStage {
    /// Records whose questions are answered.
    pub records: PathBuf,
    /// The model directory (the policy before alignment).
    pub model: PathBuf,
    /// Output JSONL of samples.
    pub out: PathBuf,
    /// Answer at most this many records.
    pub limit: Option<usize>,
    /// Only records of these answer types (e.g. leave reports out when the rule editor builds
    /// the pairs: reports need the judge editor). `None`: all.
    pub answer_types: Option<Vec<AnswerType>>,
    /// Prompts decoded together.
    pub batch: usize,
    /// Longest answer in tokens.
    pub max_new_tokens: usize,
    /// Dtype of the decoder projections' frozen base weights (`--dtype`; bf16/f16 need a
    /// backend with half precision). Recorded in the run's identity unless f32.
    #[serde(default, skip_serializing_if = "super::is_f32")]
    pub dtype: WeightDType,
    /// Named prompt format (`--prompt-format`) for a HF checkpoint `model`, overriding its chat
    /// template; `None`: the checkpoint's template (or a model directory's own format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format: Option<String>,
    /// Devices that decode, each a share of the batches (`--devices`: a count of CPU threads or
    /// GPUs, or `cuda:0,cuda:1`); the answers do not depend on it.
    #[serde(default, skip_serializing_if = "DeviceSpec::is_single")]
    pub devices: DeviceSpec,
}

/// Prompt ids of each record's question about `images[i]`, each checked to leave room for
/// `max_new_tokens` generated tokens in the model's context; an error names the record.
pub fn record_prompts(
    processor: &FileProcessor,
    records: &[Record],
    images: &[&Path],
    max_new_tokens: usize,
) -> anyhow::Result<Vec<Vec<i64>>> {
    records
        .iter()
        .zip(images)
        .map(|(record, image)| {
            processor
                .prompt_for(&record.question, image)
                .and_then(|prompt| {
                    processor.check_fits(prompt.len(), max_new_tokens)?;
                    Ok(prompt)
                })
                .with_context(|| format!("record `{}`", record.id))
        })
        .collect()
}

/// Greedy answers of the model to `records`, `batch` prompts at a time.
pub fn answer_records<B: Backend>(
    decoders: &Decoders<B>,
    processor: &FileProcessor,
    records: &[Record],
    root: &Path,
    batch: usize,
    max_new_tokens: usize,
) -> anyhow::Result<Vec<String>>
where
    Model<B>: Sync,
{
    let images: Vec<PathBuf> = records.iter().map(|r| r.image_path(root)).collect();
    let image_refs: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
    let prompts = record_prompts(processor, records, &image_refs, max_new_tokens)?;
    answer_prompts(
        decoders,
        processor,
        &prompts,
        &image_refs,
        batch,
        max_new_tokens,
    )
}

/// Greedy answers after `prompts` (from [`record_prompts`]) about `images` (one image per
/// prompt).
pub fn answer_prompts<B: Backend>(
    decoders: &Decoders<B>,
    processor: &FileProcessor,
    prompts: &[Vec<i64>],
    images: &[&Path],
    batch: usize,
    max_new_tokens: usize,
) -> anyhow::Result<Vec<String>>
where
    Model<B>: Sync,
{
    let config = GenerationConfig {
        max_new_tokens,
        stop_token_ids: vec![processor.special.eos as u32],
        ..GenerationConfig::default()
    };
    answer_prompts_with(decoders, processor, prompts, images, batch, &config)
}

/// Answers after `prompts` about `images`, generated with `config` (greedy or sampled), `batch`
/// prompts at a time, the batches spread over the `decoders`; the `k`-th batch samples with seed
/// `config.seed + k`, so batches do not repeat each other's random numbers and the answers do not
/// depend on how many devices decode them.
pub fn answer_prompts_with<B: Backend>(
    decoders: &Decoders<B>,
    processor: &FileProcessor,
    prompts: &[Vec<i64>],
    images: &[&Path],
    batch: usize,
    config: &GenerationConfig,
) -> anyhow::Result<Vec<String>>
where
    Model<B>: Sync,
{
    let batches: Vec<(&[Vec<i64>], &[&Path])> = prompts
        .chunks(batch.max(1))
        .zip(images.chunks(batch.max(1)))
        .collect();
    let answers = decoders.map(batches.len(), |k, model, device| {
        let (prompts, chunk_images) = batches[k];
        let config = GenerationConfig {
            seed: config.seed.wrapping_add(k as u64),
            ..config.clone()
        };
        let (ids, mask) = left_pad(prompts, processor.special.pad);
        let pixels = processor.pixels::<B>(chunk_images, device)?;
        let generation = model.generate(ids, mask, pixels, &config)?;
        generation
            .tokens
            .into_iter()
            .map(|tokens| {
                let ids: Vec<i64> = tokens.into_iter().map(i64::from).collect();
                Ok(processor.decode(&ids)?)
            })
            .collect::<anyhow::Result<Vec<String>>>()
    })?;
    Ok(answers.into_iter().flatten().collect())
}

impl BackendTask for SampleStage {
    type Output = usize;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<usize> {
        let mut data = read_records(&self.records, BadRecordPolicy::Skip, None)?;
        if let Some(types) = &self.answer_types {
            data.records.retain(|r| types.contains(&r.answer_type));
        }
        if let Some(limit) = self.limit {
            data.records.truncate(limit);
        }
        anyhow::ensure!(
            !data.records.is_empty(),
            "no records of the requested answer types in {}",
            self.records.display()
        );
        let (model, processor) = load_model_in::<B::InnerBackend>(
            &self.model,
            self.prompt_format.as_deref(),
            self.dtype,
            &device,
        )?;
        let decoders = Decoders::new(model, &device, &self.devices);
        let answers = answer_records(
            &decoders,
            &processor,
            &data.records,
            &data.root,
            self.batch,
            self.max_new_tokens,
        )?;
        let model_name = self.model.display().to_string();
        let samples: Vec<Sample> = data
            .records
            .iter()
            .zip(answers)
            .map(|(record, answer)| Sample {
                record_id: record.id.clone(),
                question: record.question.clone(),
                answer,
                model: Some(model_name.clone()),
                meta: json!({"decoding": "greedy", "max_new_tokens": self.max_new_tokens})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        write_jsonl(&self.out, &samples)
            .with_context(|| format!("writing {}", self.out.display()))?;
        Ok(samples.len())
    }
}
