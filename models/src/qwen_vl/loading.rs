//! Loads a Qwen2-VL / Qwen2.5-VL checkpoint directory: `config.json` ([`read_qwen_vl_config`])
//! and safetensors (one file or sharded, f32/f16/bf16) through [`WeightStore`], which reports
//! every missing, unexpected or mis-shaped tensor in one error.
//!
//! Tensor names, one row per layout (grep a checkpoint key, land here):
//!
//! | part            | Hub (`Qwen/Qwen2-VL-*`, `Qwen/Qwen2.5-VL-*`) | transformers ≥ 4.52 `save_pretrained` |
//! |-----------------|----------------------------------------------|---------------------------------------|
//! | decoder         | `model.{embed_tokens,layers.N,norm}.*`       | `model.language_model.*`              |
//! | vision tower    | `visual.{patch_embed,blocks.N,merger}.*`     | `model.visual.*`                      |
//! | head (untied)   | `lm_head.weight`                             | `lm_head.weight`                      |
//!
//! Qwen3-VL was published with the nested names. Its parts are named differently inside the
//! tower: `mlp.linear_fc1/2` (Qwen2-VL `mlp.fc1/2`), `merger.{norm,linear_fc1,linear_fc2}`
//! (`merger.{ln_q,mlp.0,mlp.2}`), plus `pos_embed.weight`, `deepstack_merger_list.N.*` and the
//! decoder's `self_attn.{q_norm,k_norm}.weight`.

use std::path::Path;

use burn::module::Param;
use burn::nn::{Linear, RmsNorm};
use burn::tensor::{backend::Backend, Tensor, TensorData};

use super::config::{read_qwen_vl_config, QwenVlFamily};
use super::model::QwenVl;
use super::patch_merger::PatchMerger;
use super::vision_block::{VisionFeedForward, VisionNorm};
use crate::error::ModelError;
use crate::loading::safetensors::WeightStore;
use crate::loading::transpose;

/// Name prefixes of one checkpoint layout.
struct Prefixes {
    text: &'static str,
    vision: &'static str,
}

/// transformers ≥ 4.52 nests the decoder under `model.language_model.`; Hub files predate it.
fn prefixes(store: &WeightStore) -> Prefixes {
    if store.contains("model.language_model.embed_tokens.weight") {
        Prefixes {
            text: "model.language_model.",
            vision: "model.visual.",
        }
    } else {
        Prefixes {
            text: "model.",
            vision: "visual.",
        }
    }
}

/// Loads `dir/config.json` and the weights in `dir`. The returned model's parameters require
/// gradients (full fine-tuning).
pub fn load_qwen_vl<B: Backend>(dir: &Path, device: &B::Device) -> Result<QwenVl<B>, ModelError> {
    let config = read_qwen_vl_config(&dir.join("config.json"))?;
    let mut store = WeightStore::open_dir(dir)?;
    let p = prefixes(&store);
    let mut model = config.init::<B>(device);
    let mut l = Loader {
        store: &mut store,
        device,
    };
    load_vision(&mut l, &mut model, p.vision);
    load_decoder(&mut l, &mut model, p.text);
    // Rotary `inv_freq` buffers are recomputed from the config.
    store.finish(|name| name.ends_with("inv_freq"))?;
    Ok(model)
}

struct Loader<'a, B: Backend> {
    store: &'a mut WeightStore,
    device: &'a B::Device,
}

impl<B: Backend> Loader<'_, B> {
    fn param<const D: usize>(&mut self, name: &str, param: &mut Param<Tensor<B, D>>) {
        let shape: [usize; D] = param.shape().dims();
        if let Some(v) = self.store.take(name, &shape) {
            *param = Param::from_tensor(Tensor::from_data(TensorData::new(v, shape), self.device));
        }
    }

    /// HF `nn.Linear` stores `[out, in]`; burn's `Linear` holds `[in, out]`. `stored` is the
    /// on-disk shape when it is not `[out, in]` (the Conv3d patch embedding).
    fn linear_as(&mut self, name: &str, linear: &mut Linear<B>, stored: &[usize]) {
        let [d_in, d_out] = linear.weight.shape().dims();
        if let Some(w) = self.store.take(&format!("{name}.weight"), stored) {
            let w = TensorData::new(transpose(&w, d_out, d_in), [d_in, d_out]);
            linear.weight = Param::from_tensor(Tensor::from_data(w, self.device));
        }
        if let Some(bias) = linear.bias.as_mut() {
            self.param(&format!("{name}.bias"), bias);
        }
    }

    fn linear(&mut self, name: &str, linear: &mut Linear<B>) {
        let [d_in, d_out] = linear.weight.shape().dims();
        self.linear_as(name, linear, &[d_out, d_in]);
    }

    fn rms(&mut self, name: &str, norm: &mut RmsNorm<B>) {
        self.param(&format!("{name}.weight"), &mut norm.gamma);
    }

    fn vision_norm(&mut self, name: &str, norm: &mut VisionNorm<B>) {
        match norm {
            VisionNorm::Layer(n) => {
                self.param(&format!("{name}.weight"), &mut n.gamma);
                if let Some(beta) = n.beta.as_mut() {
                    self.param(&format!("{name}.bias"), beta);
                }
            }
            VisionNorm::Rms(n) => self.rms(name, n),
        }
    }
}

