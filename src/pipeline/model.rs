//! The model of a pipeline run, of any family firempo trains: LLaVA-style ([`Vlm`]: llava-hf,
//! original LLaVA, firempo's own) or Qwen-VL ([`QwenVl`]: Qwen2-VL, Qwen2.5-VL, Qwen3-VL).
//!
//! The stages see one type with the operations they need (shared-prefix scoring, generation,
//! LoRA, saving); the families differ in how images enter ([`Pixels`]) and in their config
//! ([`ModelConfig`], `model.json`).

use std::path::Path;

use anyhow::Context;
use burn::module::Module;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;
use firempo_models::loading::{load_pretrained_with, LoadOptions};
use firempo_models::precision::{cast_base_weights, WeightDType};
use firempo_models::{
    load_adapter, load_qwen_vl, load_record_file, save_adapter, Generation, GenerationConfig,
    HostScoringInput, LoraConfig, Pixels, QwenScoringInput, QwenVl, QwenVlConfig, QwenVlInput,
    TextConfig, Vlm, VlmConfig,
};
use firempo_models::{FullGraph, Trunk};
use serde_json::Value;

use super::batch::ScoringIds;

/// A model of any family the pipeline runs.
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Model<B: Backend> {
    /// LLaVA-style: llava-hf, original LLaVA, firempo's own.
    Llava(Vlm<B>),
    /// Qwen2-VL, Qwen2.5-VL, Qwen3-VL.
    QwenVl(QwenVl<B>),
}

impl<B: Backend> From<Vlm<B>> for Model<B> {
    fn from(model: Vlm<B>) -> Self {
        Self::Llava(model)
    }
}

impl<B: Backend> From<QwenVl<B>> for Model<B> {
    fn from(model: QwenVl<B>) -> Self {
        Self::QwenVl(model)
    }
}

/// Whether HF checkpoint `dir` is a Qwen-VL model: its `config.json` names a Qwen-VL
/// `model_type` or architecture. One firempo does not know (say a newer `qwen4_vl`) goes to the
/// Qwen-VL loader too, whose error names the `model_type`s it reads, rather than to the LLaVA
/// loader's list of LLaVA architectures.
pub fn is_qwen_vl_checkpoint(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string(dir.join("config.json")) else {
        return false;
    };
    let Ok(config) = serde_json::from_str::<Value>(&text) else {
        return false;
    };
    let qwen_vl = |name: &str| {
        let name = name.to_lowercase();
        name.contains("qwen") && name.contains("vl")
    };
    let architectures = config["architectures"].as_array().into_iter().flatten();
    config["model_type"].as_str().is_some_and(qwen_vl)
        || architectures
            .filter_map(Value::as_str)
            .any(|a| qwen_vl(a) && a.ends_with("ForConditionalGeneration"))
}

/// The error for pixels of one family given to a model of the other.
fn family_mismatch<B: Backend>(pixels: &Pixels<B>, model: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "the processor gave {} to a {model} model; the model directory's processor.json and \
         model.json are of different families",
        pixels.kind()
    )
}

/// `model.json`: the architecture of a firempo model directory. A LLaVA-style model is stored as
/// its [`VlmConfig`] (as every directory before Qwen-VL), a Qwen-VL one as
/// `{"qwen_vl": QwenVlConfig}`.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelConfig {
    Llava(VlmConfig),
    QwenVl(QwenVlConfig),
}

/// The key a Qwen-VL `model.json` keeps its config under.
const QWEN_VL_KEY: &str = "qwen_vl";

impl ModelConfig {
    /// The JSON of `model.json`.
    pub fn to_json(&self) -> anyhow::Result<String> {
        Ok(match self {
            Self::Llava(config) => serde_json::to_string_pretty(config)?,
            Self::QwenVl(config) => {
                serde_json::to_string_pretty(&serde_json::json!({ QWEN_VL_KEY: config }))?
            }
        })
    }

    /// Parses `model.json` (`path` names it in errors) and checks it.
    pub fn from_json(text: &str, path: &Path) -> anyhow::Result<Self> {
        let parse = || format!("parsing {}", path.display());
        let value: Value = serde_json::from_str(text).with_context(parse)?;
        let config = match value.get(QWEN_VL_KEY) {
            Some(qwen) => Self::QwenVl(serde_json::from_value(qwen.clone()).with_context(parse)?),
            None => {
                let config: VlmConfig = serde_json::from_value(value).with_context(parse)?;
                config.validate().with_context(parse)?;
                Self::Llava(config)
            }
        };
        Ok(config)
    }

