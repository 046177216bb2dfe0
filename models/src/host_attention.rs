//! The blocked causal attention of [`crate::causal_attention`] as one kernel on host f32 slices,
//! for backends whose tensors live in host memory (ndarray, flex).
//!
//! Same algorithm, statistics and causality contract as [`blocked_forward`] /
//! [`blocked_backward`] (FlashAttention-2 with whole key rows per query block), but per
//! (batch, head, query block) it runs three or five GEMMs straight on the tensors' memory
//! (transposes are strided views), fuses scale, bias, the causal cut, `exp` and the row sums in
//! one pass over each score row, and reuses two score buffers for the whole call. Built from
//! tensor ops, the same work costs a fresh buffer and a copy to contiguous layout per op, and
//! libm's scalar `expf`: at 1 k tokens that was more than 40 % of a LoRA alignment step on
//! ndarray. Keys after a query's own position are skipped outright (the tensor version adds
//! `MASKED` to them; both give them probability exactly 0, since the diagonal is always visible).
//!
//! [`blocked_forward`]: crate::causal_attention::blocked_forward
//! [`blocked_backward`]: crate::causal_attention::blocked_backward

use burn::tensor::{backend::Backend, DType, Tensor};

use crate::causal_attention::{AttentionInput, Dims};
use crate::host_math::{dot, exp_softmax, gemm, max, sum, wide_fn, Strided};
use crate::host_tensor::{host_tensor as tensor, host_vec};

/// Buffer offsets of the host kernel, on the call's sizes.
impl Dims {
    /// Offset of head `h`'s first query row in a `[batch, heads, q_len, head_dim]` buffer.
    fn q_head(&self, b: usize, h: usize) -> usize {
        (b * self.heads + h) * self.q_len * self.head_dim
    }

    /// Offset of the keys (or values) head `h` reads in `[batch, kv_heads, kv_len, head_dim]`.
    fn kv_head(&self, b: usize, h: usize) -> usize {
        let kvh = h / (self.heads / self.kv_heads);
        (b * self.kv_heads + kvh) * self.kv_len * self.head_dim
    }

    /// Query rows `start..end` of one head.
    fn query_rows(&self, head: usize, start: usize, end: usize) -> Strided {
        Strided::rows(
            head + start * self.head_dim,
            end - start,
            self.head_dim,
            self.head_dim,
        )
    }

    /// Key (or value) rows `0..keys` of one head.
    fn key_rows(&self, head: usize, keys: usize) -> Strided {
        Strided::rows(head, keys, self.head_dim, self.head_dim)
    }

    /// Keys visible to query `q` (the diagonal included): `0..past + q + 1`.
    fn keys_visible_to(&self, q: usize) -> usize {
        self.past() + q + 1
    }

    /// Row `q` of batch `b`'s `[q_len, kv_len]` bias.
    fn bias_row<'a>(&self, bias: &'a [f32], b: usize, q: usize) -> &'a [f32] {
        let start = (b * self.q_len + q) * self.kv_len;
        &bias[start..start + self.kv_len]
    }
}

/// Host data of one call: the inputs as contiguous f32 vectors.
struct HostInput {
    dims: Dims,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    bias: Vec<f32>,
}

impl HostInput {
    fn of<B: Backend>(input: AttentionInput<B>) -> Self {
        Self {
            dims: Dims::of(&input.q, &input.k),
            q: host_vec(input.q),
            k: host_vec(input.k),
            v: host_vec(input.v),
            bias: host_vec(input.bias),
        }
    }
}

/// Whether the host kernel takes these inputs (f32; other dtypes use the tensor kernel).
pub fn host_supported<B: Backend>(input: &AttentionInput<B>) -> bool {
    input.q.dtype() == DType::F32
}

/// Turns score row `row` (`scale · q kᵀ` of query `q`, all `keys` of its block) into
/// `exp(s + bias − shift)` over the keys `q` may see and 0 after them; `shift` gets the biased
/// visible scores. Returns the visible length.
#[inline(always)]
fn exp_row(
    dims: &Dims,
    row: &mut [f32],
    bias: &[f32],
    (b, q): (usize, usize),
    shift: impl FnOnce(&[f32]) -> f32,
) -> usize {
    let visible = dims.keys_visible_to(q);
    let (seen, hidden) = row.split_at_mut(visible);
    for (s, &bias) in seen.iter_mut().zip(dims.bias_row(bias, b, q)) {
        *s += bias;
    }
    let m = shift(seen);
    for s in seen.iter_mut() {
        *s = exp_softmax(*s - m);
    }
    hidden.fill(0.0);
    visible
}

