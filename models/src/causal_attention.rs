//! Memory-efficient causal attention for the text decoder: query blocks that skip the keys
//! causality hides and keep only per-row log-sum-exp statistics for backward
//! (FlashAttention-2, Dao 2023, Algorithms 1–2, with whole key rows per query block instead of
//! key tiles: on CPU backends one batched matmul per block beats many small ones).
//!
//! The dense reference materializes `[batch, n_heads, q_len, kv_len]` scores and autodiff keeps
//! every softmax intermediate of that size; here a block of `block` queries sees only the keys
//! `0..past + block_end`, and the backward pass ([`blocked_backward`]) recomputes each block's
//! probabilities from the saved log-sum-exp. Every result equals the dense one up to f32 rounding
//! (masked scores contribute `exp(-1e9 - max) = 0` in both).
//!
//! **Causality contract**: `bias` must hide every key after the query's own position
//! (`key > past + query`), as [`crate::mask::attention_bias`] always does; those keys are never
//! read. Padding and segment masks inside the visible range come from `bias` as before.
//!
//! Dtypes: inputs that are not f32 (bf16/f16 base weights) are computed in f32 and the result is
//! cast back, so the softmax statistics are always f32.

use burn::tensor::{backend::Backend, DType, FloatDType, Tensor};

/// Queries per block. 128 rows keep a block's scores (`n_heads · 128 · kv_len` floats, 4 MiB at
/// 8 heads and 1 k keys) under glibc's mmap threshold while wasting at most 1/16 of the causal
/// triangle at 1 k tokens.
pub const QUERY_BLOCK: usize = 128;

/// Attention inputs, grouped-query layout.
///
/// # Shapes
/// - `q`: `[batch, n_heads, q_len, head_dim]` (after RoPE)
/// - `k`, `v`: `[batch, n_kv_heads, kv_len, head_dim]`, `kv_len = past + q_len`
/// - `bias`: `[batch, 1, q_len, kv_len]`, additive (0 or [`crate::mask::MASKED`])
#[derive(Debug, Clone)]
pub struct AttentionInput<B: Backend> {
    pub q: Tensor<B, 4>,
    pub k: Tensor<B, 4>,
    pub v: Tensor<B, 4>,
    pub bias: Tensor<B, 4>,
}

/// Sizes of one attention call, shared by the forward and backward passes (and the host
/// kernel, [`crate::host_attention`], which adds its buffer offsets).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) batch: usize,
    pub(crate) heads: usize,
    pub(crate) kv_heads: usize,
    pub(crate) q_len: usize,
    pub(crate) kv_len: usize,
    pub(crate) head_dim: usize,
}

impl Dims {
    pub(crate) fn of<B: Backend>(q: &Tensor<B, 4>, k: &Tensor<B, 4>) -> Self {
        let [batch, heads, q_len, head_dim] = q.dims();
        let [_, kv_heads, kv_len, _] = k.dims();
        assert!(
            kv_len >= q_len && heads % kv_heads == 0,
            "attention needs kv_len ({kv_len}) >= q_len ({q_len}) and n_heads ({heads}) divisible by n_kv_heads ({kv_heads})"
        );
        Self {
            batch,
            heads,
            kv_heads,
            q_len,
            kv_len,
            head_dim,
        }
    }

    /// Keys before the first query (a KV cache's length).
    pub(crate) fn past(&self) -> usize {
        self.kv_len - self.q_len
    }

    pub(crate) fn scale(&self) -> f64 {
        1.0 / (self.head_dim as f64).sqrt()
    }

    /// Query blocks `(start, end, visible_keys)`: `visible_keys` = every key a query of the
    /// block may see.
    pub(crate) fn blocks(&self, block: usize) -> impl Iterator<Item = (usize, usize, usize)> {
        let (q_len, past) = (self.q_len, self.past());
        (0..q_len).step_by(block.max(1)).map(move |start| {
            let end = (start + block.max(1)).min(q_len);
            (start, end, past + end)
        })
    }

