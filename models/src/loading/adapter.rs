//! Saving and loading LoRA adapters in PEFT's format: `adapter_model.safetensors` with
//! `base_model.model.<module path>.lora_{A,B}.weight` tensors and `adapter_config.json`
//! (PEFT `utils/save_and_load.py`, `tuners/lora/config.py`).
//!
//! The module path follows the base checkpoint's naming (Hub-style `language_model.model.*` or
//! current `model.language_model.*`), so PEFT finds the modules in the matching transformers version.
//! For LLaVA and Qwen-VL the targets are written as a regex restricted to the language model; a
//! plain list would also match the vision tower's `q_proj`/`k_proj`/`v_proj` (LLaVA) or
//! `gate_proj`/`up_proj`/`down_proj` (Qwen2.5-VL). Each model family says how PEFT names its
//! decoder through [`AdaptedModel`]; saving and loading are written once for all families.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

use super::names::{peft_text_prefix, QWEN_VL_PEFT_TEXT};
use super::safetensors::WeightStore;
use super::transpose;
use crate::config::NameStyle;
use crate::decoder::Decoder;
use crate::error::ModelError;
use crate::lora::{LoraConfig, LORA_TARGETS};
use crate::qwen_vl::QwenVl;
use crate::vlm::Vlm;

pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
pub const ADAPTER_CONFIG: &str = "adapter_config.json";

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.into(),
        source,
    }
}

fn host_f32<B: Backend>(t: Tensor<B, 2>) -> (Vec<usize>, Vec<u8>) {
    let dims = t.dims().to_vec();
    let values: Vec<f32> = t.into_data().convert::<f32>().to_vec().unwrap_or_default();
    (dims, values.iter().flat_map(|v| v.to_le_bytes()).collect())
}

/// A model whose decoder carries LoRA adapters (Vlm, QwenVl): the LoRA operations, written once
/// here over the decoder ([`Decoder::check_lora`], [`Decoder::attach_lora`], …), and what
/// [`save_adapter`] and [`load_adapter`] need to know about the family's PEFT names. The models'
/// inherent `with_lora`/`with_adapters`/`merge_lora`/`has_lora` delegate here.
pub trait AdaptedModel<B: Backend>: Module<B> + Sized {
    /// The decoder that holds the adapters.
    fn decoder(&self) -> &Decoder<B>;
    fn decoder_mut(&mut self) -> &mut Decoder<B>;
    /// The adapters' hyperparameters (the model's `lora` field).
    fn lora_slot(&mut self) -> &mut Option<LoraConfig>;
    fn lora_config(&self) -> Option<&LoraConfig>;
    /// Where PEFT puts the decoder's modules (`…layers.N.self_attn.q_proj`) when saving.
    fn peft_prefix(&self) -> &'static str;
    /// Decoder prefixes accepted when loading (each tried with `layers.` after it).
    fn peft_read_prefixes(&self) -> Vec<&'static str>;
    /// `target_modules` of the written `adapter_config.json`.
    fn peft_target_modules(&self, targets: &[String]) -> Value;
    /// `task_type` of the written `adapter_config.json`.
    fn peft_task_type(&self) -> Value;

    /// Freezes every weight and attaches fresh adapters to the decoder projections `config`
    /// targets (the vision tower gets none); only the adapters require gradients afterwards.
    /// A rank the projections cannot hold is refused, naming the projection.
    fn with_lora(self, config: &LoraConfig, device: &B::Device) -> Result<Self, ModelError> {
        self.decoder().check_lora(config)?;
        let mut model = self.no_grad();
        model.decoder_mut().attach_lora(config, device);
        *model.lora_slot() = Some(config.clone());
        Ok(model)
    }

    /// The same weights with adapters on or off. Off is the reference model of preference
    /// training: no second copy of the weights.
    fn with_adapters(mut self, enabled: bool) -> Self {
        self.decoder_mut().set_adapters_enabled(enabled);
        self
    }

    /// Folds every adapter into its base weight (for export); the result has no adapters.
    fn merge_lora(mut self) -> Self {
        self.decoder_mut().merge_lora();
        *self.lora_slot() = None;
        self
    }

    /// Whether any decoder projection carries an adapter.
    fn has_lora(&self) -> bool {
        self.decoder().has_lora()
    }
}

