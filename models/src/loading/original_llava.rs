//! Checkpoints in the original LLaVA repository layout (haotian-liu/LLaVA `llava/model/`), as
//! LLaVA-Med v1.5 (`LlavaMistralForCausalLM`) and HuatuoGPT-Vision-7B (`LlavaQwen2ForCausalLM`)
//! are published: the decoder's fields at the top level of `config.json`, the multimodal ones as
//! `mm_*`, and the vision tower in its own directory, named by `mm_vision_tower`
//! (`llava/model/multimodal_encoder/clip_encoder.py` loads it with `CLIPVisionModel.from_pretrained`).
//!
//! The tower directory holds a CLIP `config.json` (a full `CLIPConfig` or a `CLIPVisionConfig`),
//! its weights (safetensors or PyTorch `.bin`) and `preprocessor_config.json`. Tower weights in the
//! checkpoint itself (`model.vision_tower.vision_tower.vision_model.*`, written when the tower was
//! trained) take precedence over the directory's.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use serde::Deserialize;
use serde_json::Value;

use super::hf_config::{self, HfText, HfVision};
use super::names::{self, ORIGINAL_LLAVA, TOWER_VISION};
use super::safetensors::WeightStore;
use super::{LoadOptions, Loader};
use crate::activation::Activation;
use crate::config::{
    FeatureSelect, ImageAspectRatio, NameStyle, ProjectorKind, VisionConfig, VlmConfig,
};
use crate::error::ModelError;
use crate::precision::WeightDType;
use crate::preprocessor_config::ImagePreprocessor;
use crate::vlm::Vlm;

/// `architectures[0]` / `model_type` values of the original layout, with their decoder family.
const FAMILIES: [(&str, &str); 6] = [
    ("LlavaLlamaForCausalLM", "llama"),
    ("LlavaMistralForCausalLM", "mistral"),
    ("LlavaQwen2ForCausalLM", "qwen2"),
    ("llava_llama", "llama"),
    ("llava_mistral", "mistral"),
    ("llava_qwen2", "qwen2"),
];

/// Whether `arch` (a config's `architectures[0]`, else `model_type`) is an original-LLaVA class.
pub fn is_original_architecture(arch: &str) -> bool {
    FAMILIES.iter().any(|(name, _)| *name == arch)
}

/// The `mm_*` fields of an original-LLaVA `config.json` (defaults as `llava_arch.py` and
/// `clip_encoder.py` read them with `getattr`).
#[derive(Debug, Deserialize)]
struct MmFields {
    mm_vision_tower: Option<String>,
    /// Older configs name the tower `vision_tower`.
    vision_tower: Option<String>,
    mm_hidden_size: Option<usize>,
    mm_vision_select_layer: Option<i64>,
    mm_vision_select_feature: Option<String>,
    mm_projector_type: Option<String>,
    image_aspect_ratio: Option<String>,
    mm_use_im_start_end: Option<bool>,
    mm_patch_merge_type: Option<String>,
    sliding_window: Option<Value>,
    use_sliding_window: Option<bool>,
    image_token_index: Option<usize>,
}

/// The vision tower directory and the files in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VisionTowerDir {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub preprocessor: PathBuf,
}

/// An original-LLaVA checkpoint's configuration, with where its vision tower lives.
#[derive(Debug, Clone)]
pub struct OriginalLlava {
    pub config: VlmConfig,
    pub tower: VisionTowerDir,
}