    /// Rows `start..end` of a `[batch, n_heads, q_len, d]` tensor, grouped by KV head:
    /// `[batch, n_kv_heads, rep · n, d]`.
    fn grouped<B: Backend>(&self, t: &Tensor<B, 4>, start: usize, end: usize) -> Tensor<B, 4> {
        let d = t.dims()[3];
        let rep = self.heads / self.kv_heads;
        t.clone()
            .slice([0..self.batch, 0..self.heads, start..end, 0..d])
            .reshape([self.batch, self.kv_heads, rep * (end - start), d])
    }

    /// Keys or values `0..keys`: `[batch, n_kv_heads, keys, head_dim]`.
    fn visible<B: Backend>(&self, t: &Tensor<B, 4>, keys: usize) -> Tensor<B, 4> {
        t.clone()
            .slice([0..self.batch, 0..self.kv_heads, 0..keys, 0..self.head_dim])
    }

    /// Scaled scores plus bias of one block: `[batch, n_heads, n, keys]`.
    fn scores<B: Backend>(
        &self,
        q_block: Tensor<B, 4>,
        k_visible: Tensor<B, 4>,
        bias: &Tensor<B, 4>,
        (start, end, keys): (usize, usize, usize),
    ) -> Tensor<B, 4> {
        let s = q_block.matmul(k_visible.swap_dims(2, 3));
        // [batch, n_kv_heads, rep · n, keys]
        s.reshape([self.batch, self.heads, end - start, keys])
            + bias
                .clone()
                .slice([0..self.batch, 0..1, start..end, 0..keys])
    }
}

/// Blocked forward: the attention output `[batch, n_heads, q_len, head_dim]` and the row
/// log-sum-exp `[batch, n_heads, q_len, 1]` of the biased, scaled scores.
///
/// Built from ordinary tensor ops, so it also differentiates under plain `Autodiff` (then the
/// log-sum-exp is unused and autodiff keeps one block's intermediates per block, half of the
/// dense triangle); [`crate::register_fused_attention`] replaces that by [`blocked_backward`].
pub fn blocked_forward<B: Backend>(
    input: AttentionInput<B>,
    block: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let AttentionInput { q, k, v, bias } = input;
    let dims = Dims::of(&q, &k);
    let q = q * dims.scale();
    let mut outs = Vec::new();
    let mut lses = Vec::new();
    for blk in dims.blocks(block) {
        let (start, end, keys) = blk;
        let n = end - start;
        let s = dims.scores(
            dims.grouped(&q, start, end),
            dims.visible(&k, keys),
            &bias,
            blk,
        );
        // Softmax is shift-invariant: no gradient flows through the max (as burn's softmax).
        let max = s.clone().detach().max_dim(3);
        // [batch, n_heads, n, 1]
        let e = (s - max.clone()).exp();
        let sum = e.clone().sum_dim(3);
        let rep = dims.heads / dims.kv_heads;
        let out = e
            .reshape([dims.batch, dims.kv_heads, rep * n, keys])
            .matmul(dims.visible(&v, keys))
            .reshape([dims.batch, dims.heads, n, dims.head_dim]);
        // [batch, n_heads, n, head_dim]
        outs.push(out / sum.clone());
        lses.push(max + sum.log());
    }
    (Tensor::cat(outs, 2), Tensor::cat(lses, 2))
}

