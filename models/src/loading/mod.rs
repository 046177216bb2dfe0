//! Loading HF checkpoints: `config.json` → [`VlmConfig`], safetensors (or PyTorch `.bin` for an
//! original-LLaVA vision tower) → weights, names mapped by [`names`], shapes checked, all problems
//! reported at once.

pub mod adapter;
pub mod hf_config;
pub mod names;
pub mod original_llava;
pub mod pytorch;
pub mod record;
pub mod safetensors;

use std::path::{Path, PathBuf};

use burn::module::Param;
use burn::nn::{LayerNorm, Linear, RmsNorm};
use burn::tensor::{backend::Backend, DType, Tensor, TensorData};
use half::{bf16, f16};

use crate::config::{VisionConfig, VlmConfig};
use crate::decoder::Decoder;
use crate::error::ModelError;
use crate::precision::{check_backend_dtype, WeightDType};
use crate::preprocessor_config::ImagePreprocessor;
use crate::projector::Projector;
use crate::vision::VisionTransformer;
use crate::vlm::Vlm;
use names::{ResolvedPrefixes, CAUSAL_LM, LLAVA};
use original_llava::OriginalLlava;
use safetensors::{HostFloat, WeightStore};

/// How to load a checkpoint: what its directory does not hold itself, and in which dtype.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// The dtype of the decoder projections' base weights (the frozen bulk of the model under
    /// LoRA; the CLI's `--dtype`), decoded straight into it from the checkpoint. Norms,
    /// embeddings, the LM head, the vision tower and the projector stay f32. Half precision
    /// needs a backend with bf16/f16 tensors ([`crate::precision::check_backend_dtype`]).
    pub dtype: WeightDType,
    /// The vision tower directory of an original-LLaVA checkpoint (CLIP `config.json`, weights,
    /// `preprocessor_config.json`), instead of the one its `mm_vision_tower` names (the CLI's
    /// `--vision-tower DIR`).
    pub vision_tower: Option<PathBuf>,
}

/// Loads `dir/config.json` and the safetensors weights in `dir` (single file or sharded index).
///
/// Accepts Hub-style (`language_model.model.*`) and current transformers
/// (`model.language_model.*`) names, and original-LLaVA checkpoints (see
/// [`load_pretrained_with`]). Any missing, unexpected or mis-shaped tensor fails the load
/// with one [`ModelError::Weights`] listing them all. The returned model's parameters require
/// gradients (full fine-tuning); [`Vlm::with_lora`] freezes them.
pub fn load_pretrained<B: Backend>(dir: &Path, device: &B::Device) -> Result<Vlm<B>, ModelError> {
    load_pretrained_with(dir, &LoadOptions::default(), device)
}

/// [`load_pretrained`] with options. An original-LLaVA checkpoint (`LlavaMistralForCausalLM`,
/// `LlavaQwen2ForCausalLM`, `LlavaLlamaForCausalLM`) takes its vision tower's config from the tower
/// directory (`options.vision_tower`, else `mm_vision_tower` relative to `dir`), and its weights
/// from the checkpoint when it has them, else from that directory.
pub fn load_pretrained_with<B: Backend>(
    dir: &Path,
    options: &LoadOptions,
    device: &B::Device,
) -> Result<Vlm<B>, ModelError> {
    check_backend_dtype::<B>(options.dtype, device)?;
    if let Some(original) = OriginalLlava::read_if_original(dir, options)? {
        return original.load(dir, options.dtype, device);
    }
    let mut config = hf_config::read_hf_config_with(&dir.join("config.json"), options)?;
    let mut store = WeightStore::open_dir(dir)?;
    let prefixes = names::resolve(
        &store,
        if config.vision.is_some() {
            &LLAVA
        } else {
            &CAUSAL_LM
        },
    );
    config.name_style = prefixes.style;
    let model = load_weights(config, &mut store, &prefixes, options.dtype, device);
    store.finish(names::ignorable)?;
    Ok(model)
}

/// The image preprocessing of checkpoint `dir`: `dir/preprocessor_config.json`, or for an
/// original-LLaVA checkpoint the vision tower's, with the model's `image_aspect_ratio` applied.
pub fn image_preprocessor(
    dir: &Path,
    options: &LoadOptions,
) -> Result<ImagePreprocessor, ModelError> {
    match OriginalLlava::read_if_original(dir, options)? {
        Some(original) => original.image_preprocessor(),
        None => ImagePreprocessor::from_file(&dir.join("preprocessor_config.json")),
    }
}