wide_fn! {
    /// Query rows `start..end` of batch `b`'s head: each score row (`keys` long, `n × keys`
    /// row-major) becomes `exp(s + bias − max)` ([`exp_row`]), `lse[q]` its log-sum-exp and
    /// `inv_sums[i]` one over its sum.
    fn softmax_rows(
        d: &Dims,
        scores: &mut [f32],
        bias: &[f32],
        rows: (usize, usize, usize, usize),
        lse: &mut [f32],
        inv_sums: &mut [f32],
    ) {
        let (b, start, end, keys) = rows;
        for (i, q) in (start..end).enumerate() {
            let row = &mut scores[i * keys..(i + 1) * keys];
            let mut row_max = 0.0;
            let visible = exp_row(d, row, bias, (b, q), |seen| {
                row_max = max(seen);
                row_max
            });
            let row_sum = sum(&row[..visible]);
            lse[q] = row_max + row_sum.ln();
            inv_sums[i] = 1.0 / row_sum;
        }
    }
}

wide_fn! {
    /// Query rows `start..end` of batch `b`'s head: each score row becomes its probabilities
    /// `exp(s + bias − lse[q])`.
    fn probability_rows(
        d: &Dims,
        probs: &mut [f32],
        bias: &[f32],
        rows: (usize, usize, usize, usize),
        lse: &[f32],
    ) {
        let (b, start, end, keys) = rows;
        for (i, q) in (start..end).enumerate() {
            let row = &mut probs[i * keys..(i + 1) * keys];
            exp_row(d, row, bias, (b, q), |_| lse[q]);
        }
    }
}

wide_fn! {
    /// `dS = P ∘ (dP − δ)` row by row (`keys` long), `δ` one value per row.
    fn score_gradient_rows(dscores: &mut [f32], probs: &[f32], keys: usize, delta: &[f32]) {
        let rows = dscores.chunks_exact_mut(keys).zip(probs.chunks_exact(keys));
        for ((ds_row, p_row), &delta) in rows.zip(delta) {
            for (ds, &p) in ds_row.iter_mut().zip(p_row) {
                *ds = p * (*ds - delta);
            }
        }
    }
}

/// `scores ← scale · Q[start..end] · K[0..keys]ᵀ`, `n × keys` row-major.
fn block_scores(
    x: &HostInput,
    (q_head, kv_head): (usize, usize),
    (start, end, keys): (usize, usize, usize),
    scores: &mut [f32],
) {
    let d = &x.dims;
    let scale = d.scale() as f32;
    gemm(
        scale,
        (&x.q, d.query_rows(q_head, start, end)),
        (&x.k, d.key_rows(kv_head, keys).t()),
        0.0,
        (scores, Strided::rows(0, end - start, keys, keys)),
    );
}

/// Output `[batch, heads, q_len, head_dim]` and row log-sum-exp `[batch, heads, q_len]` of the
/// biased, scaled scores (as [`crate::causal_attention::blocked_forward`]).
fn forward_host(x: &HostInput, block: usize) -> (Vec<f32>, Vec<f32>) {
    let d = x.dims;
    let block = block.max(1);
    let mut out = vec![0f32; d.batch * d.heads * d.q_len * d.head_dim];
    let mut lse = vec![0f32; d.batch * d.heads * d.q_len];
    let mut scores = vec![0f32; block.min(d.q_len) * d.kv_len];
    let mut inv_sums = vec![0f32; block];
    for b in 0..d.batch {
        for h in 0..d.heads {
            let heads = (d.q_head(b, h), d.kv_head(b, h));
            let lse_head = (b * d.heads + h) * d.q_len;
            for (start, end, keys) in d.blocks(block) {
                let n = end - start;
                let scores = &mut scores[..n * keys];
                block_scores(x, heads, (start, end, keys), scores);
                let lse_rows = &mut lse[lse_head..lse_head + d.q_len];
                softmax_rows(
                    &d,
                    scores,
                    &x.bias,
                    (b, start, end, keys),
                    lse_rows,
                    &mut inv_sums,
                );
                let out_rows = d.query_rows(heads.0, start, end);
                gemm(
                    1.0,
                    (scores, Strided::rows(0, n, keys, keys)),
                    (&x.v, d.key_rows(heads.1, keys)),
                    0.0,
                    (&mut out, out_rows),
                );
                for (i, q) in (start..end).enumerate() {
                    let o = heads.0 + q * d.head_dim;
                    out[o..o + d.head_dim]
                        .iter_mut()
                        .for_each(|v| *v *= inv_sums[i]);
                }
            }
        }
    }
    (out, lse)
}