/// Gradients `(dq, dk, dv)` of [`blocked_forward`]'s output, given the output `out`, its
/// log-sum-exp `lse` and the output gradient `grad_out` (all `[batch, n_heads, q_len, ·]`).
/// Probabilities are recomputed per block as `exp(s - lse)`; `D = rowsum(grad_out ∘ out)` turns
/// the softmax Jacobian into `dS = P ∘ (dP − D)` (FlashAttention-2, Algorithm 2).
pub fn blocked_backward<B: Backend>(
    input: AttentionInput<B>,
    out: Tensor<B, 4>,
    lse: Tensor<B, 4>,
    grad_out: Tensor<B, 4>,
    block: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let AttentionInput { q, k, v, bias } = input;
    let dims = Dims::of(&q, &k);
    let scale = dims.scale();
    let q = q * scale;
    let delta = (grad_out.clone() * out).sum_dim(3);
    // [batch, n_heads, q_len, 1]
    let rep = dims.heads / dims.kv_heads;
    let device = k.device();
    let kv_shape = [dims.batch, dims.kv_heads, dims.kv_len, dims.head_dim];
    let mut dk = Tensor::<B, 4>::zeros(kv_shape, &device);
    let mut dv = Tensor::<B, 4>::zeros(kv_shape, &device);
    let mut dqs = Vec::new();
    for blk in dims.blocks(block) {
        let (start, end, keys) = blk;
        let n = end - start;
        let rows = [0..dims.batch, 0..dims.heads, start..end, 0..1];
        let q_block = dims.grouped(&q, start, end);
        let k_visible = dims.visible(&k, keys);
        let s = dims.scores(q_block.clone(), k_visible.clone(), &bias, blk);
        let p = (s - lse.clone().slice(rows.clone())).exp();
        // [batch, n_heads, n, keys]
        let grouped = [dims.batch, dims.kv_heads, rep * n, keys];
        let go = dims.grouped(&grad_out, start, end);
        // [batch, n_kv_heads, rep · n, head_dim]
        let dv_part = p
            .clone()
            .reshape(grouped)
            .swap_dims(2, 3)
            .matmul(go.clone());
        let dp = go
            .matmul(dims.visible(&v, keys).swap_dims(2, 3))
            .reshape([dims.batch, dims.heads, n, keys]);
        let ds = (p * (dp - delta.clone().slice(rows))).reshape(grouped);
        // [batch, n_kv_heads, rep · n, keys]
        dqs.push((ds.clone().matmul(k_visible) * scale).reshape([
            dims.batch,
            dims.heads,
            n,
            dims.head_dim,
        ]));
        let dk_part = ds.swap_dims(2, 3).matmul(q_block);
        // [batch, n_kv_heads, keys, head_dim]
        let range = [0..dims.batch, 0..dims.kv_heads, 0..keys, 0..dims.head_dim];
        dk = dk
            .clone()
            .slice_assign(range.clone(), dk.slice(range.clone()) + dk_part);
        dv = dv
            .clone()
            .slice_assign(range.clone(), dv.slice(range) + dv_part);
    }
    (Tensor::cat(dqs, 2), dk, dv)
}

/// The dense reference (the decoder's attention before [`blocked_forward`]): full
/// `[batch, n_heads, q_len, kv_len]` scores and softmax. For tests and benchmarks.
pub fn dense_attention<B: Backend>(input: AttentionInput<B>) -> Tensor<B, 4> {
    let AttentionInput { q, k, v, bias } = input;
    let dims = Dims::of(&q, &k);
    let rep = dims.heads / dims.kv_heads;
    let (b, kvh, h, l, kv, hd) = (
        dims.batch,
        dims.kv_heads,
        dims.heads,
        dims.q_len,
        dims.kv_len,
        dims.head_dim,
    );
    let q = q.reshape([b, kvh, rep * l, hd]);
    let scores = q.matmul(k.swap_dims(2, 3)) * dims.scale();
    let scores = scores.reshape([b, h, l, kv]) + bias;
    // [batch, n_heads, q_len, kv_len]
    let probs = burn::tensor::activation::softmax(scores, 3).reshape([b, kvh, rep * l, kv]);
    probs.matmul(v).reshape([b, h, l, hd])
}

/// Casts every input to f32 when `q` is a half-precision dtype (bf16/f16 base weights); returns
/// the dtype to cast the output back to. f32 and f64 pass through.
pub(crate) fn to_f32<B: Backend>(
    input: AttentionInput<B>,
) -> (AttentionInput<B>, Option<FloatDType>) {
    let dtype = input.q.dtype();
    if !matches!(dtype, DType::F16 | DType::BF16) {
        return (input, None);
    }
    let f = |t: Tensor<B, 4>| t.cast(FloatDType::F32);
    (
        AttentionInput {
            q: f(input.q),
            k: f(input.k),
            v: f(input.v),
            bias: f(input.bias),
        },
        Some(FloatDType::from(dtype)),
    )
}
