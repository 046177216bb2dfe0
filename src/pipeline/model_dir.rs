//! A trained model on disk, everything needed to use it again:
//!
//! ```text
//! DIR/model.json       the architecture (see [`ModelConfig`])
//! DIR/model.mpk        weights (burn record, full precision); absent in an adapter-only directory
//! DIR/tokenizer.json   HF tokenizers format
//! DIR/processor.json   image preprocessing and prompt format
//! DIR/adapter/         the LoRA adapters alone, PEFT format (when trained with LoRA)
//! DIR/base.json        adapter-only directory: the model the adapters apply to (see
//!                      [`super::base_model`])
//! ```
//!
//! [`load_model`] also takes a HuggingFace checkpoint directory, LLaVA-style or Qwen-VL (see
//! [`super::hf_checkpoint`]).

use std::fs;
use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use firempo_models::precision::{check_backend_dtype, WeightDType};
use firempo_models::{PreprocessConfig, QwenImageProcessor};
use serde::{Deserialize, Serialize};

use super::base_model::{load_adapter_only, BaseModel};
use super::file_processor::FileProcessor;
use super::hf_checkpoint::{is_hf_checkpoint, load_hf_checkpoint};
use super::model::{Model, ModelConfig};
use firempo_models::{read_tokenizer, ImageProcessing, Processor, PromptFormat};

/// `processor.json`: how text and images become model inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// Image preprocessing of a LLaVA-style model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preprocess: Option<PreprocessConfig>,
    /// Image patching of a Qwen-VL model (its checkpoint's `preprocessor_config.json`, resolved).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_patches: Option<QwenImageProcessor>,
    /// Prompt template with `{question}` and one `<image>`.
    pub template: String,
    /// Token prepended to prompts (default `<s>`; `null` for none).
    #[serde(default = "default_bos")]
    pub bos_token: Option<String>,
    /// Token that ends answers (default `</s>`).
    #[serde(default = "default_eos")]
    pub eos_token: String,
    /// The chat template the format was rendered from: the HF checkpoint's template file, or
    /// `prompt format `NAME`` (`--prompt-format`); absent for the built-in formats and in
    /// directories written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format: Option<String>,
}

fn default_bos() -> Option<String> {
    PromptFormat::llava15().bos_token
}

fn default_eos() -> String {
    PromptFormat::llava15().eos_token
}

impl ProcessorConfig {
    fn of(processor: &FileProcessor) -> Self {
        let format = processor.format.clone();
        let (preprocess, image_patches) = match &processor.images {
            ImageProcessing::Square { preprocess, .. } => (Some(preprocess.clone()), None),
            ImageProcessing::Patches(patches) => (None, Some(patches.clone())),
        };
        Self {
            preprocess,
            image_patches,
            template: format.template,
            bos_token: format.bos_token,
            eos_token: format.eos_token,
            prompt_format: format.origin,
        }
    }

    fn format(&self) -> PromptFormat {
        PromptFormat {
            template: self.template.clone(),
            bos_token: self.bos_token.clone(),
            eos_token: self.eos_token.clone(),
            origin: self.prompt_format.clone(),
        }
    }
}

/// Loads a model and its processor from a firempo model directory (`model.json`) or a
/// HuggingFace checkpoint directory, LLaVA-style or Qwen-VL (`config.json`, safetensors,
/// `tokenizer.json`, `preprocessor_config.json`, and a chat template).
pub fn load_model<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, FileProcessor)> {
    load_model_as(dir, None, device)
}

/// [`load_model`] with a named prompt format (`--prompt-format`): for a HF checkpoint it
/// overrides the checkpoint's chat template; a firempo model directory keeps the format it was
/// trained with (processor.json), so there a different name is an error.
pub fn load_model_as<B: Backend>(
    dir: &Path,
    prompt_format: Option<&str>,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, FileProcessor)> {
    load_model_in(dir, prompt_format, WeightDType::F32, device)
}

/// [`load_model_as`] with the decoder projections' base weights in `dtype` (`--dtype`): a HF
/// checkpoint's are decoded straight into it, a firempo directory's converted after loading.
/// Half precision on a backend without it (ndarray) is an error naming the fix.
pub fn load_model_in<B: Backend>(
    dir: &Path,
    prompt_format: Option<&str>,
    dtype: WeightDType,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, FileProcessor)> {
    check_backend_dtype::<B>(dtype, device)?;
    let (model, processor) = load_as_stored(dir, prompt_format, dtype, device)?;
    Ok((model.cast_base_weights(dtype), processor))
}

/// The model as its directory stores it: a firempo directory in f32, a HF checkpoint with its
/// decoder projections decoded straight into `dtype` ([`load_model_in`] converts the rest).
fn load_as_stored<B: Backend>(
    dir: &Path,
    prompt_format: Option<&str>,
    dtype: WeightDType,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, FileProcessor)> {
    if dir.join("model.json").is_file() {
        let (model, processor) = load_model_dir(dir, device)?;
        if let Some(name) = prompt_format {
            let recorded = processor.format.origin.as_deref();
            anyhow::ensure!(
                recorded == Some(format!("prompt format `{name}`").as_str()),
                "--prompt-format {name}: {} is a firempo model directory, which keeps the prompt \
                 format it was trained with ({}, in processor.json); fix: drop --prompt-format",
                dir.display(),
                recorded.unwrap_or("a built-in format")
            );
        }
        Ok((model, processor))
    } else if is_hf_checkpoint(dir) {
        load_hf_checkpoint(dir, prompt_format, dtype, device)
    } else {
        anyhow::bail!(
            "{} is neither a firempo model directory (model.json, written by `firempo sft` or \
             `firempo align`) nor a HuggingFace checkpoint directory (config.json with safetensors \
             weights); check the path",
            dir.display()
        )
    }
}

