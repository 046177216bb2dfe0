//! Serde mirror of HF `config.json` (LLaVA with nested `text_config`/`vision_config`, and plain
//! `LlamaForCausalLM` / `MistralForCausalLM` / `Qwen2ForCausalLM`), converted into [`VlmConfig`].
//! Original-LLaVA configs (`llava_llama` / `llava_mistral` / `llava_qwen2`) are handed to
//! [`super::original_llava`].
//!
//! Accepts both config layouts in circulation: `rope_theta` (transformers < 5) or
//! `rope_parameters.rope_theta` (transformers 5), `image_token_index` or `image_token_id`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::original_llava;
use super::LoadOptions;
use crate::activation::Activation;
use crate::config::{
    FeatureSelect, ImageAspectRatio, NameStyle, ProjectorKind, TextConfig, VisionConfig, VlmConfig,
};
use crate::error::ModelError;

const SUPPORTED: &str = "LlavaForConditionalGeneration, LlamaForCausalLM, MistralForCausalLM, \
     Qwen2ForCausalLM, and original LLaVA's LlavaLlamaForCausalLM, LlavaMistralForCausalLM, \
     LlavaQwen2ForCausalLM";

#[derive(Debug, Deserialize)]
pub(super) struct HfText {
    pub(super) model_type: Option<String>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_parameters: Option<Value>,
    rope_scaling: Option<Value>,
    attention_bias: Option<bool>,
    mlp_bias: Option<bool>,
    hidden_act: Option<String>,
    tie_word_embeddings: Option<bool>,
    max_position_embeddings: Option<usize>,
}

#[derive(Debug, Deserialize)]
pub(super) struct HfVision {
    model_type: Option<String>,
    image_size: usize,
    patch_size: usize,
    num_channels: Option<usize>,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    layer_norm_eps: Option<f64>,
    hidden_act: Option<String>,
}

#[derive(Debug, Deserialize)]
struct HfLlava {
    text_config: HfText,
    vision_config: HfVision,
    image_token_index: Option<usize>,
    image_token_id: Option<usize>,
    vision_feature_layer: Option<Value>,
    vision_feature_select_strategy: Option<String>,
    projector_hidden_act: Option<String>,
    multimodal_projector_bias: Option<bool>,
    tie_word_embeddings: Option<bool>,
}

/// Reads `config.json` and converts it. The name style is decided later from the tensor names.
pub fn read_hf_config(path: &Path) -> Result<VlmConfig, ModelError> {
    read_hf_config_with(path, &LoadOptions::default())
}

/// [`read_hf_config`] with options (an original-LLaVA config reads its vision tower's
/// `config.json` from `options.vision_tower` or the directory its `mm_vision_tower` names).
pub fn read_hf_config_with(path: &Path, options: &LoadOptions) -> Result<VlmConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    parse_hf_config_with(&text, path, options)
}

/// Parses the text of a `config.json` (`path` names the file in errors; an original-LLaVA config
/// also finds its vision tower relative to it).
pub fn parse_hf_config(text: &str, path: &Path) -> Result<VlmConfig, ModelError> {
    parse_hf_config_with(text, path, &LoadOptions::default())
}

/// The JSON of a `config.json` text.
pub(super) fn parse_json(text: &str, path: &Path) -> Result<Value, ModelError> {
    serde_json::from_str(text).map_err(|e| ModelError::Json {
        path: path.into(),
        what: "a HuggingFace config",
        message: e.to_string(),
    })
}