impl OriginalLlava {
    /// Reads `dir/config.json`; `None` when it is not an original-LLaVA config.
    pub fn read_if_original(dir: &Path, options: &LoadOptions) -> Result<Option<Self>, ModelError> {
        let path = dir.join("config.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ModelError::Io {
            path: path.clone(),
            source,
        })?;
        let raw = hf_config::parse_json(&text, &path)?;
        if !is_original_architecture(&hf_config::architecture(&raw)) {
            return Ok(None);
        }
        Self::from_json(raw, &path, options).map(Some)
    }

    /// Converts the JSON of `path` (an original-LLaVA `config.json`), reading the vision tower's
    /// `config.json` from its directory.
    pub fn from_json(raw: Value, path: &Path, options: &LoadOptions) -> Result<Self, ModelError> {
        let field = |field: &str, message: String| ModelError::ConfigField {
            path: path.into(),
            field: field.into(),
            message,
        };
        let json_err = |e: serde_json::Error| ModelError::Json {
            path: path.into(),
            what: "an original-LLaVA config",
            message: e.to_string(),
        };
        let arch = hf_config::architecture(&raw);
        let family = FAMILIES
            .iter()
            .find(|(name, _)| *name == arch)
            .map(|(_, family)| *family)
            .unwrap_or("llama");
        let mm: MmFields = serde_json::from_value(raw.clone()).map_err(json_err)?;
        let mut hf_text: HfText = serde_json::from_value(raw).map_err(json_err)?;
        hf_text.model_type = Some(family.into());
        let mut text = hf_config::text_config_at(&hf_text, None, path, "")?;

        if mm.mm_use_im_start_end == Some(true) {
            return Err(field(
                "mm_use_im_start_end",
                "true (images wrapped in <im_start>/<im_end> tokens) is not supported; \
                 LLaVA-1.5, LLaVA-Med v1.5 and HuatuoGPT-Vision use false"
                    .into(),
            ));
        }
        match mm.mm_patch_merge_type.as_deref() {
            None | Some("flat") => {}
            Some(other) => {
                return Err(field(
                    "mm_patch_merge_type",
                    format!("`{other}` (LLaVA-NeXT any-resolution) is not supported; only `flat`"),
                ))
            }
        }
        let (projector_kind, projector_activation) = match mm.mm_projector_type.as_deref() {
            // `getattr(config, 'mm_projector_type', 'linear')`.
            None | Some("linear") => (ProjectorKind::Linear, Activation::Gelu),
            Some("mlp2x_gelu") => (ProjectorKind::Mlp2x, Activation::Gelu),
            Some(other) => {
                return Err(field(
                    "mm_projector_type",
                    format!("`{other}` is not supported; supported: linear, mlp2x_gelu"),
                ))
            }
        };
        let vision_feature_select = match mm.mm_vision_select_feature.as_deref() {
            None | Some("patch") => FeatureSelect::Default,
            Some("cls_patch") => FeatureSelect::Full,
            Some(other) => {
                return Err(field(
                    "mm_vision_select_feature",
                    format!("`{other}`; use `patch` or `cls_patch`"),
                ))
            }
        };
        let image_aspect_ratio = match mm.image_aspect_ratio.as_deref() {
            None | Some("square") => ImageAspectRatio::Square,
            Some("pad") => ImageAspectRatio::Pad,
            Some(other) => {
                return Err(field(
                    "image_aspect_ratio",
                    format!("`{other}` is not supported; supported: pad, square"),
                ))
            }
        };
        let select_layer = mm.mm_vision_select_layer.ok_or_else(|| {
            field(
                "mm_vision_select_layer",
                "missing; LLaVA-1.5-style models use -2".into(),
            )
        })?;
        // Attention here is full; within the window that is the same. Longer inputs are refused
        // through the context length instead of differing silently.
        let window = mm.sliding_window.as_ref().and_then(Value::as_u64);
        let window_on = mm.use_sliding_window.unwrap_or(family != "qwen2");
        if let (Some(w), true) = (window, window_on) {
            if (w as usize) < text.max_position_embeddings {
                tracing::info!(
                    "{}: sliding_window {w}: context limited to {w} tokens (full attention is exact there)",
                    path.display()
                );
                text.max_position_embeddings = w as usize;
            }
        }

        let dir = path.parent().unwrap_or(Path::new("."));
        let tower_name = mm.mm_vision_tower.or(mm.vision_tower).ok_or_else(|| {
            field(
                "mm_vision_tower",
                "missing: an original-LLaVA config names its vision tower there".into(),
            )
        })?;
        let tower = locate_tower(dir, path, &tower_name, options)?;
        let vision = tower_vision_config(&tower.config)?;
        if let Some(mm_hidden) = mm.mm_hidden_size {
            if mm_hidden != vision.d_model {
                return Err(field(
                    "mm_hidden_size",
                    format!(
                        "{mm_hidden} differs from the vision tower's hidden_size {} ({}); \
                         the tower is not the one this model was trained with",
                        vision.d_model,
                        tower.config.display()
                    ),
                ));
            }
        }
        let image_token_id = mm
            .image_token_index
            .or_else(|| tokenizer_image_id(dir))
            .unwrap_or(text.vocab_size);
        let config = VlmConfig {
            vision: Some(vision),
            text,
            vision_feature_layers: vec![select_layer],
            vision_feature_select,
            projector_activation,
            // `nn.Linear` defaults: every projector layer has a bias.
            projector_bias: true,
            image_token_id,
            name_style: NameStyle::Original,
            projector_kind,
            image_aspect_ratio,
        };
        config.validate()?;
        Ok(Self { config, tower })
    }

    /// Loads the weights of checkpoint `dir` (and of the tower directory when the checkpoint has
    /// no tower weights).
    pub fn load<B: Backend>(
        self,
        dir: &Path,
        dtype: WeightDType,
        device: &B::Device,
    ) -> Result<Vlm<B>, ModelError> {
        let mut store = WeightStore::open_dir(dir)?;
        let p = &ORIGINAL_LLAVA;
        let vision_prefix = p.vision[0];
        let tower_in_checkpoint = store.contains(&format!(
            "{vision_prefix}embeddings.position_embedding.weight"
        ));
        let mut model = self.config.init::<B>(device);
        let mut tower_store = if tower_in_checkpoint {
            None
        } else {
            Some(WeightStore::open_dir_any_format(
                &self.tower.dir,
                &format!("vision tower directory {}", self.tower.dir.display()),
            )?)
        };
        {
            let mut l = Loader {
                store: &mut store,
                device,
                dtype,
            };
            if let Some(projector) = model.projector.as_mut() {
                l.projector(p.projector[0], names::projector_layers(true), projector);
            }
            l.text(p.text[0], p.lm_head[0], &mut model.decoder);
        }
        if let (Some(vision), Some(vc)) = (model.vision.as_mut(), self.config.vision.as_ref()) {
            let (store, prefix) = match tower_store.as_mut() {
                Some(tower) => (tower, TOWER_VISION),
                None => (&mut store, vision_prefix),
            };
            Loader {
                store,
                device,
                dtype,
            }
            .vision(prefix, vision, vc);
        }
        store.finish(names::ignorable)?;
        if let Some(tower) = tower_store {
            tower.finish(names::ignorable_in_tower)?;
        }
        Ok(model)
    }

    /// The tower's `preprocessor_config.json` with the model's `image_aspect_ratio`
    /// (LLaVA's `process_images`).
    pub fn image_preprocessor(&self) -> Result<ImagePreprocessor, ModelError> {
        Ok(ImagePreprocessor::from_file(&self.tower.preprocessor)?
            .with_aspect_ratio(self.config.image_aspect_ratio))
    }
}

