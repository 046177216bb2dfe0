//! A HuggingFace LLaVA checkpoint directory as a pipeline model: the weights through the models
//! crate's loader, `tokenizer.json`, `preprocessor_config.json` mapped onto the datasets crate's
//! [`PreprocessConfig`], and the prompt format rendered from the checkpoint's chat template (or a
//! named format, `--prompt-format`; see [`HfChatTemplate::for_checkpoint`]).

use std::path::Path;

use anyhow::Context;
use burn::tensor::backend::Backend;
use firempo_datasets::{ChannelMode, PreprocessConfig, Resample, Resize};
use firempo_models::{load_pretrained, HfChatTemplate, ImagePreprocessor, SizeSpec, Vlm};
use tokenizers::Tokenizer;

use super::processor::{Processor, PromptFormat};

/// Files a checkpoint directory needs besides its safetensors weights.
const REQUIRED: [(&str, &str); 3] = [
    ("config.json", "the model's HF config"),
    (
        "tokenizer.json",
        "a fast tokenizer; write one with \
         `AutoTokenizer.from_pretrained(dir).save_pretrained(dir)` in Python",
    ),
    (
        "preprocessor_config.json",
        "the image processor's settings (from the model's HF repository)",
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

/// Maps HF `preprocessor_config.json` settings onto the pipeline's preprocessing (RGB output).
pub fn preprocess_config(hf: &ImagePreprocessor, path: &Path) -> anyhow::Result<PreprocessConfig> {
    let unsupported = |field: &str, what: String| {
        anyhow::anyhow!(
            "{}: `{field}` {what} is not supported; use `shortest_edge` or a square `height`/`width`",
            path.display()
        )
    };
    let resize = match (hf.do_resize, hf.size) {
        (false, _) | (true, None) => Resize::None,
        (
            true,
            Some(SizeSpec {
                shortest_edge: Some(size),
                ..
            }),
        ) => Resize::ShortestEdge { size },
        (
            true,
            Some(SizeSpec {
                height: Some(height),
                width: Some(width),
                ..
            }),
        ) if height == width => Resize::Square { size: height },
        (true, Some(size)) => return Err(unsupported("size", format!("{size:?}"))),
    };
    let center_crop = match (hf.do_center_crop, hf.crop_size) {
        (false, _) => None,
        (
            true,
            Some(SizeSpec {
                height: Some(height),
                width: Some(width),
                ..
            }),
        ) => Some([height, width]),
        (true, crop) => return Err(unsupported("crop_size", format!("{crop:?}"))),
    };
    let channel_values = |values: &[f64], identity: f32| -> Vec<f32> {
        if hf.do_normalize {
            values.iter().map(|&v| v as f32).collect()
        } else {
            vec![identity]
        }
    };
    Ok(PreprocessConfig {
        resize,
        center_crop,
        rescale_factor: if hf.do_rescale {
            hf.rescale_factor as f32
        } else {
            1.0
        },
        image_mean: channel_values(&hf.image_mean, 0.0),
        image_std: channel_values(&hf.image_std, 1.0),
        channels: ChannelMode::Rgb,
        resample: match hf.resample {
            0 => Resample::Nearest,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            other => {
                return Err(anyhow::anyhow!(
                    "{}: `resample` {other} ({}) is not supported; use 0 (nearest), 2 (bilinear) \
                     or 3 (bicubic, CLIP's)",
                    path.display(),
                    pil_filter_name(other)
                ))
            }
        },
    })
}

/// PIL's name of a resample code, for error messages.
fn pil_filter_name(code: u32) -> &'static str {
    match code {
        1 => "PIL LANCZOS",
        4 => "PIL BOX",
        5 => "PIL HAMMING",
        _ => "not a PIL filter",
    }
}

/// Loads a HF LLaVA checkpoint directory and builds its processor, with the named
/// `prompt_format` or else the checkpoint's chat template.
pub fn load_hf_checkpoint<B: Backend>(
    dir: &Path,
    prompt_format: Option<&str>,
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
    let preprocessor_path = dir.join("preprocessor_config.json");
    let hf_preprocessor = ImagePreprocessor::from_file(&preprocessor_path)?;
    let preprocess = preprocess_config(&hf_preprocessor, &preprocessor_path)?;
    let model = load_pretrained::<B>(dir, device)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn preprocessor(resample: u32) -> ImagePreprocessor {
        serde_json::from_value(serde_json::json!({
            "size": {"shortest_edge": 336},
            "do_center_crop": true,
            "crop_size": {"height": 336, "width": 336},
            "resample": resample,
        }))
        .unwrap()
    }

    #[test]
    fn pil_resample_codes_map_and_unknown_ones_are_refused() {
        let path = Path::new("ckpt/preprocessor_config.json");
        for (code, want) in [
            (0, Resample::Nearest),
            (2, Resample::Bilinear),
            (3, Resample::Bicubic),
        ] {
            assert_eq!(
                preprocess_config(&preprocessor(code), path)
                    .unwrap()
                    .resample,
                want
            );
        }
        let err = preprocess_config(&preprocessor(1), path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ckpt/preprocessor_config.json")
                && err.contains("`resample` 1 (PIL LANCZOS)"),
            "{err}"
        );
    }
}