/// Host transpose of a row-major `[rows, cols]` buffer.
pub(crate) fn transpose<T: Copy + Default>(values: &[T], rows: usize, cols: usize) -> Vec<T> {
    let mut out = vec![T::default(); values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

pub(crate) struct Loader<'a, B: Backend> {
    pub(crate) store: &'a mut WeightStore,
    pub(crate) device: &'a B::Device,
    /// The dtype of the decoder projections' base weights ([`Loader::base_linear`]).
    pub(crate) dtype: WeightDType,
}

impl<B: Backend> Loader<'_, B> {
    fn tensor<const D: usize>(&mut self, name: &str, shape: [usize; D]) -> Option<Tensor<B, D>> {
        let values = self.store.take(name, &shape)?;
        Some(Tensor::from_data(
            TensorData::new(values, shape),
            self.device,
        ))
    }

    fn param<const D: usize>(&mut self, name: &str, param: &mut Param<Tensor<B, D>>) {
        if let Some(t) = self.tensor(name, param.shape().dims()) {
            *param = Param::from_tensor(t);
        }
    }

    /// HF `nn.Linear` stores `[out, in]`; burn's `Linear` holds `[in, out]`.
    fn linear(&mut self, name: &str, linear: &mut Linear<B>) {
        let [d_in, d_out] = linear.weight.shape().dims();
        if let Some(w) = self.store.take(&format!("{name}.weight"), &[d_out, d_in]) {
            let w = TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]);
            linear.weight = Param::from_tensor(Tensor::from_data(w, self.device));
        }
        if let Some(bias) = linear.bias.as_mut() {
            self.param(&format!("{name}.bias"), bias);
        }
    }

    /// A decoder projection's frozen base weight (and bias), decoded straight into the load
    /// dtype: `[out, in]` read once as bf16/f16/f32, transposed on the host, handed to the device.
    fn base_linear(&mut self, name: &str, linear: &mut Linear<B>) {
        match self.dtype {
            WeightDType::F32 => self.linear(name, linear),
            WeightDType::Bf16 => self.typed_linear::<bf16>(name, linear, DType::BF16),
            WeightDType::F16 => self.typed_linear::<f16>(name, linear, DType::F16),
        }
    }

    fn typed_linear<T: HostFloat + Default>(
        &mut self,
        name: &str,
        linear: &mut Linear<B>,
        dtype: DType,
    ) {
        let [d_in, d_out] = linear.weight.shape().dims();
        if let Some(w) = self
            .store
            .take_as::<T>(&format!("{name}.weight"), &[d_out, d_in])
        {
            let w = TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]);
            linear.weight = Param::from_tensor(Tensor::from_data(w, (self.device, dtype)));
        }
        if let Some(bias) = linear.bias.as_mut() {
            let name = format!("{name}.bias");
            if let Some(b) = self.store.take_as::<T>(&name, &bias.shape().dims::<1>()) {
                let n = b.len();
                *bias = Param::from_tensor(Tensor::from_data(
                    TensorData::new(b, [n]),
                    (self.device, dtype),
                ));
            }
        }
    }

    /// The patch convolution `[d, C, p, p]` becomes a linear layer over flattened patches.
    fn patch_conv(&mut self, name: &str, linear: &mut Linear<B>, channels: usize, patch: usize) {
        let [d_in, d_out] = linear.weight.shape().dims();
        if let Some(w) = self
            .store
            .take(&format!("{name}.weight"), &[d_out, channels, patch, patch])
        {
            let w = TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]);
            linear.weight = Param::from_tensor(Tensor::from_data(w, self.device));
        }
        if let Some(bias) = linear.bias.as_mut() {
            self.param(&format!("{name}.bias"), bias);
        }
    }

    fn layer_norm(&mut self, name: &str, norm: &mut LayerNorm<B>) {
        self.param(&format!("{name}.weight"), &mut norm.gamma);
        if let Some(beta) = norm.beta.as_mut() {
            self.param(&format!("{name}.bias"), beta);
        }
    }

    fn rms_norm(&mut self, name: &str, norm: &mut RmsNorm<B>) {
        self.param(&format!("{name}.weight"), &mut norm.gamma);
    }
}

fn load_weights<B: Backend>(
    config: VlmConfig,
    store: &mut WeightStore,
    p: &ResolvedPrefixes,
    dtype: WeightDType,
    device: &B::Device,
) -> Vlm<B> {
    let mut model = config.init::<B>(device);
    let mut l = Loader {
        store,
        device,
        dtype,
    };
    if let (Some(vision), Some(vc)) = (model.vision.as_mut(), config.vision.as_ref()) {
        l.vision(&p.vision, vision, vc);
    }
    if let Some(projector) = model.projector.as_mut() {
        let [first, second] = names::projector_layers(false);
        l.projector(&p.projector, [first, second], projector);
    }
    l.text(&p.text, &p.lm_head, &mut model.decoder);
    model
}