fn load_vision<B: Backend>(l: &mut Loader<'_, B>, model: &mut QwenVl<B>, v: &str) {
    let c = model.config.vision.clone();
    let qwen3 = c.family == QwenVlFamily::Qwen3Vl;
    let visual = &mut model.visual;
    // Conv3d weight [d_model, C, T, p, p]: row-major it is already [d_model, C·T·p·p].
    l.linear_as(
        &format!("{v}patch_embed.proj"),
        &mut visual.patch_embed,
        &[
            c.d_model,
            c.in_channels,
            c.temporal_patch_size,
            c.patch_size,
            c.patch_size,
        ],
    );
    for (i, block) in visual.blocks.iter_mut().enumerate() {
        let n = format!("{v}blocks.{i}");
        l.vision_norm(&format!("{n}.norm1"), &mut block.norm1);
        l.vision_norm(&format!("{n}.norm2"), &mut block.norm2);
        l.linear(&format!("{n}.attn.qkv"), &mut block.attn.qkv);
        l.linear(&format!("{n}.attn.proj"), &mut block.attn.proj);
        match &mut block.mlp {
            VisionFeedForward::Mlp(m) => {
                let (fc1, fc2) = if qwen3 {
                    ("linear_fc1", "linear_fc2")
                } else {
                    ("fc1", "fc2")
                };
                l.linear(&format!("{n}.mlp.{fc1}"), &mut m.fc1);
                l.linear(&format!("{n}.mlp.{fc2}"), &mut m.fc2);
            }
            VisionFeedForward::SwiGlu(m) => {
                l.linear(&format!("{n}.mlp.gate_proj"), &mut m.gate_proj);
                l.linear(&format!("{n}.mlp.up_proj"), &mut m.up_proj);
                l.linear(&format!("{n}.mlp.down_proj"), &mut m.down_proj);
            }
        }
    }
    load_merger(l, &format!("{v}merger"), &mut visual.merger, qwen3);
    for (j, merger) in visual.deepstack_mergers.iter_mut().enumerate() {
        load_merger(l, &format!("{v}deepstack_merger_list.{j}"), merger, qwen3);
    }
    if let Some(table) = visual.pos_embed.as_mut() {
        l.param(&format!("{v}pos_embed.weight"), &mut table.weight);
    }
}

fn load_merger<B: Backend>(
    l: &mut Loader<'_, B>,
    n: &str,
    merger: &mut PatchMerger<B>,
    qwen3: bool,
) {
    let (norm, fc1, fc2) = if qwen3 {
        ("norm", "linear_fc1", "linear_fc2")
    } else {
        ("ln_q", "mlp.0", "mlp.2")
    };
    l.vision_norm(&format!("{n}.{norm}"), &mut merger.ln_q);
    l.linear(&format!("{n}.{fc1}"), &mut merger.mlp_0);
    l.linear(&format!("{n}.{fc2}"), &mut merger.mlp_2);
}

fn load_decoder<B: Backend>(l: &mut Loader<'_, B>, model: &mut QwenVl<B>, t: &str) {
    let decoder = &mut model.decoder;
    l.param(
        &format!("{t}embed_tokens.weight"),
        &mut decoder.embed_tokens.weight,
    );
    for (i, layer) in decoder.layers.iter_mut().enumerate() {
        let n = format!("{t}layers.{i}");
        l.rms(&format!("{n}.input_layernorm"), &mut layer.input_layernorm);
        l.rms(
            &format!("{n}.post_attention_layernorm"),
            &mut layer.post_attention_layernorm,
        );
        let a = &mut layer.self_attn;
        l.linear(&format!("{n}.self_attn.q_proj"), &mut a.q_proj.base);
        l.linear(&format!("{n}.self_attn.k_proj"), &mut a.k_proj.base);
        l.linear(&format!("{n}.self_attn.v_proj"), &mut a.v_proj.base);
        l.linear(&format!("{n}.self_attn.o_proj"), &mut a.o_proj.base);
        if let Some(q_norm) = a.q_norm.as_mut() {
            l.rms(&format!("{n}.self_attn.q_norm"), q_norm);
        }
        if let Some(k_norm) = a.k_norm.as_mut() {
            l.rms(&format!("{n}.self_attn.k_norm"), k_norm);
        }
        let m = &mut layer.mlp;
        l.linear(&format!("{n}.mlp.gate_proj"), &mut m.gate_proj.base);
        l.linear(&format!("{n}.mlp.up_proj"), &mut m.up_proj.base);
        l.linear(&format!("{n}.mlp.down_proj"), &mut m.down_proj.base);
    }
    l.rms(&format!("{t}norm"), &mut decoder.norm);
    match decoder.lm_head.as_mut() {
        Some(head) => l.linear("lm_head", head),
        // Tied: some exports still write the (identical) head; it is not read.
        None => l.store.skip("lm_head.weight"),
    }
}
