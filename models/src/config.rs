//! Runtime configuration of a LLaVA-style model: vision tower, projector and decoder.
//!
//! Follows the two-level layout of candle's `models/llava/config.rs`: the serde mirror of the
//! checkpoint's `config.json` lives in `loading/hf_config.rs` and converts into these structs.

use serde::{Deserialize, Serialize};

use crate::activation::Activation;
use crate::error::ModelError;

/// The largest image side a vision tower (and the image preprocessing) may ask for, in pixels.
pub const MAX_IMAGE_SIDE: usize = 4096;

/// Which vision features LLaVA keeps (HF `vision_feature_select_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatureSelect {
    /// Drop the first token (the class token of CLIP).
    Default,
    /// Keep every token.
    Full,
}

/// Which tensor-name layout a checkpoint used; adapters are saved with the same layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NameStyle {
    /// Hub checkpoints written before transformers 4.52: `language_model.model.layers.*`.
    Legacy,
    /// transformers ≥ 4.52: `model.language_model.layers.*`.
    Current,
    /// The original LLaVA repository (`LlavaMistralForCausalLM` …): `model.layers.*`,
    /// `model.mm_projector.*`.
    Original,
}

/// Layers of the multimodal projector (original LLaVA `mm_projector_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectorKind {
    /// `linear_2(act(linear_1(x)))`: llava-hf's `LlavaMultiModalProjector`, LLaVA's `mlp2x_gelu`.
    #[default]
    Mlp2x,
    /// One `linear_1(x)`: LLaVA-1's `linear` projector.
    Linear,
}

/// How a non-square image becomes the square the vision tower reads (original LLaVA
/// `image_aspect_ratio`, applied by [`crate::ImagePreprocessor`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageAspectRatio {
    /// The preprocessor's own resize and center crop (llava-hf; LLaVA's `square`).
    #[default]
    Square,
    /// Pad to a square with the image-mean colour first (LLaVA's `pad`, `expand2square`).
    Pad,
}

/// CLIP/SigLIP-style vision transformer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VisionConfig {
    pub image_size: usize,
    pub patch_size: usize,
    pub num_channels: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub d_ff: usize,
    pub n_layers: usize,
    pub layer_norm_eps: f64,
    pub activation: Activation,
    /// CLIP prepends a learned class token; SigLIP does not.
    pub class_token: bool,
    /// CLIP's `pre_layrnorm` after the embeddings.
    pub pre_norm: bool,
    /// Whether the patch-embedding convolution has a bias (SigLIP: yes, CLIP: no).
    pub patch_bias: bool,
}

impl VisionConfig {
    /// Patches along one side.
    pub fn grid(&self) -> usize {
        self.image_size / self.patch_size
    }

    /// Tokens the encoder produces per image (patches plus the class token).
    pub fn n_positions(&self) -> usize {
        self.grid() * self.grid() + usize::from(self.class_token)
    }

    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }
}

/// LLaMA-family decoder (LLaMA, Mistral, Qwen2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextConfig {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f64,
    /// Bias on q/k/v projections (Qwen2).
    pub qkv_bias: bool,
    /// Bias on the output projection.
    pub o_bias: bool,
    /// Bias on gate/up/down projections.
    pub mlp_bias: bool,
    pub activation: Activation,
    /// Output projection shares the token-embedding matrix.
    pub tie_word_embeddings: bool,
    pub max_position_embeddings: usize,
}

/// The whole model: vision tower → projector → decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VlmConfig {
    /// `None` for a text-only causal LM.
    pub vision: Option<VisionConfig>,
    pub text: TextConfig,
    /// Hidden-state indices the projector reads (HF `vision_feature_layer`, negative = from the end).
    pub vision_feature_layers: Vec<i64>,
    pub vision_feature_select: FeatureSelect,
    pub projector_activation: Activation,
    pub projector_bias: bool,
    /// Token id that marks one image-feature position in `input_ids`; `vocab_size` when the
    /// vocabulary has no image token (original-LLaVA checkpoints, whose prompts carry one
    /// [`crate::IMAGE_TOKEN_INDEX`] per image instead).
    pub image_token_id: usize,
    pub name_style: NameStyle,
    /// Absent from `model.json` files written before it existed: `Mlp2x`.
    #[serde(default)]
    pub projector_kind: ProjectorKind,
    /// Absent from `model.json` files written before it existed: `Square`.
    #[serde(default)]
    pub image_aspect_ratio: ImageAspectRatio,
}