impl<B: Backend> Loader<'_, B> {
    /// The vision tower's tensors under prefix `v` (CLIP/SigLIP `vision_model` names).
    fn vision(&mut self, v: &str, vision: &mut VisionTransformer<B>, vc: &VisionConfig) {
        let l = self;
        l.patch_conv(
            &format!("{v}embeddings.patch_embedding"),
            &mut vision.patch_embedding,
            vc.num_channels,
            vc.patch_size,
        );
        if let Some(cls) = vision.class_embedding.as_mut() {
            l.param(&format!("{v}embeddings.class_embedding"), cls);
        }
        l.param(
            &format!("{v}embeddings.position_embedding.weight"),
            &mut vision.position_embedding,
        );
        if let Some(norm) = vision.pre_layernorm.as_mut() {
            l.layer_norm(&format!("{v}pre_layrnorm"), norm); // sic: CLIP's spelling
        }
        for (i, layer) in vision.layers.iter_mut().enumerate() {
            let n = format!("{v}encoder.layers.{i}");
            l.layer_norm(&format!("{n}.layer_norm1"), &mut layer.layer_norm1);
            l.linear(
                &format!("{n}.self_attn.q_proj"),
                &mut layer.self_attn.q_proj,
            );
            l.linear(
                &format!("{n}.self_attn.k_proj"),
                &mut layer.self_attn.k_proj,
            );
            l.linear(
                &format!("{n}.self_attn.v_proj"),
                &mut layer.self_attn.v_proj,
            );
            l.linear(
                &format!("{n}.self_attn.out_proj"),
                &mut layer.self_attn.out_proj,
            );
            l.layer_norm(&format!("{n}.layer_norm2"), &mut layer.layer_norm2);
            l.linear(&format!("{n}.mlp.fc1"), &mut layer.mlp.fc1);
            l.linear(&format!("{n}.mlp.fc2"), &mut layer.mlp.fc2);
        }
        // CLIP: `post_layernorm`; SigLIP: same name.
        l.layer_norm(&format!("{v}post_layernorm"), &mut vision.post_layernorm);
    }

    /// The projector under prefix `n`: its layers are `n + layers[0]` and `n + layers[1]`, or, for
    /// the single-layer projector, the prefix itself (original LLaVA's `linear`:
    /// `model.mm_projector.weight`).
    fn projector(&mut self, n: &str, layers: [&str; 2], projector: &mut Projector<B>) {
        match projector.linear_2.as_mut() {
            Some(linear_2) => {
                self.linear(&format!("{n}{}", layers[0]), &mut projector.linear_1);
                self.linear(&format!("{n}{}", layers[1]), linear_2);
            }
            None => self.linear(n.trim_end_matches('.'), &mut projector.linear_1),
        }
    }

    /// The decoder under prefix `t` and its head under `lm_head`.
    fn text(&mut self, t: &str, lm_head: &str, decoder: &mut Decoder<B>) {
        let l = self;
        l.param(
            &format!("{t}embed_tokens.weight"),
            &mut decoder.embed_tokens.weight,
        );
        for (i, layer) in decoder.layers.iter_mut().enumerate() {
            let n = format!("{t}layers.{i}");
            l.rms_norm(&format!("{n}.input_layernorm"), &mut layer.input_layernorm);
            l.base_linear(
                &format!("{n}.self_attn.q_proj"),
                &mut layer.self_attn.q_proj.base,
            );
            l.base_linear(
                &format!("{n}.self_attn.k_proj"),
                &mut layer.self_attn.k_proj.base,
            );
            l.base_linear(
                &format!("{n}.self_attn.v_proj"),
                &mut layer.self_attn.v_proj.base,
            );
            l.base_linear(
                &format!("{n}.self_attn.o_proj"),
                &mut layer.self_attn.o_proj.base,
            );
            l.rms_norm(
                &format!("{n}.post_attention_layernorm"),
                &mut layer.post_attention_layernorm,
            );
            l.base_linear(&format!("{n}.mlp.gate_proj"), &mut layer.mlp.gate_proj.base);
            l.base_linear(&format!("{n}.mlp.up_proj"), &mut layer.mlp.up_proj.base);
            l.base_linear(&format!("{n}.mlp.down_proj"), &mut layer.mlp.down_proj.base);
        }
        l.rms_norm(&format!("{t}norm"), &mut decoder.norm);
        let head = format!("{lm_head}weight");
        match decoder.lm_head.as_mut() {
            Some(head_layer) => l.linear(lm_head.trim_end_matches('.'), head_layer),
            // Tied: some exports still write the (identical) head; it is not read.
            None => l.store.skip(&head),
        }
    }
}