/// The tower directory: `options.vision_tower`, else `mm_vision_tower` (absolute, or relative to
/// the checkpoint directory), checked to hold a `config.json`, weights and
/// `preprocessor_config.json`.
fn locate_tower(
    dir: &Path,
    config_path: &Path,
    name: &str,
    options: &LoadOptions,
) -> Result<VisionTowerDir, ModelError> {
    let (tower, source) = match &options.vision_tower {
        Some(given) => (given.clone(), "--vision-tower".to_string()),
        None => (dir.join(name), format!("`mm_vision_tower: {name}`")),
    };
    // `org/name` with no leading `.` or `/` is a Hub id: say how to fetch it.
    let hub_id = name.split('/').count() == 2 && !name.starts_with(['.', '/']);
    let fix = if hub_id {
        format!(
            "download it with `huggingface-cli download {name} --local-dir {}`, or pass \
             --vision-tower DIR",
            tower.display()
        )
    } else {
        "put the tower (config.json, weights, preprocessor_config.json) there, or pass \
         --vision-tower DIR"
            .to_string()
    };
    let missing = |what: &str| ModelError::ConfigField {
        path: config_path.into(),
        field: "mm_vision_tower".into(),
        message: format!(
            "the vision tower ({source}) is looked for in {} and {what}; fix: {fix}",
            tower.display()
        ),
    };
    if !tower.is_dir() {
        return Err(missing("that directory does not exist"));
    }
    let config = tower.join("config.json");
    if !config.is_file() {
        return Err(missing("it has no config.json"));
    }
    let preprocessor = tower.join("preprocessor_config.json");
    if !preprocessor.is_file() {
        return Err(missing("it has no preprocessor_config.json"));
    }
    let has_weights = std::fs::read_dir(&tower).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            [".safetensors", ".bin", ".pt", ".pth"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
    });
    if !has_weights {
        return Err(missing(
            "it has no weights (*.safetensors, pytorch_model.bin, *.pt)",
        ));
    }
    Ok(VisionTowerDir {
        dir: tower,
        config,
        preprocessor,
    })
}

