//! CLIP/SigLIP-style vision transformer returning the hidden states LLaVA reads
//! (HF `modeling_clip.py` `CLIPVisionTransformer`, `modeling_siglip.py`; candle `clip/vision_model.rs`).
//!
//! The patch convolution (stride = kernel = patch) is computed as a reshape into patches followed
//! by one linear layer; the loader reshapes the conv weight `[d, C, p, p]` to `[C·p·p, d]`.

use burn::module::{Module, Param};
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::{activation::softmax, backend::Backend, Tensor};

use crate::activation::Activation;
use crate::config::VisionConfig;

/// Bidirectional multi-head attention with biases.
#[derive(Module, Debug)]
pub struct VisionAttention<B: Backend> {
    pub q_proj: Linear<B>,
    pub k_proj: Linear<B>,
    pub v_proj: Linear<B>,
    pub out_proj: Linear<B>,
    pub n_heads: usize,
}

impl<B: Backend> VisionAttention<B> {
    /// `[batch, seq_len, d_model]` → same.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, seq_len, d_model] = x.dims();
        let hd = d_model / self.n_heads;
        let split = |t: Tensor<B, 3>| {
            t.reshape([batch, seq_len, self.n_heads, hd])
                .swap_dims(1, 2)
        };
        // [batch, n_heads, seq_len, head_dim]
        let q = split(self.q_proj.forward(x.clone()));
        let k = split(self.k_proj.forward(x.clone()));
        let v = split(self.v_proj.forward(x));
        let probs = softmax(q.matmul(k.swap_dims(2, 3)) * (1.0 / (hd as f64).sqrt()), 3);
        let out = probs
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq_len, d_model]);
        // [batch, seq_len, d_model]
        self.out_proj.forward(out)
    }
}

#[derive(Module, Debug)]
pub struct VisionMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    #[module(skip)]
    pub activation: Activation,
}

#[derive(Module, Debug)]
pub struct VisionLayer<B: Backend> {
    pub layer_norm1: LayerNorm<B>,
    pub self_attn: VisionAttention<B>,
    pub layer_norm2: LayerNorm<B>,
    pub mlp: VisionMlp<B>,
}

impl<B: Backend> VisionLayer<B> {
    fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let h = x.clone() + self.self_attn.forward(self.layer_norm1.forward(x));
        let m = self.mlp.fc1.forward(self.layer_norm2.forward(h.clone()));
        h + self.mlp.fc2.forward(self.mlp.activation.forward(m))
    }
}

/// The vision tower.
#[derive(Module, Debug)]
pub struct VisionTransformer<B: Backend> {
    /// Patch projection `[C·p·p, d_model]` (the conv weight, flattened).
    pub patch_embedding: Linear<B>,
    /// CLIP's learned class token `[d_model]`.
    pub class_embedding: Option<Param<Tensor<B, 1>>>,
    /// `[n_positions, d_model]`.
    pub position_embedding: Param<Tensor<B, 2>>,
    pub pre_layernorm: Option<LayerNorm<B>>,
    pub layers: Vec<VisionLayer<B>>,
    /// Loaded for completeness; LLaVA reads hidden states before it.
    pub post_layernorm: LayerNorm<B>,
    pub patch_size: usize,
}

impl<B: Backend> VisionTransformer<B> {
    pub fn init(c: &VisionConfig, device: &B::Device) -> Self {
        let norm = || {
            LayerNormConfig::new(c.d_model)
                .with_epsilon(c.layer_norm_eps)
                .init(device)
        };
        let lin = |d_in, d_out| LinearConfig::new(d_in, d_out).init(device);
        let patch_dim = c.num_channels * c.patch_size * c.patch_size;
        Self {
            patch_embedding: LinearConfig::new(patch_dim, c.d_model)
                .with_bias(c.patch_bias)
                .init(device),
            class_embedding: c.class_token.then(|| {
                Param::from_tensor(Tensor::random(
                    [c.d_model],
                    burn::tensor::Distribution::Normal(0.0, 0.02),
                    device,
                ))
            }),
            position_embedding: Param::from_tensor(Tensor::random(
                [c.n_positions(), c.d_model],
                burn::tensor::Distribution::Normal(0.0, 0.02),
                device,
            )),
            pre_layernorm: c.pre_norm.then(norm),
            layers: (0..c.n_layers)
                .map(|_| VisionLayer {
                    layer_norm1: norm(),
                    self_attn: VisionAttention {
                        q_proj: lin(c.d_model, c.d_model),
                        k_proj: lin(c.d_model, c.d_model),
                        v_proj: lin(c.d_model, c.d_model),
                        out_proj: lin(c.d_model, c.d_model),
                        n_heads: c.n_heads,
                    },
                    layer_norm2: norm(),
                    mlp: VisionMlp {
                        fc1: lin(c.d_model, c.d_ff),
                        fc2: lin(c.d_ff, c.d_model),
                        activation: c.activation,
                    },
                })
                .collect(),
            post_layernorm: norm(),
            patch_size: c.patch_size,
        }
    }

    /// Hidden states `[batch, n_positions, d_model]` at each index of `layers` (0 = embeddings
    /// after the pre-norm, i = output of block i), as HF's `output_hidden_states`. Blocks after
    /// the deepest requested index are not run.
    pub fn hidden_states(&self, pixels: Tensor<B, 4>, layers: &[usize]) -> Vec<Tensor<B, 3>> {
        let [batch, channels, height, width] = pixels.dims();
        let p = self.patch_size;
        let (gh, gw) = (height / p, width / p);
        let patches = pixels
            .reshape([batch, channels, gh, p, gw, p])
            .permute([0, 2, 4, 1, 3, 5])
            .reshape([batch, gh * gw, channels * p * p]);
        // [batch, n_patches, C·p·p], each patch flattened in the conv weight's (C, p, p) order
        let mut x = self.patch_embedding.forward(patches);
        let d_model = x.dims()[2];
        if let Some(cls) = &self.class_embedding {
            let cls = cls
                .val()
                .reshape([1, 1, d_model])
                .expand([batch, 1, d_model]);
            x = Tensor::cat(vec![cls, x], 1);
            // [batch, 1 + n_patches, d_model]
        }
        x = x + self.position_embedding.val().unsqueeze::<3>();
        if let Some(norm) = &self.pre_layernorm {
            x = norm.forward(x);
        }
        let deepest = layers.iter().copied().max().unwrap_or(0);
        let mut states = vec![x.clone()];
        for layer in self.layers.iter().take(deepest) {
            x = layer.forward(x);
            states.push(x.clone());
        }
        layers.iter().map(|&i| states[i].clone()).collect()
    }
}