/// `architectures[0]`, else `model_type`: what a config says it is.
pub(super) fn architecture(raw: &Value) -> String {
    raw["architectures"][0]
        .as_str()
        .or_else(|| raw["model_type"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// [`parse_hf_config`] with options.
pub fn parse_hf_config_with(
    text: &str,
    path: &Path,
    options: &LoadOptions,
) -> Result<VlmConfig, ModelError> {
    let json_err = |e: serde_json::Error| ModelError::Json {
        path: path.into(),
        what: "a HuggingFace config",
        message: e.to_string(),
    };
    let raw = parse_json(text, path)?;
    let arch = architecture(&raw);
    let field = |field: &str, message: String| ModelError::ConfigField {
        path: path.into(),
        field: field.into(),
        message,
    };
    if original_llava::is_original_architecture(&arch) {
        return original_llava::OriginalLlava::from_json(raw, path, options).map(|o| o.config);
    }
    match arch.as_str() {
        "LlavaForConditionalGeneration" | "llava" => {
            let hf: HfLlava = serde_json::from_value(raw).map_err(json_err)?;
            let tie_top = hf.tie_word_embeddings;
            let text = text_config(&hf.text_config, tie_top, path)?;
            let vision = vision_config(&hf.vision_config, path)?;
            let image_token_id = hf.image_token_id.or(hf.image_token_index).ok_or_else(|| {
                field("image_token_index", "missing; LLaVA-1.5 uses 32000".into())
            })?;
            let vision_feature_layers = match hf.vision_feature_layer {
                None => vec![-2],
                Some(Value::Number(n)) => vec![n.as_i64().unwrap_or(-2)],
                Some(Value::Array(a)) => a.iter().filter_map(Value::as_i64).collect(),
                Some(other) => {
                    return Err(field(
                        "vision_feature_layer",
                        format!("{other} is neither an integer nor a list"),
                    ))
                }
            };
            let vision_feature_select = match hf.vision_feature_select_strategy.as_deref() {
                None | Some("default") => FeatureSelect::Default,
                Some("full") => FeatureSelect::Full,
                Some(other) => {
                    return Err(field(
                        "vision_feature_select_strategy",
                        format!("`{other}`; use `default` or `full`"),
                    ))
                }
            };
            let act = hf.projector_hidden_act.as_deref().unwrap_or("gelu");
            let projector_activation = Activation::from_hf(act)
                .ok_or_else(|| field("projector_hidden_act", format!("unsupported `{act}`")))?;
            let config = VlmConfig {
                vision: Some(vision),
                text,
                vision_feature_layers,
                vision_feature_select,
                projector_activation,
                projector_bias: hf.multimodal_projector_bias.unwrap_or(true),
                image_token_id,
                name_style: NameStyle::Current,
                projector_kind: ProjectorKind::Mlp2x,
                image_aspect_ratio: ImageAspectRatio::Square,
            };
            config.validate()?;
            Ok(config)
        }
        "LlamaForCausalLM" | "MistralForCausalLM" | "Qwen2ForCausalLM" | "llama" | "mistral"
        | "qwen2" => {
            let hf: HfText = serde_json::from_value(raw).map_err(json_err)?;
            let text = text_config(&hf, None, path)?;
            let config = VlmConfig {
                vision: None,
                image_token_id: text.vocab_size,
                text,
                vision_feature_layers: vec![-2],
                vision_feature_select: FeatureSelect::Default,
                projector_activation: Activation::Gelu,
                projector_bias: true,
                name_style: NameStyle::Current,
                projector_kind: ProjectorKind::Mlp2x,
                image_aspect_ratio: ImageAspectRatio::Square,
            };
            config.validate()?;
            Ok(config)
        }
        other => Err(ModelError::UnsupportedArchitecture {
            path: path.into(),
            found: other.into(),
            supported: SUPPORTED,
        }),
    }
}

fn text_config(hf: &HfText, tie_top: Option<bool>, path: &Path) -> Result<TextConfig, ModelError> {
    text_config_at(hf, tie_top, path, "text_config.")
}

/// The decoder of `hf`, whose fields sit under `prefix` in the file (`text_config.` in llava-hf
/// configs, the top level in plain causal LMs and original-LLaVA configs).
pub(super) fn text_config_at(
    hf: &HfText,
    tie_top: Option<bool>,
    path: &Path,
    prefix: &str,
) -> Result<TextConfig, ModelError> {
    let field = |field: &str, message: String| ModelError::ConfigField {
        path: PathBuf::from(path),
        field: format!("{prefix}{field}"),
        message,
    };
    let family = hf.model_type.as_deref().unwrap_or("llama");
    if !matches!(family, "llama" | "mistral" | "qwen2") {
        return Err(field(
            "model_type",
            format!("`{family}`; supported decoders: llama, mistral, qwen2"),
        ));
    }
    let rope_theta = rope_theta(hf).map_err(|m| field("rope_parameters", m))?;
    let act = hf.hidden_act.as_deref().unwrap_or("silu");
    let activation = Activation::from_hf(act)
        .ok_or_else(|| field("hidden_act", format!("unsupported `{act}`")))?;
    // Qwen2 always has q/k/v biases; LLaMA's `attention_bias` covers q/k/v and o.
    let attention_bias = hf.attention_bias.unwrap_or(false);
    let qkv_bias = family == "qwen2" || attention_bias;
    Ok(TextConfig {
        vocab_size: hf.vocab_size,
        d_model: hf.hidden_size,
        n_layers: hf.num_hidden_layers,
        n_heads: hf.num_attention_heads,
        n_kv_heads: hf.num_key_value_heads.unwrap_or(hf.num_attention_heads),
        head_dim: hf
            .head_dim
            .unwrap_or(hf.hidden_size / hf.num_attention_heads.max(1)),
        d_ff: hf.intermediate_size,
        rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
        rope_theta,
        qkv_bias,
        o_bias: family != "qwen2" && attention_bias,
        mlp_bias: hf.mlp_bias.unwrap_or(false),
        activation,
        tie_word_embeddings: hf.tie_word_embeddings.or(tie_top).unwrap_or(false),
        max_position_embeddings: hf.max_position_embeddings.unwrap_or(4096),
    })
}

/// θ from `rope_theta` or `rope_parameters` / `rope_scaling` (only the `default` RoPE type).
fn rope_theta(hf: &HfText) -> Result<f64, String> {
    for params in [&hf.rope_parameters, &hf.rope_scaling]
        .into_iter()
        .flatten()
    {
        if params.is_null() {
            continue;
        }
        let kind = params
            .get("rope_type")
            .or_else(|| params.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if kind != "default" {
            return Err(format!(
                "RoPE type `{kind}` is not supported (only `default`); use a checkpoint without rope scaling"
            ));
        }
        if let Some(theta) = params.get("rope_theta").and_then(Value::as_f64) {
            return Ok(theta);
        }
    }
    Ok(hf.rope_theta.unwrap_or(10_000.0))
}

pub(super) fn vision_config(hf: &HfVision, path: &Path) -> Result<VisionConfig, ModelError> {
    let kind = hf.model_type.as_deref().unwrap_or("clip_vision_model");
    let siglip = match kind {
        "clip_vision_model" => false,
        "siglip_vision_model" => true,
        other => {
            return Err(ModelError::ConfigField {
                path: path.into(),
                field: "vision_config.model_type".into(),
                message: format!("`{other}`; supported: clip_vision_model, siglip_vision_model"),
            })
        }
    };
    let default_act = if siglip {
        "gelu_pytorch_tanh"
    } else {
        "quick_gelu"
    };
    let act = hf.hidden_act.as_deref().unwrap_or(default_act);
    let activation = Activation::from_hf(act).ok_or_else(|| ModelError::ConfigField {
        path: path.into(),
        field: "vision_config.hidden_act".into(),
        message: format!("unsupported `{act}`"),
    })?;
    Ok(VisionConfig {
        image_size: hf.image_size,
        patch_size: hf.patch_size,
        num_channels: hf.num_channels.unwrap_or(3),
        d_model: hf.hidden_size,
        n_heads: hf.num_attention_heads,
        d_ff: hf.intermediate_size,
        n_layers: hf.num_hidden_layers,
        layer_norm_eps: hf
            .layer_norm_eps
            .unwrap_or(if siglip { 1e-6 } else { 1e-5 }),
        activation,
        class_token: !siglip,
        pre_norm: !siglip,
        patch_bias: siglip,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<VlmConfig, ModelError> {
        parse_hf_config(s, Path::new("config.json"))
    }

    #[test]
    fn plain_qwen2_causal_lm_with_rope_parameters() {
        let c = parse(
            r#"{"architectures":["Qwen2ForCausalLM"],"model_type":"qwen2","vocab_size":100,"hidden_size":64,
            "intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"num_key_value_heads":2,
            "rope_parameters":{"rope_type":"default","rope_theta":1000000.0},"tie_word_embeddings":true}"#,
        )
        .unwrap();
        assert!(c.vision.is_none());
        assert_eq!(c.text.rope_theta, 1e6);
        assert!(c.text.qkv_bias && !c.text.o_bias && c.text.tie_word_embeddings);
        assert_eq!(c.text.head_dim, 16);
    }

    #[test]
    fn errors_name_the_field() {
        let err = parse(r#"{"architectures":["GPT2LMHeadModel"]}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("GPT2LMHeadModel") && err.contains("LlamaForCausalLM"),
            "{err}"
        );
        let err = parse(
            r#"{"architectures":["LlamaForCausalLM"],"vocab_size":100,"hidden_size":64,"intermediate_size":128,
            "num_hidden_layers":2,"num_attention_heads":4,"rope_scaling":{"rope_type":"yarn","factor":4.0}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("yarn") && err.contains("rope_parameters"),
            "{err}"
        );
        let err = parse(r#"{"architectures":["LlamaForCausalLM"],"vocab_size":"x"}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("config.json"), "{err}");
    }
}