impl VlmConfig {
    /// A tiny LLaVA with a LLaMA decoder for CPU tests and demos (32 px images, 16 patches).
    pub fn tiny() -> Self {
        Self {
            vision: Some(VisionConfig {
                image_size: 32,
                patch_size: 8,
                num_channels: 3,
                d_model: 64,
                n_heads: 4,
                d_ff: 128,
                n_layers: 2,
                layer_norm_eps: 1e-5,
                activation: Activation::QuickGelu,
                class_token: true,
                pre_norm: true,
                patch_bias: false,
            }),
            text: TextConfig {
                vocab_size: 256,
                d_model: 64,
                n_layers: 2,
                n_heads: 4,
                n_kv_heads: 2,
                head_dim: 16,
                d_ff: 128,
                rms_norm_eps: 1e-6,
                rope_theta: 10_000.0,
                qkv_bias: false,
                o_bias: false,
                mlp_bias: false,
                activation: Activation::Silu,
                tie_word_embeddings: false,
                max_position_embeddings: 2048,
            },
            vision_feature_layers: vec![-2],
            vision_feature_select: FeatureSelect::Default,
            projector_activation: Activation::Gelu,
            projector_bias: true,
            image_token_id: 255,
            name_style: NameStyle::Current,
            projector_kind: ProjectorKind::Mlp2x,
            image_aspect_ratio: ImageAspectRatio::Square,
        }
    }

    /// A small model for CPU benchmarks: the tiny vision tower (64 px, 64 patches) and a 4-layer,
    /// 256-wide GQA decoder with a 2048-token vocabulary (~5 M parameters).
    pub fn small() -> Self {
        let mut c = Self::tiny();
        if let Some(v) = c.vision.as_mut() {
            v.image_size = 64;
        }
        c.text = TextConfig {
            vocab_size: 2048,
            d_model: 256,
            n_layers: 4,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 32,
            d_ff: 688,
            ..c.text
        };
        c.image_token_id = 2047;
        c
    }

    /// LLaVA-1.5-7B (`llava-hf/llava-1.5-7b-hf`: CLIP ViT-L/14-336 + Vicuna-7B).
    pub fn llava_1_5_7b() -> Self {
        Self {
            vision: Some(VisionConfig {
                image_size: 336,
                patch_size: 14,
                num_channels: 3,
                d_model: 1024,
                n_heads: 16,
                d_ff: 4096,
                n_layers: 24,
                layer_norm_eps: 1e-5,
                activation: Activation::QuickGelu,
                class_token: true,
                pre_norm: true,
                patch_bias: false,
            }),
            text: TextConfig {
                vocab_size: 32064,
                d_model: 4096,
                n_layers: 32,
                n_heads: 32,
                n_kv_heads: 32,
                head_dim: 128,
                d_ff: 11008,
                rms_norm_eps: 1e-5,
                rope_theta: 10_000.0,
                qkv_bias: false,
                o_bias: false,
                mlp_bias: false,
                activation: Activation::Silu,
                tie_word_embeddings: false,
                max_position_embeddings: 4096,
            },
            vision_feature_layers: vec![-2],
            vision_feature_select: FeatureSelect::Default,
            projector_activation: Activation::Gelu,
            projector_bias: true,
            image_token_id: 32000,
            name_style: NameStyle::Legacy,
            projector_kind: ProjectorKind::Mlp2x,
            image_aspect_ratio: ImageAspectRatio::Square,
        }
    }

    /// Image-feature tokens per image that the prompt must contain.
    pub fn image_tokens_per_image(&self) -> usize {
        let n = self.vision.as_ref().map_or(0, VisionConfig::n_positions);
        match self.vision_feature_select {
            FeatureSelect::Default => n.saturating_sub(1),
            FeatureSelect::Full => n,
        }
    }

    /// Checks sizes that must divide or agree; names the field and the fix.
    pub fn validate(&self) -> Result<(), ModelError> {
        let t = &self.text;
        let text_checks = [
            (
                t.n_kv_heads > 0 && t.n_heads.is_multiple_of(t.n_kv_heads),
                "text.n_heads",
                format!(
                    "{} must be a multiple of n_kv_heads {}",
                    t.n_heads, t.n_kv_heads
                ),
            ),
            (
                t.head_dim.is_multiple_of(2) && t.head_dim > 0,
                "text.head_dim",
                format!("{} must be even (RoPE rotates pairs)", t.head_dim),
            ),
            (
                t.vocab_size > 0 && t.n_layers > 0,
                "text.vocab_size",
                "vocab_size and n_layers must be > 0".into(),
            ),
        ];
        for (ok, field, message) in text_checks {
            if !ok {
                return Err(ModelError::InvalidConfig {
                    field: field.into(),
                    message,
                });
            }
        }
        self.check_bounds()?;
        let Some(v) = &self.vision else {
            return Ok(());
        };
        let checks: [(bool, &str, String); 5] = [
            (
                v.patch_size > 0 && v.image_size.is_multiple_of(v.patch_size),
                "vision.image_size",
                format!(
                    "{} must be a multiple of patch_size {}",
                    v.image_size, v.patch_size
                ),
            ),
            (
                v.n_heads > 0 && v.d_model.is_multiple_of(v.n_heads),
                "vision.d_model",
                format!("{} must be a multiple of n_heads {}", v.d_model, v.n_heads),
            ),
            (
                self.image_token_id <= t.vocab_size,
                "image_token_id",
                format!(
                    "{} must be < vocab_size {} (or = vocab_size for a vocabulary without an image token)",
                    self.image_token_id, t.vocab_size
                ),
            ),
            (
                !self.vision_feature_layers.is_empty(),
                "vision_feature_layers",
                "give at least one layer index (LLaVA uses -2)".into(),
            ),
            (
                self.vision_feature_layers.iter().all(|&l| {
                    let n = v.n_layers as i64;
                    (-(n + 1)..=n).contains(&l)
                }),
                "vision_feature_layers",
                format!(
                    "{:?} must index hidden states -{}..={}",
                    self.vision_feature_layers,
                    v.n_layers + 1,
                    v.n_layers
                ),
            ),
        ];
        for (ok, field, message) in checks {
            if !ok {
                return Err(ModelError::InvalidConfig {
                    field: field.into(),
                    message,
                });
            }
        }
        if self.vision_feature_select == FeatureSelect::Default && !v.class_token {
            tracing::warn!("feature select `default` drops the first patch of a class-token-free tower, as HF does");
        }
        Ok(())
    }