    /// The decoder's config.
    pub fn text(&self) -> &TextConfig {
        match self {
            Self::Llava(config) => &config.text,
            Self::QwenVl(config) => &config.text,
        }
    }

    /// The model with the weights in `path` (a burn record written by [`Model::save_weights`]).
    pub fn load_weights<B: Backend>(
        &self,
        path: &Path,
        device: &B::Device,
    ) -> anyhow::Result<Model<B>> {
        Ok(match self {
            Self::Llava(config) => Model::Llava(load_record_file::<B>(config, path, device)?),
            Self::QwenVl(config) => Model::QwenVl(
                config
                    .init::<B>(device)
                    .load_file(path, &recorder(), device)
                    .with_context(|| format!("reading the weights {}", path.display()))?,
            ),
        })
    }
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::new()
}

impl<B: Backend> Model<B> {
    /// Loads a HF checkpoint directory of any family, its decoder projections' base weights in
    /// `options.dtype` (LLaVA: decoded straight into it; Qwen-VL: converted after an f32 load).
    pub fn load_hf(dir: &Path, options: &LoadOptions, device: &B::Device) -> anyhow::Result<Self> {
        let context = || format!("loading the HF checkpoint {}", dir.display());
        if is_qwen_vl_checkpoint(dir) {
            let model = Self::QwenVl(load_qwen_vl(dir, device).with_context(context)?);
            Ok(model.cast_base_weights(options.dtype))
        } else {
            Ok(Self::Llava(
                load_pretrained_with(dir, options, device).with_context(context)?,
            ))
        }
    }

    /// Attaches the PEFT LoRA adapter in `dir` (`adapter_config.json` +
    /// `adapter_model.safetensors`).
    pub fn with_adapter_files(self, dir: &Path, device: &B::Device) -> anyhow::Result<Self> {
        let context = || format!("applying the adapter {}", dir.display());
        Ok(match self {
            Self::Llava(model) => {
                Self::Llava(load_adapter(model, dir, device).with_context(context)?)
            }
            Self::QwenVl(model) => {
                Self::QwenVl(load_adapter(model, dir, device).with_context(context)?)
            }
        })
    }

    /// The architecture.
    pub fn config(&self) -> ModelConfig {
        match self {
            Self::Llava(model) => ModelConfig::Llava(model.config.clone()),
            Self::QwenVl(model) => ModelConfig::QwenVl(model.config.clone()),
        }
    }

    /// The adapters' hyperparameters, if LoRA adapters are attached.
    pub fn lora(&self) -> Option<&LoraConfig> {
        match self {
            Self::Llava(model) => model.lora.as_ref(),
            Self::QwenVl(model) => model.lora.as_ref(),
        }
    }

    /// Freezes every weight and attaches fresh LoRA adapters to the decoder's targeted
    /// projections.
    pub fn with_lora(self, config: &LoraConfig, device: &B::Device) -> anyhow::Result<Self> {
        Ok(match self {
            Self::Llava(model) => Self::Llava(model.with_lora(config, device)?),
            Self::QwenVl(model) => Self::QwenVl(model.with_lora(config, device)?),
        })
    }

    /// The same weights with adapters on or off (off: the reference of preference training).
    pub fn with_adapters(self, enabled: bool) -> Self {
        match self {
            Self::Llava(model) => Self::Llava(model.with_adapters(enabled)),
            Self::QwenVl(model) => Self::QwenVl(model.with_adapters(enabled)),
        }
    }

    /// Folds the adapters into the base weights.
    pub fn merge_lora(self) -> Self {
        match self {
            Self::Llava(model) => Self::Llava(model.merge_lora()),
            Self::QwenVl(model) => Self::QwenVl(model.merge_lora()),
        }
    }

    /// Freezes the vision tower and projector / patch merger (no gradients), as the paper does.
    pub fn freeze_vision(self) -> Self {
        match self {
            Self::Llava(mut model) => {
                model.vision = model.vision.map(|v| v.no_grad());
                model.projector = model.projector.map(|p| p.no_grad());
                Self::Llava(model)
            }
            Self::QwenVl(mut model) => {
                model.visual = model.visual.no_grad();
                Self::QwenVl(model)
            }
        }
    }

