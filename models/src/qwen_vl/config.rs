//! Qwen2-VL / Qwen2.5-VL `config.json` → [`QwenVlConfig`] (HF `configuration_qwen2_vl.py`,
//! `configuration_qwen2_5_vl.py`).
//!
//! Two layouts exist: Hub checkpoints keep the text fields at the top level with
//! `rope_scaling {"type": "mrope", "mrope_section": [...]}`; transformers 5's `save_pretrained`
//! nests them in `text_config` with `rope_parameters`. Both are read by overlaying `text_config`
//! on the top-level fields, so either place works.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::activation::Activation;
use crate::config::TextConfig;
use crate::error::ModelError;

/// `model_type`s this module reads.
pub const QWEN_VL_MODEL_TYPES: &str = "qwen2_vl, qwen2_5_vl, qwen3_vl";

/// Which Qwen-VL generation a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QwenVlFamily {
    /// `qwen2_vl`: LayerNorm vision blocks with a GELU-family MLP, full attention everywhere.
    Qwen2Vl,
    /// `qwen2_5_vl`: RMSNorm vision blocks with a SwiGLU MLP, window attention except in
    /// `fullatt_block_indexes`.
    Qwen25Vl,
    /// `qwen3_vl`: LayerNorm vision blocks with learned, interpolated position embeddings and
    /// DeepStack mergers; Qwen3 decoder (q/k RMSNorm) with interleaved M-RoPE.
    Qwen3Vl,
}

impl QwenVlFamily {
    /// The family of an HF `model_type`, if it is one of [`QWEN_VL_MODEL_TYPES`].
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "qwen2_vl" => Some(Self::Qwen2Vl),
            "qwen2_5_vl" => Some(Self::Qwen25Vl),
            "qwen3_vl" => Some(Self::Qwen3Vl),
            _ => None,
        }
    }
}

/// The vision tower of a Qwen-VL model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QwenVisionConfig {
    pub family: QwenVlFamily,
    pub depth: usize,
    /// Width of the vision blocks (`embed_dim` in Qwen2-VL, `hidden_size` in Qwen2.5-VL).
    pub d_model: usize,
    pub n_heads: usize,
    /// MLP width (`embed_dim · mlp_ratio` in Qwen2-VL, `intermediate_size` in Qwen2.5-VL).
    pub d_ff: usize,
    /// Merger output width = the decoder's `hidden_size`.
    pub out_dim: usize,
    pub activation: Activation,
    pub in_channels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub spatial_merge_size: usize,
    /// Base of the 2-D vision rotary embedding.
    pub rope_theta: f64,
    /// Window side in pixels (Qwen2.5-VL); `None`: every block attends to the whole image.
    pub window_size: Option<usize>,
    /// Blocks that attend to whole images even when `window_size` is set.
    pub fullatt_block_indexes: Vec<usize>,
    /// Qwen3-VL: size of the learned square position-embedding table (`side²`); 0 = none.
    pub num_position_embeddings: usize,
    /// Qwen3-VL: blocks whose outputs feed DeepStack mergers, in order.
    pub deepstack_visual_indexes: Vec<usize>,
}