/// Gradients `(dq, dk, dv)` from the output `out`, its log-sum-exp `lse` and the output gradient
/// `grad_out` (as [`crate::causal_attention::blocked_backward`]): per block `P = exp(s − lse)`,
/// `dV += Pᵀ dO`, `dP = dO Vᵀ`, `dS = P ∘ (dP − rowsum(dO ∘ O))`, `dQ = scale · dS K`,
/// `dK += scale · dSᵀ Q`.
fn backward_host(
    x: &HostInput,
    out: &[f32],
    lse: &[f32],
    grad_out: &[f32],
    block: usize,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let d = x.dims;
    let block = block.max(1);
    let hd = d.head_dim;
    let scale = d.scale() as f32;
    let delta: Vec<f32> = out
        .chunks_exact(hd)
        .zip(grad_out.chunks_exact(hd))
        .map(|(o, g)| dot(o, g))
        .collect();
    let mut dq = vec![0f32; x.q.len()];
    let mut dk = vec![0f32; x.k.len()];
    let mut dv = vec![0f32; x.v.len()];
    let mut probs = vec![0f32; block.min(d.q_len) * d.kv_len];
    let mut dscores = vec![0f32; probs.len()];
    for b in 0..d.batch {
        for h in 0..d.heads {
            let (q_head, kv_head) = (d.q_head(b, h), d.kv_head(b, h));
            let row_head = (b * d.heads + h) * d.q_len;
            for (start, end, keys) in d.blocks(block) {
                let n = end - start;
                let block_view = Strided::rows(0, n, keys, keys);
                let probs = &mut probs[..n * keys];
                let dscores = &mut dscores[..n * keys];
                block_scores(x, (q_head, kv_head), (start, end, keys), probs);
                let lse_rows = &lse[row_head..row_head + d.q_len];
                probability_rows(&d, probs, &x.bias, (b, start, end, keys), lse_rows);
                let rows = d.query_rows(q_head, start, end);
                let kv_rows = d.key_rows(kv_head, keys);
                gemm(
                    1.0,
                    (probs, block_view.t()),
                    (grad_out, rows),
                    1.0,
                    (&mut dv, kv_rows),
                );
                gemm(
                    1.0,
                    (grad_out, rows),
                    (&x.v, kv_rows.t()),
                    0.0,
                    (dscores, block_view),
                );
                let delta_rows = &delta[row_head + start..row_head + end];
                score_gradient_rows(dscores, probs, keys, delta_rows);
                gemm(
                    scale,
                    (dscores, block_view),
                    (&x.k, kv_rows),
                    0.0,
                    (&mut dq, rows),
                );
                gemm(
                    scale,
                    (dscores, block_view.t()),
                    (&x.q, rows),
                    1.0,
                    (&mut dk, kv_rows),
                );
            }
        }
    }
    (dq, dk, dv)
}

/// [`crate::causal_attention::blocked_forward`] on the host: output `[batch, n_heads, q_len,
/// head_dim]` and log-sum-exp `[batch, n_heads, q_len, 1]`. Inputs must be f32
/// ([`host_supported`]).
pub fn host_forward<B: Backend>(
    input: AttentionInput<B>,
    block: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>) {
    let device = input.q.device();
    let x = HostInput::of(input);
    let d = x.dims;
    let (out, lse) = forward_host(&x, block);
    (
        tensor::<B, 4>(out, [d.batch, d.heads, d.q_len, d.head_dim], &device),
        tensor::<B, 4>(lse, [d.batch, d.heads, d.q_len, 1], &device),
    )
}

/// [`crate::causal_attention::blocked_backward`] on the host: `(dq, dk, dv)`.
pub fn host_backward<B: Backend>(
    input: AttentionInput<B>,
    out: Tensor<B, 4>,
    lse: Tensor<B, 4>,
    grad_out: Tensor<B, 4>,
    block: usize,
) -> (Tensor<B, 4>, Tensor<B, 4>, Tensor<B, 4>) {
    let device = input.q.device();
    let (q_shape, kv_shape) = (input.q.dims(), input.k.dims());
    let x = HostInput::of(input);
    let (dq, dk, dv) = backward_host(
        &x,
        &host_vec(out),
        &host_vec(lse),
        &host_vec(grad_out),
        block,
    );
    (
        tensor::<B, 4>(dq, q_shape, &device),
        tensor::<B, 4>(dk, kv_shape, &device),
        tensor::<B, 4>(dv, kv_shape, &device),
    )
}