    /// The decoder projections' base weights in `dtype` (see [`cast_base_weights`]).
    pub fn cast_base_weights(self, dtype: WeightDType) -> Self {
        match self {
            Self::Llava(mut model) => {
                model.decoder = cast_base_weights(model.decoder, dtype);
                Self::Llava(model)
            }
            Self::QwenVl(mut model) => {
                model.decoder = cast_base_weights(model.decoder, dtype);
                Self::QwenVl(model)
            }
        }
    }

    /// Writes the LoRA adapters to `dir` as PEFT files.
    pub fn save_adapter(&self, dir: &Path) -> anyhow::Result<()> {
        match self {
            Self::Llava(model) => save_adapter(model, dir, None)?,
            Self::QwenVl(model) => save_adapter(model, dir, None)?,
        }
        Ok(())
    }

    /// Writes the weights as a burn record at `path` (`.mpk` added). The record is the family
    /// model's own, so directories written before this enum existed load unchanged.
    pub fn save_weights(&self, path: &Path) -> anyhow::Result<()> {
        let written = match self {
            Self::Llava(model) => model.clone().save_file(path, &recorder()),
            Self::QwenVl(model) => model.clone().save_file(path, &recorder()),
        };
        written.with_context(|| format!("writing weights to {}.mpk", path.display()))
    }

    /// Logits `[n_prompts, n_answers, answer_len, vocab]` of every answer after its prompt, in
    /// one packed forward per batch, from host ids (nothing is read back from the device);
    /// `pixels` holds the prompts' images in prompt order.
    pub fn score_answers(
        &self,
        packed: &ScoringIds,
        pixels: Pixels<B>,
    ) -> anyhow::Result<Tensor<B, 4>> {
        self.score_answers_with(packed, pixels, &mut FullGraph)
    }

    /// [`Model::score_answers`] with the decoder's layers run by `trunk` ([`Checkpointed`]
    /// for `--gradient-checkpointing`).
    ///
    /// [`Checkpointed`]: firempo_models::Checkpointed
    pub fn score_answers_with(
        &self,
        packed: &ScoringIds,
        pixels: Pixels<B>,
        trunk: &mut (impl Trunk<B> + ?Sized),
    ) -> anyhow::Result<Tensor<B, 4>> {
        match (self, pixels) {
            (Self::Llava(model), Pixels::Square(pixels)) => {
                let device = pixels.device();
                let input = HostScoringInput {
                    prefix_ids: packed.prefix_ids.clone(),
                    prefix_mask: packed.prefix_mask.clone(),
                    pixel_values: Some(pixels),
                    answer_ids: packed.answer_ids.clone(),
                };
                Ok(model.score_answers_host_with(input, &device, trunk)?)
            }
            (Self::QwenVl(model), Pixels::Patches { values, grids }) => {
                let input = QwenScoringInput {
                    prefix_ids: packed.prefix_ids.clone(),
                    prefix_mask: packed.prefix_mask.clone(),
                    pixel_values: Some(values),
                    image_grid_thw: grids,
                    answer_ids: packed.answer_ids.clone(),
                };
                Ok(model.score_answers_with(input, trunk)?)
            }
            (Self::Llava(_), pixels) => Err(family_mismatch(&pixels, "LLaVA-style")),
            (Self::QwenVl(_), pixels) => Err(family_mismatch(&pixels, "Qwen-VL")),
        }
    }

    /// Generates after left-padded prompt rows `ids` (`mask` true = token) about `pixels` (one
    /// image per row, in row order).
    pub fn generate(
        &self,
        ids: Vec<Vec<i64>>,
        mask: Vec<Vec<bool>>,
        pixels: Pixels<B>,
        config: &GenerationConfig,
    ) -> anyhow::Result<Generation> {
        match (self, pixels) {
            (Self::Llava(model), Pixels::Square(pixels)) => {
                let device = pixels.device();
                Ok(model.generate_host(ids, mask, Some(pixels), config, &device)?)
            }
            (Self::QwenVl(model), Pixels::Patches { values, grids }) => {
                let input = QwenVlInput {
                    input_ids: ids,
                    attention_mask: mask,
                    pixel_values: Some(values),
                    image_grid_thw: grids,
                };
                Ok(model.generate(input, config)?)
            }
            (Self::Llava(_), pixels) => Err(family_mismatch(&pixels, "LLaVA-style")),
            (Self::QwenVl(_), pixels) => Err(family_mismatch(&pixels, "Qwen-VL")),
        }
    }
}