    /// Upper bounds far above any published LLaVA-style model, so a mistyped or crafted config
    /// is refused instead of building a model that exhausts memory.
    fn check_bounds(&self) -> Result<(), ModelError> {
        let t = &self.text;
        let mut sizes = vec![
            ("text.vocab_size", t.vocab_size, 1 << 22),
            ("text.d_model", t.d_model, 1 << 16),
            ("text.n_layers", t.n_layers, 1024),
            ("text.n_heads", t.n_heads, 1024),
            ("text.n_kv_heads", t.n_kv_heads, 1024),
            ("text.head_dim", t.head_dim, 1024),
            ("text.d_ff", t.d_ff, 1 << 20),
            (
                "text.max_position_embeddings",
                t.max_position_embeddings,
                1 << 22,
            ),
        ];
        if let Some(v) = &self.vision {
            sizes.extend([
                ("vision.image_size", v.image_size, MAX_IMAGE_SIDE),
                ("vision.num_channels", v.num_channels, 4),
                ("vision.d_model", v.d_model, 1 << 16),
                ("vision.n_heads", v.n_heads, 1024),
                ("vision.d_ff", v.d_ff, 1 << 20),
                ("vision.n_layers", v.n_layers, 1024),
            ]);
        }
        if let Some((field, value, max)) = sizes.into_iter().find(|(_, v, max)| v > max) {
            return Err(ModelError::InvalidConfig {
                field: field.into(),
                message: format!("{value} is above the supported maximum {max}"),
            });
        }
        if t.max_position_embeddings == 0 {
            return Err(ModelError::InvalidConfig {
                field: "text.max_position_embeddings".into(),
                message: "must be > 0".into(),
            });
        }
        if let Some(v) = self.vision.as_ref().filter(|v| v.patch_size > 0) {
            let positions = (v.image_size / v.patch_size).pow(2);
            if positions.saturating_mul(v.d_model) > 1 << 28 {
                return Err(ModelError::InvalidConfig {
                    field: "vision.patch_size".into(),
                    message: format!(
                        "{} px images in {} px patches give {positions} positions of width {}: \
                         a position table above 2^28 values; use larger patches",
                        v.image_size, v.patch_size, v.d_model
                    ),
                });
            }
        }
        Ok(())
    }

    /// Hidden-state indices (0 = embeddings) the projector reads, resolved from the end.
    pub fn resolved_feature_layers(&self) -> Vec<usize> {
        let n = self.vision.as_ref().map_or(0, |v| v.n_layers) as i64 + 1;
        self.vision_feature_layers
            .iter()
            .map(|&l| if l < 0 { (n + l) as usize } else { l as usize })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_count_image_tokens() {
        VlmConfig::tiny().validate().unwrap();
        VlmConfig::small().validate().unwrap();
        assert_eq!(VlmConfig::small().image_tokens_per_image(), 64);
        let llava = VlmConfig::llava_1_5_7b();
        llava.validate().unwrap();
        assert_eq!(llava.image_tokens_per_image(), 576);
        assert_eq!(VlmConfig::tiny().image_tokens_per_image(), 16);
        assert_eq!(VlmConfig::tiny().resolved_feature_layers(), vec![1]);
    }

    #[test]
    fn absurd_sizes_are_rejected_by_name() {
        let mut c = VlmConfig::tiny();
        c.text.n_layers = 1_000_000_000;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("text.n_layers") && err.contains("1000000000"),
            "{err}"
        );
        let mut c = VlmConfig::tiny();
        let v = c.vision.as_mut().unwrap();
        v.image_size = 4096;
        v.patch_size = 1;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("vision.patch_size"), "{err}");
        let mut c = VlmConfig::tiny();
        c.text.max_position_embeddings = 0;
        assert!(c.validate().is_err());
        VlmConfig::llava_1_5_7b().validate().unwrap();
    }

    #[test]
    fn bad_gqa_is_rejected_by_name() {
        let mut c = VlmConfig::tiny();
        c.text.n_kv_heads = 3;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("text.n_heads"), "{err}");
    }
}