impl QwenVisionConfig {
    /// Length of one flattened patch: `in_channels · temporal_patch_size · patch_size²`.
    pub fn patch_dim(&self) -> usize {
        self.in_channels * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

/// A whole Qwen-VL model: vision tower, merger and Qwen2 decoder with multimodal RoPE.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QwenVlConfig {
    pub family: QwenVlFamily,
    pub text: TextConfig,
    pub vision: QwenVisionConfig,
    /// How the decoder's `head_dim / 2` rotary frequencies split over (t, h, w).
    pub mrope_section: Vec<usize>,
    /// Qwen3-VL's interleaved frequency layout ([`crate::Rope::mrope_interleaved_tables`]).
    pub mrope_interleaved: bool,
    /// Qwen3 decoder: per-head RMSNorm on queries and keys.
    pub qk_norm: bool,
    pub image_token_id: usize,
    pub video_token_id: usize,
    pub vision_start_token_id: usize,
    pub vision_end_token_id: usize,
}

/// `rope_scaling` (Hub) or `rope_parameters` (transformers 5).
#[derive(Debug, Clone, Default, Deserialize)]
struct HfRope {
    #[serde(rename = "type")]
    kind: Option<String>,
    rope_type: Option<String>,
    mrope_section: Option<Vec<usize>>,
    mrope_interleaved: Option<bool>,
    rope_theta: Option<f64>,
}

/// The text fields of `config.json`, top level overlaid with `text_config`.
#[derive(Debug, Deserialize)]
struct HfText {
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f64>,
    rope_scaling: Option<HfRope>,
    rope_parameters: Option<HfRope>,
    max_position_embeddings: Option<usize>,
    hidden_act: Option<String>,
    tie_word_embeddings: Option<bool>,
    use_sliding_window: Option<bool>,
    attention_bias: Option<bool>,
    image_token_id: Option<usize>,
    video_token_id: Option<usize>,
    vision_start_token_id: Option<usize>,
    vision_end_token_id: Option<usize>,
}

/// `vision_config` of either family (fields named as HF names them).
#[derive(Debug, Deserialize)]
struct HfVision {
    depth: usize,
    embed_dim: Option<usize>,
    hidden_size: Option<usize>,
    mlp_ratio: Option<f64>,
    intermediate_size: Option<usize>,
    out_hidden_size: Option<usize>,
    num_heads: usize,
    hidden_act: Option<String>,
    in_channels: Option<usize>,
    in_chans: Option<usize>,
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    spatial_merge_size: Option<usize>,
    window_size: Option<usize>,
    fullatt_block_indexes: Option<Vec<usize>>,
    num_position_embeddings: Option<usize>,
    deepstack_visual_indexes: Option<Vec<usize>>,
    rope_parameters: Option<HfRope>,
}

fn read_json(path: &Path) -> Result<Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: path.into(),
        what: "a model config",
        message: e.to_string(),
    })
}

/// True when `path` (a `config.json`) describes a Qwen-VL model this module can load, so callers
/// can dispatch between [`crate::load_pretrained`] and [`crate::load_qwen_vl`].
pub fn is_qwen_vl_config(path: &Path) -> bool {
    read_json(path)
        .ok()
        .and_then(|v| v["model_type"].as_str().map(str::to_owned))
        .is_some_and(|t| QwenVlFamily::from_model_type(&t).is_some())
}

struct Fields<'a> {
    path: &'a Path,
}

impl Fields<'_> {
    fn err(&self, field: &str, message: impl Into<String>) -> ModelError {
        ModelError::ConfigField {
            path: PathBuf::from(self.path),
            field: field.into(),
            message: message.into(),
        }
    }

    fn activation(&self, field: &str, name: &str) -> Result<Activation, ModelError> {
        Activation::from_hf(name).ok_or_else(|| {
            self.err(
                field,
                format!("unsupported activation `{name}` (supported: gelu, gelu_pytorch_tanh, quick_gelu, silu)"),
            )
        })
    }
}

