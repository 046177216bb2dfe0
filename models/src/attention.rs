//! Decoder self-attention with grouped-query heads, RoPE, optional q/k/v bias and a KV cache
//! (HF `LlamaAttention` / `Qwen2Attention`; llama-burn `transformer.rs`).

use burn::module::Module;
use burn::nn::{LinearConfig, RmsNorm};
use burn::tensor::{backend::Backend, Tensor};

use crate::attention_op::causal_attention;
use crate::causal_attention::{dense_attention, AttentionInput};

use crate::config::TextConfig;
use crate::kv_cache::KvCache;
use crate::lora::LoraLinear;
use crate::rope::{apply_rope, RopeTables};

/// How [`Attention`] computes `softmax(q kᵀ / √d + bias) v`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AttentionKernel {
    /// [`causal_attention`]: query blocks, causal key skipping, own backward op where registered.
    #[default]
    Blocked,
    /// [`dense_attention`]: full `[heads, L, L]` scores; the reference, kept for benchmarks.
    Dense,
}

#[derive(Module, Debug)]
pub struct Attention<B: Backend> {
    pub q_proj: LoraLinear<B>,
    pub k_proj: LoraLinear<B>,
    pub v_proj: LoraLinear<B>,
    pub o_proj: LoraLinear<B>,
    /// Per-head RMSNorm of queries and keys before RoPE (Qwen3 `q_norm`/`k_norm`); `None` for
    /// LLaMA/Mistral/Qwen2.
    pub q_norm: Option<RmsNorm<B>>,
    pub k_norm: Option<RmsNorm<B>>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    #[module(skip)]
    pub kernel: AttentionKernel,
}

impl<B: Backend> Attention<B> {
    pub fn init(c: &TextConfig, device: &B::Device) -> Self {
        let lin = |d_in, d_out, bias| {
            LoraLinear::new(LinearConfig::new(d_in, d_out).with_bias(bias).init(device))
        };
        Self {
            q_proj: lin(c.d_model, c.n_heads * c.head_dim, c.qkv_bias),
            k_proj: lin(c.d_model, c.n_kv_heads * c.head_dim, c.qkv_bias),
            v_proj: lin(c.d_model, c.n_kv_heads * c.head_dim, c.qkv_bias),
            o_proj: lin(c.n_heads * c.head_dim, c.d_model, c.o_bias),
            q_norm: None,
            k_norm: None,
            n_heads: c.n_heads,
            n_kv_heads: c.n_kv_heads,
            head_dim: c.head_dim,
            kernel: AttentionKernel::default(),
        }
    }

    /// `x` `[batch, seq_len, d_model]`, `bias` `[batch, 1, seq_len, past + seq_len]`.
    /// With `cache`, keys/values are appended to it and attention covers the cached positions.
    pub fn forward(
        &self,
        x: Tensor<B, 3>,
        rope: &RopeTables<B>,
        bias: Tensor<B, 4>,
        cache: Option<&mut KvCache<B>>,
    ) -> Tensor<B, 3> {
        let [batch, seq_len, _] = x.dims();
        let (h, kvh, hd) = (self.n_heads, self.n_kv_heads, self.head_dim);
        let split = |t: Tensor<B, 3>, heads: usize| {
            t.reshape([batch, seq_len, heads, hd]).swap_dims(1, 2)
            // [batch, heads, seq_len, head_dim]
        };
        let norm = |t: Tensor<B, 4>, n: &Option<RmsNorm<B>>| match n {
            Some(n) => n.forward(t),
            None => t,
        };
        let q = norm(split(self.q_proj.forward(x.clone()), h), &self.q_norm);
        let k = norm(split(self.k_proj.forward(x.clone()), kvh), &self.k_norm);
        let q = apply_rope(q, rope);
        let k = apply_rope(k, rope);
        let v = split(self.v_proj.forward(x), kvh);
        let (k, v) = match cache {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        // Blocked causal attention (no [heads, L, L] scores kept; see `causal_attention`).
        let input = AttentionInput { q, k, v, bias };
        let out = match self.kernel {
            AttentionKernel::Blocked => causal_attention(input),
            AttentionKernel::Dense => dense_attention(input),
        };
        // [batch, n_heads, seq_len, head_dim]
        let out = out.swap_dims(1, 2).reshape([batch, seq_len, h * hd]);
        // [batch, seq_len, n_heads * head_dim]
        self.o_proj.forward(out)
    }
}
