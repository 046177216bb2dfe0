//! The patch merger (HF `PatchMerger` / `Qwen2_5_VLPatchMerger` / `Qwen3VLVisionPatchMerger`):
//! norm each patch, concatenate each `merge × merge` unit of neighbouring patches, and map it
//! through a GELU MLP to one token of the decoder's width. Qwen3-VL's DeepStack mergers norm
//! after concatenating instead (`use_postshuffle_norm`).

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
    /// Norm the concatenated unit (width `d_model · merge²`) rather than each patch.
    pub postshuffle: bool,
}

impl<B: Backend> PatchMerger<B> {
    pub fn init(c: &QwenVisionConfig, postshuffle: bool, device: &B::Device) -> Self {
        let unit = c.spatial_merge_size * c.spatial_merge_size;
        let hidden = c.d_model * unit;
        let norm_dim = if postshuffle { hidden } else { c.d_model };
        Self {
            ln_q: VisionNorm::init(c.family, norm_dim, device),
            mlp_0: LinearConfig::new(hidden, hidden).init(device),
            mlp_2: LinearConfig::new(hidden, c.out_dim).init(device),
            unit,
            postshuffle,
        }
    }

    /// `[n_patches, d_model]` → `[n_patches / merge², out_dim]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, d] = x.dims();
        let x = if self.postshuffle {
            self.ln_q.forward(x.reshape([n / self.unit, d * self.unit]))
        } else {
            self.ln_q.forward(x).reshape([n / self.unit, d * self.unit])
        };
        self.mlp_2.forward(gelu(self.mlp_0.forward(x)))
    }
}
