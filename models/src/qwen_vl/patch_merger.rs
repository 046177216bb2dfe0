//! The patch merger (HF `PatchMerger` / `Qwen2_5_VLPatchMerger`): norm each patch, concatenate
//! each `merge × merge` unit of neighbouring patches, and map it through a GELU MLP to one token
//! of the decoder's width.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::gelu, backend::Backend, Tensor};

use super::config::QwenVisionConfig;
use super::vision_block::VisionNorm;

#[derive(Module, Debug)]
pub struct PatchMerger<B: Backend> {
    pub ln_q: VisionNorm<B>,
    /// HF `mlp.0`.
    pub mlp_0: Linear<B>,
    /// HF `mlp.2` (`mlp.1` is the GELU).
    pub mlp_2: Linear<B>,
    pub unit: usize,
}

impl<B: Backend> PatchMerger<B> {
    pub fn init(c: &QwenVisionConfig, device: &B::Device) -> Self {
        let unit = c.spatial_merge_size * c.spatial_merge_size;
        let hidden = c.d_model * unit;
        Self {
            ln_q: VisionNorm::init(c.family, c.d_model, device),
            mlp_0: LinearConfig::new(hidden, hidden).init(device),
            mlp_2: LinearConfig::new(hidden, c.out_dim).init(device),
            unit,
        }
    }

    /// `[n_patches, d_model]` → `[n_patches / merge², out_dim]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let x = self.ln_q.forward(x).reshape([n / self.unit, d * self.unit]);
        self.mlp_2.forward(gelu(self.mlp_0.forward(x)))
    }
}