/// `CLIPVisionConfig`'s defaults (transformers `configuration_clip.py`), for tower configs that
/// leave fields out.
const CLIP_VISION_DEFAULTS: [(&str, f64); 8] = [
    ("hidden_size", 768.0),
    ("intermediate_size", 3072.0),
    ("num_hidden_layers", 12.0),
    ("num_attention_heads", 12.0),
    ("num_channels", 3.0),
    ("image_size", 224.0),
    ("patch_size", 32.0),
    ("layer_norm_eps", 1e-5),
];

/// The vision config of a tower `config.json`: a full `CLIPConfig` (`model_type: clip`, the
/// vision part under `vision_config`), a `CLIPVisionConfig`, or their SigLIP counterparts.
pub fn tower_vision_config(path: &Path) -> Result<VisionConfig, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.into(),
        source,
    })?;
    let raw = hf_config::parse_json(&text, path)?;
    let kind = raw["model_type"].as_str().unwrap_or("clip");
    let (mut vision, inner_type) = match kind {
        "clip" | "siglip" => {
            let v = raw
                .get("vision_config")
                .or_else(|| raw.get("vision_config_dict"))
                .cloned()
                .unwrap_or_else(|| Value::Object(Default::default()));
            (v, format!("{kind}_vision_model"))
        }
        "clip_vision_model" | "siglip_vision_model" => (raw.clone(), kind.to_string()),
        other => {
            return Err(ModelError::ConfigField {
                path: path.into(),
                field: "model_type".into(),
                message: format!(
                    "`{other}`: a vision tower must be CLIP (clip, clip_vision_model) or SigLIP"
                ),
            })
        }
    };
    let Some(fields) = vision.as_object_mut() else {
        return Err(ModelError::ConfigField {
            path: path.into(),
            field: "vision_config".into(),
            message: "is not an object".into(),
        });
    };
    fields.insert("model_type".into(), Value::String(inner_type.clone()));
    if inner_type == "clip_vision_model" {
        for (key, value) in CLIP_VISION_DEFAULTS {
            if !fields.contains_key(key) || fields[key].is_null() {
                let value = if key == "layer_norm_eps" {
                    serde_json::json!(value)
                } else {
                    serde_json::json!(value as u64)
                };
                fields.insert(key.into(), value);
            }
        }
    }
    let hf: HfVision = serde_json::from_value(vision).map_err(|e| ModelError::Json {
        path: path.into(),
        what: "a CLIP vision config",
        message: e.to_string(),
    })?;
    hf_config::vision_config(&hf, path)
}