/// Writes the model, its tokenizer and processor settings to `dir`.
pub fn save_model_dir<B: Backend>(
    dir: &Path,
    model: &Model<B>,
    processor: &FileProcessor,
) -> anyhow::Result<()> {
    save_description(dir, &model.config(), processor)?;
    model.save_weights(&dir.join("model"))
}

/// Writes an adapter-only model directory's files to `dir`: the architecture, tokenizer,
/// processor settings and `base.json`; its adapters go to `adapter/` beside them.
pub fn save_adapter_only_dir(
    dir: &Path,
    config: &ModelConfig,
    processor: &FileProcessor,
    base: &BaseModel,
) -> anyhow::Result<()> {
    save_description(dir, config, processor)?;
    base.save(dir)
}

/// `model.json`, `processor.json` and `tokenizer.json`.
fn save_description(
    dir: &Path,
    config: &ModelConfig,
    processor: &FileProcessor,
) -> anyhow::Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    fs::write(dir.join("model.json"), config.to_json()?)?;
    fs::write(
        dir.join("processor.json"),
        serde_json::to_string_pretty(&ProcessorConfig::of(processor))?,
    )?;
    processor
        .tokenizer
        .save(dir.join("tokenizer.json"), true)
        .map_err(|e| anyhow::anyhow!("writing {}/tokenizer.json: {e}", dir.display()))
}

/// Loads a model directory written by [`save_model_dir`].
pub fn load_model_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, FileProcessor)> {
    let config = read_model_config(dir)?;
    let path = dir.join("processor.json");
    let text = fs::read_to_string(&path).with_context(|| not_a_model_dir(&path, dir))?;
    let processor_config: ProcessorConfig =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = read_tokenizer(&tokenizer_path)?;
    let format = processor_config.format();
    let processor = match (
        &config,
        processor_config.preprocess,
        processor_config.image_patches,
    ) {
        (ModelConfig::Llava(config), Some(preprocess), None) => {
            Processor::new(config, tokenizer, preprocess, format).map_err(anyhow::Error::from)
        }
        (ModelConfig::QwenVl(config), None, Some(patches)) => {
            Processor::for_qwen_vl(config, tokenizer, patches, format).map_err(anyhow::Error::from)
        }
        (ModelConfig::Llava(_), _, _) => Err(anyhow::anyhow!(
            "a LLaVA-style model (model.json) needs field `preprocess` and no `image_patches`"
        )),
        (ModelConfig::QwenVl(_), _, _) => Err(anyhow::anyhow!(
            "a Qwen-VL model (model.json) needs field `image_patches` and no `preprocess`"
        )),
    }
    .with_context(|| format!("{}", path.display()))?;
    Ok((load_weights(dir, &config, device)?, processor.into()))
}

/// The model of a directory written by [`save_model_dir`], without its tokenizer and processor
/// (what `firempo forward` needs: weights and config only).
pub fn load_model_weights<B: Backend>(dir: &Path, device: &B::Device) -> anyhow::Result<Model<B>> {
    load_weights(dir, &read_model_config(dir)?, device)
}

/// `dir/model.json`, checked.
pub(super) fn read_model_config(dir: &Path) -> anyhow::Result<ModelConfig> {
    let path = dir.join("model.json");
    let text = fs::read_to_string(&path).with_context(|| not_a_model_dir(&path, dir))?;
    ModelConfig::from_json(&text, &path)
}

fn not_a_model_dir(path: &Path, dir: &Path) -> String {
    format!(
        "reading {} (is {} a firempo model directory, written by `firempo sft`?)",
        path.display(),
        dir.display()
    )
}

/// The weights of model directory `dir`: `model.mpk`, or for an adapter-only directory
/// (`base.json`) the base model's with the adapters merged.
fn load_weights<B: Backend>(
    dir: &Path,
    config: &ModelConfig,
    device: &B::Device,
) -> anyhow::Result<Model<B>> {
    match BaseModel::read(dir)? {
        Some(base) if !dir.join("model.mpk").exists() => {
            load_adapter_only(dir, &base, config, device)
        }
        _ => load_record_weights(dir, config, device),
    }
}

/// The weights in `dir/model.mpk`.
pub(super) fn load_record_weights<B: Backend>(
    dir: &Path,
    config: &ModelConfig,
    device: &B::Device,
) -> anyhow::Result<Model<B>> {
    config
        .load_weights::<B>(&dir.join("model.mpk"), device)
        .with_context(|| {
            format!(
                "{}/model.json and {}/model.mpk do not match",
                dir.display(),
                dir.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processor_json_without_special_tokens_reads_as_llava_1_5() {
        // processor.json as written before the begin/end tokens were recorded.
        let old = serde_json::json!({
            "preprocess": PreprocessConfig::grayscale(64),
            "template": PromptFormat::llava15().template,
        });
        let config: ProcessorConfig = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(config.format(), PromptFormat::llava15());
        // ...and is written back without the fields added since (the demo's processor too).
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(
            written.as_object().unwrap().keys().collect::<Vec<_>>(),
            ["bos_token", "eos_token", "preprocess", "template"]
        );
        let typo = serde_json::json!({
            "preprocess": PreprocessConfig::grayscale(64),
            "template": "{question} <image>",
            "eos": "</s>",
        });
        let err = serde_json::from_value::<ProcessorConfig>(typo)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `eos`"), "{err}");
    }
}