/// [`AdaptedModel`]'s accessors for a model that keeps its decoder in `decoder` and its LoRA
/// config in `lora` (both families do).
macro_rules! model_lora_fields {
    () => {
        fn decoder(&self) -> &Decoder<B> {
            &self.decoder
        }

        fn decoder_mut(&mut self) -> &mut Decoder<B> {
            &mut self.decoder
        }

        fn lora_slot(&mut self) -> &mut Option<LoraConfig> {
            &mut self.lora
        }

        fn lora_config(&self) -> Option<&LoraConfig> {
            self.lora.as_ref()
        }
    };
}

/// The LoRA methods as inherent methods of a model (so callers need no trait import), each
/// delegating to [`AdaptedModel`]'s single implementation.
macro_rules! inherent_lora_methods {
    () => {
        /// Freezes every weight and attaches fresh LoRA adapters to the targeted decoder
        /// projections ([`crate::AdaptedModel::with_lora`]); only the adapters require gradients
        /// afterwards. A rank above a targeted projection's `min(d_in, d_out)` is refused.
        pub fn with_lora(
            self,
            config: &$crate::LoraConfig,
            device: &B::Device,
        ) -> Result<Self, $crate::ModelError> {
            $crate::AdaptedModel::with_lora(self, config, device)
        }

        /// The same weights with adapters on or off. Off is the reference model of preference
        /// training: no second copy of the weights (tensors are shared, not cloned).
        pub fn with_adapters(self, enabled: bool) -> Self {
            $crate::AdaptedModel::with_adapters(self, enabled)
        }

        /// Folds every adapter into its base weight (for export); the result has no adapters.
        pub fn merge_lora(self) -> Self {
            $crate::AdaptedModel::merge_lora(self)
        }

        /// Whether any decoder projection carries an adapter.
        pub fn has_lora(&self) -> bool {
            $crate::AdaptedModel::has_lora(self)
        }
    };
}
pub(crate) use inherent_lora_methods;

/// PEFT's `target_modules` regex for the decoder layers under `lm` (a regex of the module path
/// before `.layers.`): full-matched by PEFT, so the vision tower's modules stay unadapted.
fn layer_regex(lm: &str, targets: &[String]) -> Value {
    json!(format!(
        "{lm}\\.layers\\.\\d+\\.(self_attn|mlp)\\.({})",
        targets.join("|")
    ))
}

impl<B: Backend> AdaptedModel<B> for Vlm<B> {
    model_lora_fields!();

    fn peft_prefix(&self) -> &'static str {
        peft_text_prefix(self.config.name_style, self.config.vision.is_some())
    }

    fn peft_read_prefixes(&self) -> Vec<&'static str> {
        let has_vision = self.config.vision.is_some();
        [NameStyle::Legacy, NameStyle::Current, NameStyle::Original]
            .into_iter()
            .map(|s| peft_text_prefix(s, has_vision))
            .collect()
    }

    fn peft_target_modules(&self, targets: &[String]) -> Value {
        if self.config.vision.is_none() {
            return json!(targets);
        }
        let lm = match self.config.name_style {
            NameStyle::Legacy => ".*language_model\\.model",
            NameStyle::Current => ".*model\\.language_model",
            // PEFT full-matches: `model.layers.*`, not the tower's `….encoder.layers.*`.
            NameStyle::Original => "model",
        };
        layer_regex(lm, targets)
    }

    fn peft_task_type(&self) -> Value {
        if self.config.vision.is_some() {
            Value::Null
        } else {
            json!("CAUSAL_LM")
        }
    }
}

impl<B: Backend> AdaptedModel<B> for QwenVl<B> {
    model_lora_fields!();

    fn peft_prefix(&self) -> &'static str {
        QWEN_VL_PEFT_TEXT[0]
    }

    fn peft_read_prefixes(&self) -> Vec<&'static str> {
        QWEN_VL_PEFT_TEXT.to_vec()
    }

    fn peft_target_modules(&self, targets: &[String]) -> Value {
        layer_regex(".*model\\.language_model", targets)
    }

    fn peft_task_type(&self) -> Value {
        Value::Null
    }
}

