//! Vision self-attention restricted to segments (HF `VisionAttention` /
//! `Qwen2_5_VLVisionAttention` with `cu_seqlens`): a patch attends only to patches of its own
//! image frame, or of its own window. Fused `qkv` projection, 2-D rotary on q and k, no causal
//! mask.
//!
//! Segments are gathered into a padded batch `[n_segments, heads, max_len, head_dim]` so every
//! segment runs in one batched matmul with padding keys masked, instead of a dense
//! `n_patches²` block-diagonal mask. Long segments (whole images in the full-attention blocks)
//! are attended in blocks of query rows ([`segment_attention`]), so the scores never need more
//! than [`MAX_SCORE_ELEMENTS`] at once.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{activation::softmax, backend::Backend, Int, Tensor, TensorData};

use crate::mask::MASKED;
use crate::rope::{apply_rope, RopeTables};

/// Most f32 scores one query block of [`segment_attention`] computes (128 MiB): a ~1-megapixel
/// Qwen2.5-VL image (72×72 patches, 16 heads) would otherwise hold 1.7 GiB of scores and as much
/// again of their softmax in each full-attention block, per image.
pub const MAX_SCORE_ELEMENTS: usize = 1 << 25;

/// Softmax attention of `q` over `k` and `v` (`[segments, heads, len, head_dim]`, scores scaled by
/// `scale` plus the additive key `bias` `[segments, 1, 1, len]`), computed for blocks of query
/// rows so that no block's scores exceed `max_scores` elements. Each row's softmax is its own, so
/// the blocks concatenated are the unblocked result; short segments run as one block.
pub fn segment_attention<B: Backend>(
    q: Tensor<B, 4>,
    k: Tensor<B, 4>,
    v: Tensor<B, 4>,
    bias: Tensor<B, 4>,
    scale: f64,
    max_scores: usize,
) -> Tensor<B, 4> {
    let [s, h, len, _] = q.dims();
    let k_t = k.swap_dims(2, 3);
    let attend = |q: Tensor<B, 4>| {
        softmax(q.matmul(k_t.clone()) * scale + bias.clone(), 3).matmul(v.clone())
    };
    let rows = (max_scores / (s * h * k_t.dims()[3]).max(1)).max(1);
    if rows >= len {
        return attend(q);
    }
    let blocks = (0..len)
        .step_by(rows)
        .map(|start| attend(q.clone().narrow(2, start, rows.min(len - start))))
        .collect();
    Tensor::cat(blocks, 2)
}

/// Where each patch sits in the padded segment batch; built once per forward and segmentation.
#[derive(Debug, Clone)]
pub struct SegmentLayout<B: Backend> {
    /// `[n_segments · max_len]`: source patch of each padded slot (padding reads patch 0).
    gather: Tensor<B, 1, Int>,
    /// `[n_patches]`: padded slot of each patch.
    scatter: Tensor<B, 1, Int>,
    /// `[n_segments, 1, 1, max_len]`: 0 on real keys, [`MASKED`] on padding.
    bias: Tensor<B, 4>,
    n_segments: usize,
    max_len: usize,
}

impl<B: Backend> SegmentLayout<B> {
    /// `segments` are `(start, len)` covering `0..n_patches` in order.
    pub fn new(segments: &[(usize, usize)], n_patches: usize, device: &B::Device) -> Self {
        let max_len = segments.iter().map(|s| s.1).max().unwrap_or(1).max(1);
        let n_segments = segments.len().max(1);
        let mut gather = vec![0i64; n_segments * max_len];
        let mut scatter = vec![0i64; n_patches];
        let mut bias = vec![MASKED; n_segments * max_len];
        for (s, &(start, len)) in segments.iter().enumerate() {
            for k in 0..len {
                let slot = s * max_len + k;
                gather[slot] = (start + k) as i64;
                scatter[start + k] = slot as i64;
                bias[slot] = 0.0;
            }
        }
        Self {
            gather: Tensor::from_data(TensorData::new(gather, [n_segments * max_len]), device),
            scatter: Tensor::from_data(TensorData::new(scatter, [n_patches]), device),
            bias: Tensor::from_data(TensorData::new(bias, [n_segments, 1, 1, max_len]), device),
            n_segments,
            max_len,
        }
    }
}

#[derive(Module, Debug)]
pub struct VisionAttention<B: Backend> {
    pub qkv: Linear<B>,
    pub proj: Linear<B>,
    pub n_heads: usize,
    pub head_dim: usize,
}

impl<B: Backend> VisionAttention<B> {
    pub fn init(d_model: usize, n_heads: usize, device: &B::Device) -> Self {
        Self {
            qkv: LinearConfig::new(d_model, 3 * d_model).init(device),
            proj: LinearConfig::new(d_model, d_model).init(device),
            n_heads,
            head_dim: d_model / n_heads,
        }
    }

    /// `x` `[n_patches, d_model]`; `rope` tables `[1, 1, n_patches, head_dim]`.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        rope: &RopeTables<B>,
        segments: &SegmentLayout<B>,
    ) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let (h, hd) = (self.n_heads, self.head_dim);
        let (s, len) = (segments.n_segments, segments.max_len);
        let qkv = self.qkv.forward(x).reshape([n, 3, h, hd]);
        let part = |i: usize| {
            qkv.clone()
                .narrow(1, i, 1)
                .reshape([n, h, hd])
                .swap_dims(0, 1)
                .unsqueeze_dim::<4>(0)
            // [1, heads, n_patches, head_dim]
        };
        let to_segments = |t: Tensor<B, 4>| {
            t.reshape([h, n, hd])
                .select(1, segments.gather.clone())
                .reshape([h, s, len, hd])
                .swap_dims(0, 1)
            // [n_segments, heads, max_len, head_dim]
        };
        let q = to_segments(apply_rope(part(0), rope));
        let k = to_segments(apply_rope(part(1), rope));
        let v = to_segments(part(2));
        let scale = 1.0 / (hd as f64).sqrt();
        let out = segment_attention(q, k, v, segments.bias.clone(), scale, MAX_SCORE_ELEMENTS);
        // [n_segments, heads, max_len, head_dim]
        let out = out
            .swap_dims(1, 2)
            .reshape([s * len, h * hd])
            .select(0, segments.scatter.clone());
        // [n_patches, d_model]
        self.proj.forward(out)
    }
}
