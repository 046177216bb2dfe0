//! One vision transformer block: `x + attn(norm1(x))`, then `+ mlp(norm2(x))` (HF
//! `Qwen2VLVisionBlock` and `Qwen3VLVisionBlock`: LayerNorm and a two-layer MLP;
//! `Qwen2_5_VLVisionBlock`: RMSNorm and a SwiGLU MLP with biases).

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig, RmsNorm, RmsNormConfig};
use burn::tensor::{backend::Backend, Tensor};

use super::config::{QwenVisionConfig, QwenVlFamily};
use super::vision_attention::{SegmentLayout, VisionAttention};
use crate::activation::Activation;
use crate::rope::RopeTables;

/// Both families use eps 1e-6 for every vision norm (hard-coded in HF).
pub const VISION_NORM_EPS: f64 = 1e-6;

/// LayerNorm (Qwen2-VL) or RMSNorm (Qwen2.5-VL).
#[derive(Module, Debug)]
pub enum VisionNorm<B: Backend> {
    Layer(LayerNorm<B>),
    Rms(RmsNorm<B>),
}

impl<B: Backend> VisionNorm<B> {
    pub fn init(family: QwenVlFamily, d: usize, device: &B::Device) -> Self {
        match family {
            QwenVlFamily::Qwen2Vl | QwenVlFamily::Qwen3Vl => Self::Layer(
                LayerNormConfig::new(d)
                    .with_epsilon(VISION_NORM_EPS)
                    .init(device),
            ),
            QwenVlFamily::Qwen25Vl => Self::Rms(
                RmsNormConfig::new(d)
                    .with_epsilon(VISION_NORM_EPS)
                    .init(device),
            ),
        }
    }

    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Layer(n) => n.forward(x),
            Self::Rms(n) => n.forward(x),
        }
    }
}

/// `fc2(act(fc1(x)))` (Qwen2-VL `VisionMlp`; Qwen3-VL names them `linear_fc1`/`linear_fc2`).
#[derive(Module, Debug)]
pub struct VisionMlp<B: Backend> {
    pub fc1: Linear<B>,
    pub fc2: Linear<B>,
    #[module(skip)]
    pub activation: Activation,
}

/// `down(act(gate(x)) · up(x))` with biases (Qwen2.5-VL `Qwen2_5_VLMLP(bias=True)`).
#[derive(Module, Debug)]
pub struct VisionSwiGlu<B: Backend> {
    pub gate_proj: Linear<B>,
    pub up_proj: Linear<B>,
    pub down_proj: Linear<B>,
    #[module(skip)]
    pub activation: Activation,
}

/// One per block, never in bulk: the variants' size difference does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum VisionFeedForward<B: Backend> {
    Mlp(VisionMlp<B>),
    SwiGlu(VisionSwiGlu<B>),
}

impl<B: Backend> VisionFeedForward<B> {
    pub fn init(c: &QwenVisionConfig, device: &B::Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        match c.family {
            QwenVlFamily::Qwen2Vl | QwenVlFamily::Qwen3Vl => Self::Mlp(VisionMlp {
                fc1: lin(c.d_model, c.d_ff),
                fc2: lin(c.d_ff, c.d_model),
                activation: c.activation,
            }),
            QwenVlFamily::Qwen25Vl => Self::SwiGlu(VisionSwiGlu {
                gate_proj: lin(c.d_model, c.d_ff),
                up_proj: lin(c.d_model, c.d_ff),
                down_proj: lin(c.d_ff, c.d_model),
                activation: c.activation,
            }),
        }
    }

    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self {
            Self::Mlp(m) => m.fc2.forward(m.activation.forward(m.fc1.forward(x))),
            Self::SwiGlu(m) => {
                let gate = m.activation.forward(m.gate_proj.forward(x.clone()));
                m.down_proj.forward(gate * m.up_proj.forward(x))
            }
        }
    }
}

#[derive(Module, Debug)]
pub struct VisionBlock<B: Backend> {
    pub norm1: VisionNorm<B>,
    pub attn: VisionAttention<B>,
    pub norm2: VisionNorm<B>,
    pub mlp: VisionFeedForward<B>,
}

impl<B: Backend> VisionBlock<B> {
    pub fn init(c: &QwenVisionConfig, device: &B::Device) -> Self {
        Self {
            norm1: VisionNorm::init(c.family, c.d_model, device),
            attn: VisionAttention::init(c.d_model, c.n_heads, device),
            norm2: VisionNorm::init(c.family, c.d_model, device),
            mlp: VisionFeedForward::init(c, device),
        }
    }

    /// `x` `[n_patches, d_model]`.
    pub fn forward(
        &self,
        x: Tensor<B, 2>,
        rope: &RopeTables<B>,
        segments: &SegmentLayout<B>,
    ) -> Tensor<B, 2> {
        let x = x.clone() + self.attn.forward(self.norm1.forward(x), rope, segments);
        x.clone() + self.mlp.forward(self.norm2.forward(x))
    }
}