/// Writes the model's adapters to `dir` (created if needed) as PEFT files.
/// `base_model` goes into `base_model_name_or_path` (e.g. `llava-hf/llava-1.5-7b-hf`).
pub fn save_adapter<B: Backend, M: AdaptedModel<B>>(
    model: &M,
    dir: &Path,
    base_model: Option<&str>,
) -> Result<(), ModelError> {
    let lora = model.lora_config().ok_or_else(|| {
        ModelError::Input(
            "the model has no LoRA adapters; call `with_lora` (or load an adapter) first".into(),
        )
    })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let prefix = model.peft_prefix();
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (i, layer) in model.decoder().layers.iter().enumerate() {
        for (name, proj) in layer.projections() {
            if let Some(adapter) = &proj.adapter {
                let key = format!("{prefix}layers.{i}.{name}");
                tensors.insert(
                    format!("{key}.lora_A.weight"),
                    host_f32(adapter.a.val().transpose()),
                );
                tensors.insert(
                    format!("{key}.lora_B.weight"),
                    host_f32(adapter.b.val().transpose()),
                );
            }
        }
    }
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, (shape, bytes))| {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes).map_err(|e| {
                ModelError::Safetensors {
                    path: dir.join(ADAPTER_WEIGHTS),
                    message: e.to_string(),
                }
            })?;
            Ok((k.clone(), view))
        })
        .collect::<Result<_, ModelError>>()?;
    let path = dir.join(ADAPTER_WEIGHTS);
    let mut meta = std::collections::HashMap::new();
    meta.insert("format".to_string(), "pt".to_string());
    safetensors::serialize_to_file(views, Some(meta), &path).map_err(|e| {
        ModelError::Safetensors {
            path: path.clone(),
            message: e.to_string(),
        }
    })?;
    let targets = model.peft_target_modules(&lora.target_modules);
    let config = json!({
        "peft_type": "LORA",
        "task_type": model.peft_task_type(),
        "base_model_name_or_path": base_model,
        "r": lora.rank,
        "lora_alpha": lora.alpha,
        "lora_dropout": lora.dropout,
        "use_rslora": lora.use_rslora,
        "target_modules": targets,
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "use_dora": false,
    });
    let path = dir.join(ADAPTER_CONFIG);
    let text = serde_json::to_string_pretty(&config).unwrap_or_default();
    std::fs::write(&path, text).map_err(io(&path))
}

/// PEFT options that change what an adapter computes and that firempo does not implement: each
/// would otherwise be silently ignored (wrong logits), so each is refused by name.
fn refuse_unsupported_options(cfg: &Value, path: &Path) -> Result<(), ModelError> {
    let set = |v: &Value| match v {
        Value::Null | Value::Bool(false) => false,
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    };
    let options = [
        ("use_dora", "DoRA adapters are not supported"),
        (
            "rank_pattern",
            "per-module ranks are not supported; use one `r` for every module",
        ),
        (
            "alpha_pattern",
            "per-module alphas are not supported; use one `lora_alpha`",
        ),
        (
            "layers_to_transform",
            "adapting only some layers is not supported",
        ),
        (
            "modules_to_save",
            "fully trained extra modules are not supported",
        ),
        (
            "trainable_token_indices",
            "trained token embeddings are not supported",
        ),
        ("lora_bias", "LoRA biases are not supported"),
    ];
    match options.iter().find(|(name, _)| set(&cfg[*name])) {
        Some((name, why)) => Err(ModelError::ConfigField {
            path: path.into(),
            field: (*name).into(),
            message: format!(
                "{why}; fix: merge the adapter into the base model with PEFT \
                 (`merge_and_unload()`, then `save_pretrained`) and load the merged checkpoint"
            ),
        }),
        None => match cfg["bias"].as_str() {
            None | Some("none") => Ok(()),
            Some(other) => Err(ModelError::ConfigField {
                path: path.into(),
                field: "bias".into(),
                message: format!("`{other}`: only adapters without trained biases (`none`) load"),
            }),
        },
    }
}

/// Adapters on modules outside the decoder layers (e.g. the vision tower's attention or MLP)
/// are refused by name: dropping them would change what the adapter computes.
fn refuse_foreign_modules(
    store: &WeightStore,
    text_prefix: &str,
    dir: &Path,
) -> Result<(), ModelError> {
    let layers = format!("{text_prefix}layers.");
    let foreign: BTreeSet<String> = store
        .names()
        .filter(|n| !n.starts_with(&layers))
        .filter_map(|n| n.split(".lora_").next().map(str::to_owned))
        .collect();
    if foreign.is_empty() {
        return Ok(());
    }
    Err(ModelError::Input(format!(
        "{} adapts modules firempo does not adapt (it adapts the language model's \
         q/k/v/o/gate/up/down projections, under `{text_prefix}`): {}; fix: train the adapter \
         with `target_modules` restricted to the language model, or merge it with PEFT's \
         `merge_and_unload()` and load the merged checkpoint",
        dir.display(),
        foreign.into_iter().collect::<Vec<_>>().join(", ")
    )))
}