/// Reads a Qwen2-VL / Qwen2.5-VL `config.json` (either layout).
pub fn read_qwen_vl_config(path: &Path) -> Result<QwenVlConfig, ModelError> {
    let json = read_json(path)?;
    let f = Fields { path };
    let model_type = json["model_type"].as_str().unwrap_or("<missing>");
    let family = QwenVlFamily::from_model_type(model_type).ok_or_else(|| {
        ModelError::UnsupportedArchitecture {
            path: path.into(),
            found: format!("model_type `{model_type}`"),
            supported: QWEN_VL_MODEL_TYPES,
        }
    })?;
    let bad_json = |what: &str, e: serde_json::Error| f.err(what, e.to_string());

    // Top-level fields, overlaid with `text_config` where it has them.
    let mut merged = json.as_object().cloned().unwrap_or_default();
    merged.remove("vision_config");
    if let Some(Value::Object(text)) = merged.remove("text_config") {
        merged.extend(text);
    }
    let t: HfText =
        serde_json::from_value(Value::Object(merged)).map_err(|e| bad_json("text_config", e))?;
    let v: HfVision = serde_json::from_value(json["vision_config"].clone())
        .map_err(|e| bad_json("vision_config", e))?;

    if t.use_sliding_window == Some(true) {
        return Err(f.err(
            "use_sliding_window",
            "sliding-window decoder attention is not supported; set it to false",
        ));
    }
    let rope = t
        .rope_parameters
        .clone()
        .or(t.rope_scaling.clone())
        .unwrap_or_default();
    if let Some(kind) = rope.rope_type.as_deref().or(rope.kind.as_deref()) {
        if !matches!(kind, "mrope" | "default") {
            return Err(f.err(
                "rope_scaling.type",
                format!("`{kind}`: only multimodal RoPE (`mrope`/`default`) is supported"),
            ));
        }
    }
    let head_dim = t.head_dim.unwrap_or(t.hidden_size / t.num_attention_heads);
    let mrope_section = rope.mrope_section.clone().ok_or_else(|| {
        f.err(
            "rope_scaling.mrope_section",
            "missing: Qwen-VL needs the (t, h, w) split of the rotary frequencies, e.g. [16, 24, 24]",
        )
    })?;
    if mrope_section.iter().sum::<usize>() != head_dim / 2 || mrope_section.len() != 3 {
        return Err(f.err(
            "rope_scaling.mrope_section",
            format!(
                "{mrope_section:?} must be three numbers summing to head_dim / 2 = {}",
                head_dim / 2
            ),
        ));
    }
    // Hub configs put the decision at the top level; `text_config` may repeat it.
    let tie = json["tie_word_embeddings"]
        .as_bool()
        .or(t.tie_word_embeddings)
        .unwrap_or(false);
    let text = TextConfig {
        vocab_size: t.vocab_size,
        d_model: t.hidden_size,
        n_layers: t.num_hidden_layers,
        n_heads: t.num_attention_heads,
        n_kv_heads: t.num_key_value_heads.unwrap_or(t.num_attention_heads),
        head_dim,
        d_ff: t.intermediate_size,
        rms_norm_eps: t.rms_norm_eps.unwrap_or(1e-6),
        rope_theta: rope.rope_theta.or(t.rope_theta).unwrap_or(1_000_000.0),
        // Qwen2 decoders: q/k/v biases; Qwen3: `attention_bias` (false) on all four.
        qkv_bias: family != QwenVlFamily::Qwen3Vl || t.attention_bias == Some(true),
        o_bias: family == QwenVlFamily::Qwen3Vl && t.attention_bias == Some(true),
        mlp_bias: false,
        activation: f.activation("hidden_act", t.hidden_act.as_deref().unwrap_or("silu"))?,
        tie_word_embeddings: tie,
        max_position_embeddings: t.max_position_embeddings.unwrap_or(32_768),
    };

    let need = |value: Option<usize>, field: &str| {
        value.ok_or_else(|| f.err(&format!("vision_config.{field}"), "missing"))
    };
    let (d_model, d_ff, out_dim, act, window_size, fullatt) = match family {
        QwenVlFamily::Qwen2Vl => {
            let d = need(v.embed_dim, "embed_dim")?;
            let ratio = v.mlp_ratio.unwrap_or(4.0);
            let out = v.hidden_size.unwrap_or(text.d_model);
            (
                d,
                (d as f64 * ratio) as usize,
                out,
                v.hidden_act.as_deref().unwrap_or("quick_gelu"),
                None,
                Vec::new(),
            )
        }
        QwenVlFamily::Qwen25Vl => (
            need(v.hidden_size, "hidden_size")?,
            need(v.intermediate_size, "intermediate_size")?,
            v.out_hidden_size.unwrap_or(text.d_model),
            v.hidden_act.as_deref().unwrap_or("silu"),
            Some(v.window_size.unwrap_or(112)),
            v.fullatt_block_indexes
                .clone()
                .unwrap_or_else(|| vec![7, 15, 23, 31]),
        ),
        QwenVlFamily::Qwen3Vl => (
            need(v.hidden_size, "hidden_size")?,
            need(v.intermediate_size, "intermediate_size")?,
            v.out_hidden_size.unwrap_or(text.d_model),
            v.hidden_act.as_deref().unwrap_or("gelu_pytorch_tanh"),
            None,
            Vec::new(),
        ),
    };
    let qwen3 = family == QwenVlFamily::Qwen3Vl;
    let vision = QwenVisionConfig {
        family,
        depth: v.depth,
        d_model,
        n_heads: v.num_heads,
        d_ff,
        out_dim,
        activation: f.activation("vision_config.hidden_act", act)?,
        in_channels: v.in_channels.or(v.in_chans).unwrap_or(3),
        patch_size: v.patch_size.unwrap_or(14),
        temporal_patch_size: v.temporal_patch_size.unwrap_or(2),
        spatial_merge_size: v.spatial_merge_size.unwrap_or(2),
        rope_theta: v
            .rope_parameters
            .as_ref()
            .and_then(|r| r.rope_theta)
            .unwrap_or(10_000.0),
        window_size,
        fullatt_block_indexes: fullatt,
        num_position_embeddings: if qwen3 {
            need(v.num_position_embeddings, "num_position_embeddings")?
        } else {
            0
        },
        deepstack_visual_indexes: if qwen3 {
            v.deepstack_visual_indexes.clone().unwrap_or_default()
        } else {
            Vec::new()
        },
    };
    let side = (vision.num_position_embeddings as f64).sqrt() as usize;
    if side * side != vision.num_position_embeddings {
        return Err(f.err(
            "vision_config.num_position_embeddings",
            format!("{} is not a square number", vision.num_position_embeddings),
        ));
    }
    if let Some(&i) = vision
        .deepstack_visual_indexes
        .iter()
        .find(|&&i| i >= vision.depth)
    {
        return Err(f.err(
            "vision_config.deepstack_visual_indexes",
            format!("block {i} does not exist (depth {})", vision.depth),
        ));
    }
    if vision.deepstack_visual_indexes.len() > text.n_layers {
        return Err(f.err(
            "vision_config.deepstack_visual_indexes",
            format!(
                "{} DeepStack levels but only {} decoder layers",
                vision.deepstack_visual_indexes.len(),
                text.n_layers
            ),
        ));
    }
    if vision.out_dim != text.d_model {
        return Err(f.err(
            "vision_config.out_hidden_size",
            format!(
                "merger output {} must equal the decoder's hidden_size {}",
                vision.out_dim, text.d_model
            ),
        ));
    }
    if vision.n_heads == 0
        || !vision.d_model.is_multiple_of(vision.n_heads)
        || !vision.head_dim().is_multiple_of(4)
    {
        return Err(f.err(
            "vision_config.num_heads",
            format!(
                "width {} must split into heads whose size is a multiple of 4",
                vision.d_model
            ),
        ));
    }
    if let Some(w) = window_size {
        if w < vision.patch_size * vision.spatial_merge_size {
            return Err(f.err(
                "vision_config.window_size",
                format!(
                    "{w} px is smaller than one merged patch ({} px)",
                    vision.patch_size * vision.spatial_merge_size
                ),
            ));
        }
    }
    let token = |value: Option<usize>, field: &str| {
        value.ok_or_else(|| f.err(field, "missing special-token id"))
    };
    Ok(QwenVlConfig {
        family,
        text,
        vision,
        mrope_section,
        mrope_interleaved: rope.mrope_interleaved.unwrap_or(false),
        qk_norm: qwen3,
        image_token_id: token(t.image_token_id, "image_token_id")?,
        video_token_id: t.video_token_id.unwrap_or(usize::MAX),
        vision_start_token_id: token(t.vision_start_token_id, "vision_start_token_id")?,
        vision_end_token_id: token(t.vision_end_token_id, "vision_end_token_id")?,
    })
}
