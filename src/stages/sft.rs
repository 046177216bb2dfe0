//! `firempo sft`: supervised fine-tuning on records, from the demo's tiny model (tokenizer trained
//! on the records) or from a model directory; writes a model directory.

use std::path::PathBuf;

use burn::tensor::backend::AutodiffBackend;
use firempo_datasets::BadRecordPolicy;
use firempo_models::precision::{check_backend_dtype, check_full_finetune, WeightDType};
use firempo_models::LoraConfig;
use serde::{Deserialize, Serialize};

use super::data::read_records;
use super::{train_into_model_dir, WeightsOutput};
use crate::backend::BackendTask;
use crate::pipeline::demo_model::demo_processor;
use crate::pipeline::image_check::check_images;
use crate::pipeline::model::Model;
use crate::pipeline::model_dir::load_model_in;
use crate::pipeline::sft::{sft_examples, SftObjective};
use crate::train::{check_resume, RunIdentity, TrainerConfig};

/// Where the model to fine-tune comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelSource {
    /// The demo's tiny VLM, randomly initialized, with a word-level tokenizer trained on the records.
    Demo,
    /// A firempo model directory (`model.json`, `model.mpk`, `tokenizer.json`, `processor.json`)
    /// or a HuggingFace checkpoint directory (LLaVA-style or Qwen-VL).
    Dir(PathBuf),
}

/// Settings of the SFT stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SftStage {
    /// Training records (JSONL; image paths relative to its folder).
    pub records: PathBuf,
    /// Output model directory (the run's checkpoints go to `out/run`).
    pub out: PathBuf,
    /// Starting model.
    pub model: ModelSource,
    /// Use at most this many records.
    pub limit: Option<usize>,
    /// Keep the vision tower and projector frozen (the paper's setting for pretrained models).
    pub freeze_vision: bool,
    /// Train LoRA adapters instead of all weights (what fits a 7B model on one GPU).
    pub lora: Option<LoraConfig>,
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
}

impl SftStage {
    /// What defines this run: its settings and digests of its records and starting model.
    fn identity(&self) -> anyhow::Result<RunIdentity> {
        let identity = RunIdentity::of_stage("sft", self)
            .without("merge")
            .without("records")
            .without("model")
            .with_file_digest("records", &self.records)?;
        Ok(match &self.model {
            ModelSource::Demo => identity.with("model", "demo (from the seed and records)"),
            ModelSource::Dir(dir) => identity.with_model_dir_digest("model", dir)?,
        })
    }
}

impl BackendTask for SftStage {
    type Output = PathBuf;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<PathBuf> {
        if self.lora.is_none() {
            check_full_finetune(self.dtype)?;
        }
        let identity = self.identity()?;
        let base = match &self.model {
            ModelSource::Demo => None,
            ModelSource::Dir(dir) => Some(dir.as_path()),
        };
        let weights = WeightsOutput::choose(self.lora.is_some(), self.merge, base)?;
        if self.resume {
            check_resume(&self.out.join("run"), &identity, &self.trainer)?;
        }
        let data = read_records(&self.records, BadRecordPolicy::Skip, self.limit)?;
        let (model, processor) = match &self.model {
            ModelSource::Demo => {
                anyhow::ensure!(
                    self.prompt_format.is_none(),
                    "--prompt-format applies to a HuggingFace checkpoint --model; the demo model \
                     uses its own prompt format; fix: drop --prompt-format"
                );
                let (config, processor) = demo_processor(&data.records)?;
                check_backend_dtype::<B>(self.dtype, &device)?;
                B::seed(&device, self.trainer.seed);
                let model = Model::from(config.init::<B>(&device));
                (model.cast_base_weights(self.dtype), processor)
            }
            ModelSource::Dir(dir) => {
                load_model_in::<B>(dir, self.prompt_format.as_deref(), self.dtype, &device)?
            }
        };
        let model = if self.freeze_vision {
            model.freeze_vision()
        } else {
            model
        };
        let model = match &self.lora {
            Some(lora) => {
                B::seed(&device, self.trainer.seed);
                model.with_lora(lora, &device)?
            }
            None => model,
        };
        let examples = sft_examples(&processor, &data.records, &data.root)?;
        check_images(
            &self.records,
            data.records
                .iter()
                .zip(&data.lines)
                .zip(&examples)
                .map(|((record, line), example)| {
                    let at = format!("record {} (line {line})", record.id);
                    (at, example.image.as_path())
                }),
        )?;
        let objective = SftObjective::<B> {
            processor: &processor,
            examples,
            device: device.clone(),
        };
        train_into_model_dir(
            "SFT",
            &self.trainer,
            &objective,
            model,
            &processor,
            &self.out,
            self.resume,
            &identity,
            &weights,
            &device,
        )
    }
}
