//! A HuggingFace LLaVA checkpoint directory (llava-hf or original LLaVA) as a pipeline model: the
//! weights through the models crate's loader, `tokenizer.json`, the image preprocessing of its
//! `preprocessor_config.json` (original LLaVA: its vision tower's, with `image_aspect_ratio`), and
//! the prompt format rendered from the checkpoint's chat template (or a
//! named format, `--prompt-format`; see [`HfChatTemplate::for_checkpoint`]).

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use firempo_models::loading::{image_preprocessor, load_pretrained_with, LoadOptions};
use firempo_models::precision::WeightDType;
use firempo_models::{HfChatTemplate, Vlm};
use tokenizers::Tokenizer;

use super::processor::{Processor, PromptFormat};

/// Files a checkpoint directory needs besides its safetensors weights.
const REQUIRED: [(&str, &str); 2] = [
    ("config.json", "the model's HF config"),
    (
        "tokenizer.json",
        "a fast tokenizer; write one with \
         `AutoTokenizer.from_pretrained(dir).save_pretrained(dir)` in Python",
    ),
];

/// Whether `dir` looks like a HF checkpoint: a `config.json` next to safetensors weights.
pub fn is_hf_checkpoint(dir: &Path) -> bool {
    dir.join("config.json").is_file()
        && std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".safetensors")
            })
        })
}

/// The prompt format of checkpoint `dir` for `tokenizer`: the named `prompt_format` when given,
/// else the checkpoint's chat template; with neither, an error that lists the named formats.
pub fn checkpoint_format(
    dir: &Path,
    prompt_format: Option<&str>,
    tokenizer: &Tokenizer,
) -> anyhow::Result<PromptFormat> {
    let template = HfChatTemplate::for_checkpoint(dir, prompt_format)?;
    PromptFormat::from_chat_template(&template, tokenizer)
}

/// Loads a HF LLaVA checkpoint directory (decoder projections in `dtype`) and builds its
/// processor, with the named `prompt_format` or else the checkpoint's chat template.
pub fn load_hf_checkpoint<B: Backend>(
    dir: &Path,
    prompt_format: Option<&str>,
    dtype: WeightDType,
    device: &B::Device,
) -> anyhow::Result<(Vlm<B>, Processor)> {
    for (file, what) in REQUIRED {
        anyhow::ensure!(
            dir.join(file).is_file(),
            "{} has no {file}: the pipeline needs {what}",
            dir.display()
        );
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = Tokenizer::from_file(&tokenizer_path)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", tokenizer_path.display()))?;
    let format = checkpoint_format(dir, prompt_format, &tokenizer)?;
    let options = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    let preprocess = image_preprocessor(dir, &options)
        .and_then(|p| p.config())
        .with_context(|| {
            format!(
                "{}: the pipeline needs the image processor's settings: preprocessor_config.json \
                 from the model's HF repository (an original-LLaVA checkpoint: its vision \
                 tower's)",
                dir.display()
            )
        })?;
    let model = load_pretrained_with::<B>(dir, &options, device)
        .with_context(|| format!("loading the HF checkpoint {}", dir.display()))?;
    anyhow::ensure!(
        model.config.vision.is_some(),
        "{} is a text-only model; the pipeline needs a LLaVA-style checkpoint with a \
         `vision_config`",
        dir.display()
    );
    let processor =
        Processor::new(&model.config, tokenizer, preprocess, format).with_context(|| {
            format!(
                "{}: tokenizer.json, preprocessor_config.json and config.json disagree",
                dir.display()
            )
        })?;
    Ok((model, processor))
}