/// The id of `<image>` in the checkpoint's tokenizer (`tokenizer.json`'s added tokens or
/// `added_tokens.json`), when it has one.
fn tokenizer_image_id(dir: &Path) -> Option<usize> {
    let read = |name: &str| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
    };
    let from_fast = read("tokenizer.json").and_then(|t| {
        t["added_tokens"].as_array()?.iter().find_map(|token| {
            (token["content"].as_str() == Some("<image>"))
                .then(|| token["id"].as_u64())
                .flatten()
        })
    });
    from_fast
        .or_else(|| read("added_tokens.json")?["<image>"].as_u64())
        .map(|id| id as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("firempo-original-{name}-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tower")).unwrap();
        std::fs::write(
            dir.join("tower/config.json"),
            r#"{"model_type":"clip","vision_config":{"hidden_size":32,"intermediate_size":64,
            "num_hidden_layers":2,"num_attention_heads":4,"image_size":32,"patch_size":8}}"#,
        )
        .unwrap();
        std::fs::write(dir.join("tower/preprocessor_config.json"), "{}").unwrap();
        std::fs::write(dir.join("tower/pytorch_model.bin"), b"").unwrap();
        dir
    }

    fn parse(dir: &Path, extra: &str) -> Result<OriginalLlava, ModelError> {
        let text = format!(
            r#"{{"architectures":["LlavaQwen2ForCausalLM"],"model_type":"llava_qwen2","vocab_size":100,
            "hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,
            "num_key_value_heads":2,"rope_theta":1000000.0,"sliding_window":131072,"use_sliding_window":false,
            "max_position_embeddings":32768,"mm_vision_tower":"tower","mm_hidden_size":32,
            "mm_vision_select_layer":-2,"mm_projector_type":"mlp2x_gelu"{extra}}}"#
        );
        let path = dir.join("config.json");
        let raw = hf_config::parse_json(&text, &path)?;
        OriginalLlava::from_json(raw, &path, &LoadOptions::default())
    }

    #[test]
    fn qwen2_config_with_defaults() {
        let dir = scratch("qwen2");
        let o = parse(&dir, "").unwrap();
        let c = &o.config;
        assert!(c.text.qkv_bias && !c.text.o_bias);
        assert_eq!(c.text.rope_theta, 1e6);
        // use_sliding_window false: the full context stays.
        assert_eq!(c.text.max_position_embeddings, 32768);
        assert_eq!(c.image_token_id, 100, "no <image> token: vocab_size");
        assert_eq!(c.image_tokens_per_image(), 16);
        assert_eq!(c.vision_feature_select, FeatureSelect::Default);
        assert_eq!(c.image_aspect_ratio, ImageAspectRatio::Square);
        assert_eq!(c.vision.as_ref().unwrap().layer_norm_eps, 1e-5);
        assert_eq!(o.tower.dir, dir.join("tower"));
        let o = parse(&dir, r#","mm_projector_type":"linear","image_aspect_ratio":"pad","mm_vision_select_feature":"cls_patch""#).unwrap();
        assert_eq!(o.config.projector_kind, ProjectorKind::Linear);
        assert_eq!(o.config.image_aspect_ratio, ImageAspectRatio::Pad);
        assert_eq!(o.config.image_tokens_per_image(), 17);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn unsupported_fields_are_named() {
        let dir = scratch("errors");
        for (extra, field, word) in [
            (
                r#","mm_use_im_start_end":true"#,
                "mm_use_im_start_end",
                "im_start",
            ),
            (
                r#","mm_projector_type":"mlp3x_gelu""#,
                "mm_projector_type",
                "mlp3x_gelu",
            ),
            (
                r#","image_aspect_ratio":"anyres""#,
                "image_aspect_ratio",
                "anyres",
            ),
            (
                r#","mm_vision_select_feature":"cls""#,
                "mm_vision_select_feature",
                "cls_patch",
            ),
            (
                r#","mm_patch_merge_type":"spatial_unpad""#,
                "mm_patch_merge_type",
                "flat",
            ),
            (r#","mm_hidden_size":1024"#, "mm_hidden_size", "1024"),
        ] {
            let err = parse(&dir, extra).unwrap_err().to_string();
            assert!(err.contains(field) && err.contains(word), "{extra}: {err}");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
