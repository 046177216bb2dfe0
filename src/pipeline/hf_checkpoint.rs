//! A HuggingFace checkpoint directory (llava-hf, original LLaVA, Qwen2-VL, Qwen2.5-VL, Qwen3-VL)
//! as a pipeline model: the weights through the models crate's loaders, `tokenizer.json`, the
//! image processing of its `preprocessor_config.json` (original LLaVA: its vision tower's, with
//! `image_aspect_ratio`; Qwen-VL: native-resolution patches), and the prompt format rendered from
//! the checkpoint's chat template (or a named format, `--prompt-format`; see
//! [`HfChatTemplate::for_checkpoint`]).

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use firempo_models::loading::{image_preprocessor, LoadOptions};
use firempo_models::precision::WeightDType;
use firempo_models::{
    read_tokenizer, HfChatTemplate, Processor, PromptFormat, QwenImageProcessor, IMAGE_PLACEHOLDER,
    QWEN_IMAGE_PAD,
};
use tokenizers::Tokenizer;

use super::file_processor::FileProcessor;
use super::model::{is_qwen_vl_checkpoint, Model};

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
/// `image_token` is what the family's templates write for an image (`<image>`, or Qwen-VL's
/// `<|image_pad|>`).
pub fn checkpoint_format(
    dir: &Path,
    prompt_format: Option<&str>,
    tokenizer: &Tokenizer,
    image_token: &str,
) -> anyhow::Result<PromptFormat> {
    let template = HfChatTemplate::for_checkpoint(dir, prompt_format)?;
    Ok(PromptFormat::from_chat_template_for(
        &template,
        tokenizer,
        image_token,
    )?)
}

/// Loads a HF checkpoint directory of any family (decoder projections in `dtype`) and builds its
/// processor, with the named `prompt_format` or else the checkpoint's chat template.
pub fn load_hf_checkpoint<B: Backend>(
    dir: &Path,
    prompt_format: Option<&str>,
    dtype: WeightDType,
    device: &B::Device,
) -> anyhow::Result<(Model<B>, FileProcessor)> {
    for (file, what) in REQUIRED {
        anyhow::ensure!(
            dir.join(file).is_file(),
            "{} has no {file}: the pipeline needs {what}",
            dir.display()
        );
    }
    let tokenizer_path = dir.join("tokenizer.json");
    let tokenizer = read_tokenizer(&tokenizer_path)?;
    let image_token = if is_qwen_vl_checkpoint(dir) {
        QWEN_IMAGE_PAD
    } else {
        IMAGE_PLACEHOLDER
    };
    let format = checkpoint_format(dir, prompt_format, &tokenizer, image_token)?;
    let options = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    let model = Model::<B>::load_hf(dir, &options, device)?;
    let disagree = || {
        format!(
            "{}: tokenizer.json, preprocessor_config.json and config.json disagree",
            dir.display()
        )
    };
    let processor = match &model {
        Model::Llava(model) => {
            anyhow::ensure!(
                model.config.vision.is_some(),
                "{} is a text-only model; the pipeline needs a vision-language checkpoint \
                 (LLaVA-style with a `vision_config`, or Qwen-VL)",
                dir.display()
            );
            let preprocess = image_preprocessor(dir, &options)
                .and_then(|p| p.config())
                .with_context(|| needs_image_settings(dir))?;
            Processor::new(&model.config, tokenizer, preprocess, format).with_context(disagree)?
        }
        Model::QwenVl(model) => {
            let patches = QwenImageProcessor::from_file(&dir.join("preprocessor_config.json"))
                .with_context(|| needs_image_settings(dir))?;
            Processor::for_qwen_vl(&model.config, tokenizer, patches, format)
                .with_context(disagree)?
        }
    };
    Ok((model, processor.into()))
}

fn needs_image_settings(dir: &Path) -> String {
    format!(
        "{}: the pipeline needs the image processor's settings: preprocessor_config.json from \
         the model's HF repository (an original-LLaVA checkpoint: its vision tower's)",
        dir.display()
    )
}