/// Reads `adapter_config.json` + `adapter_model.safetensors` from `dir` and attaches the adapters
/// to `model` (which must not have adapters yet). Every missing, unexpected or mis-shaped adapter
/// tensor is reported at once.
pub fn load_adapter<B: Backend, M: AdaptedModel<B>>(
    model: M,
    dir: &Path,
    device: &B::Device,
) -> Result<M, ModelError> {
    let cfg_path = dir.join(ADAPTER_CONFIG);
    let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| ModelError::Json {
        path: cfg_path.clone(),
        what: "a PEFT adapter config",
        message: e.to_string(),
    })?;
    let field = |name: &str, message: &str| ModelError::ConfigField {
        path: cfg_path.clone(),
        field: name.into(),
        message: message.into(),
    };
    if cfg["peft_type"].as_str() != Some("LORA") {
        return Err(field("peft_type", "only LORA adapters are supported"));
    }
    refuse_unsupported_options(&cfg, &cfg_path)?;
    let rank = cfg["r"]
        .as_u64()
        .ok_or_else(|| field("r", "missing or not an integer"))? as usize;
    let alpha = cfg["lora_alpha"]
        .as_f64()
        .ok_or_else(|| field("lora_alpha", "missing or not a number"))?;
    let mut store = WeightStore::open_files(dir, &[dir.join(ADAPTER_WEIGHTS)])?;
    // Targets: the projections that actually have tensors (works for list and regex configs).
    let target_modules: Vec<String> = LORA_TARGETS
        .iter()
        .filter(|t| store.names().any(|n| n.contains(&format!(".{t}.lora_A"))))
        .map(|t| t.to_string())
        .collect();
    let lora = LoraConfig {
        rank,
        alpha,
        dropout: cfg["lora_dropout"].as_f64().unwrap_or(0.0),
        target_modules,
        use_rslora: cfg["use_rslora"].as_bool().unwrap_or(false),
    };
    // The decoder prefix the file uses (Hub or transformers-5 layout); none matching keeps the
    // model's own so the missing-tensor report shows the expected names.
    let prefix = model
        .peft_read_prefixes()
        .into_iter()
        .find(|p| {
            let layers = format!("{p}layers.");
            store.names().any(|n| n.starts_with(&layers))
        })
        .unwrap_or(model.peft_prefix());
    refuse_foreign_modules(&store, prefix, dir)?;
    let mut model = AdaptedModel::with_lora(model, &lora, device)?;
    for (i, layer) in model.decoder_mut().layers.iter_mut().enumerate() {
        let projections = [
            ("self_attn.q_proj", &mut layer.self_attn.q_proj),
            ("self_attn.k_proj", &mut layer.self_attn.k_proj),
            ("self_attn.v_proj", &mut layer.self_attn.v_proj),
            ("self_attn.o_proj", &mut layer.self_attn.o_proj),
            ("mlp.gate_proj", &mut layer.mlp.gate_proj),
            ("mlp.up_proj", &mut layer.mlp.up_proj),
            ("mlp.down_proj", &mut layer.mlp.down_proj),
        ];
        for (name, proj) in projections {
            let Some(adapter) = proj.adapter.as_mut() else {
                continue;
            };
            let key = format!("{prefix}layers.{i}.{name}");
            let [d_in, r] = adapter.a.shape().dims();
            let [_, d_out] = adapter.b.shape().dims();
            if let Some(a) = store.take(&format!("{key}.lora_A.weight"), &[r, d_in]) {
                let a = TensorData::new(transpose(&a, r, d_in), [d_in, r]);
                adapter.a = Param::from_tensor(Tensor::from_data(a, device));
            }
            if let Some(b) = store.take(&format!("{key}.lora_B.weight"), &[d_out, r]) {
                let b = TensorData::new(transpose(&b, d_out, r), [r, d_out]);
                adapter.b = Param::from_tensor(Tensor::from_data(b, device));
            }
        }
    }
    store.finish(|_| false)?;
    Ok(model)
}
