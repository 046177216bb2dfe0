//! Saving and loading LoRA adapters in PEFT's format: `adapter_model.safetensors` with
//! `base_model.model.<module path>.lora_{A,B}.weight` tensors and `adapter_config.json`
//! (PEFT `utils/save_and_load.py`, `tuners/lora/config.py`).
//!
//! The module path follows the base checkpoint's naming (Hub-style `language_model.model.*` or
//! current `model.language_model.*`), so PEFT finds the modules in the matching transformers version.
//! For LLaVA the targets are written as a regex restricted to the language model; a plain list
//! would also match the vision tower's `q_proj`/`k_proj`/`v_proj`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use burn::module::Param;
use burn::tensor::{backend::Backend, Tensor, TensorData};
use safetensors::tensor::{Dtype, TensorView};
use serde_json::{json, Value};

use super::names::peft_text_prefix;
use super::safetensors::WeightStore;
use super::transpose;
use crate::config::NameStyle;
use crate::error::ModelError;
use crate::lora::{LoraConfig, LORA_TARGETS};
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

/// Writes the model's adapters to `dir` (created if needed) as PEFT files.
/// `base_model` goes into `base_model_name_or_path` (e.g. `llava-hf/llava-1.5-7b-hf`).
pub fn save_adapter<B: Backend>(
    model: &Vlm<B>,
    dir: &Path,
    base_model: Option<&str>,
) -> Result<(), ModelError> {
    let lora = model.lora.as_ref().ok_or_else(|| {
        ModelError::Input(
            "the model has no LoRA adapters; call `with_lora` (or load an adapter) first".into(),
        )
    })?;
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let prefix = peft_text_prefix(model.config.name_style, model.config.vision.is_some());
    let mut tensors: BTreeMap<String, (Vec<usize>, Vec<u8>)> = BTreeMap::new();
    for (i, layer) in model.decoder.layers.iter().enumerate() {
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
    let targets: Value = if model.config.vision.is_some() {
        let lm = match model.config.name_style {
            NameStyle::Legacy => ".*language_model\\.model",
            NameStyle::Current => ".*model\\.language_model",
            // PEFT full-matches: `model.layers.*`, not the tower's `….encoder.layers.*`.
            NameStyle::Original => "model",
        };
        json!(format!(
            "{lm}\\.layers\\.\\d+\\.(self_attn|mlp)\\.({})",
            lora.target_modules.join("|")
        ))
    } else {
        json!(lora.target_modules)
    };
    let config = json!({
        "peft_type": "LORA",
        "task_type": if model.config.vision.is_some() { Value::Null } else { json!("CAUSAL_LM") },
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

/// Adapters on modules outside the decoder's projections (e.g. the vision tower's attention)
/// are refused by name: dropping them would change what the adapter computes.
fn refuse_foreign_modules(
    store: &WeightStore,
    text_prefix: &str,
    dir: &Path,
) -> Result<(), ModelError> {
    let foreign: BTreeSet<String> = store
        .names()
        .filter(|n| !n.starts_with(text_prefix))
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
pub fn load_adapter<B: Backend>(
    model: Vlm<B>,
    dir: &Path,
    device: &B::Device,
) -> Result<Vlm<B>, ModelError> {
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
    let has_vision = model.config.vision.is_some();
    // Original last: its prefix is a prefix of Current's.
    let prefix = [NameStyle::Legacy, NameStyle::Current, NameStyle::Original]
        .into_iter()
        .map(|s| peft_text_prefix(s, has_vision))
        .find(|p| store.names().any(|n| n.starts_with(p)))
        .unwrap_or(peft_text_prefix(model.config.name_style, has_vision));
    refuse_foreign_modules(&store, prefix, dir)?;
    let mut model = model.with_lora(&lora, device)?;
    for (i, layer) in model.decoder.layers.iter_mut().enumerate() {
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
