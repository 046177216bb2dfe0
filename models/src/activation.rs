//! Activation functions named as in HF `ACT2FN` (`transformers/activations.py`).

use burn::tensor::{activation, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

/// The activations LLaVA-family checkpoints use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Activation {
    /// Exact GELU with erf (`gelu`).
    Gelu,
    /// Tanh approximation (`gelu_pytorch_tanh`, `gelu_new`; SigLIP).
    GeluTanh,
    /// `x · σ(1.702 x)` (`quick_gelu`; OpenAI CLIP).
    QuickGelu,
    /// `x · σ(x)` (`silu`; LLaMA SwiGLU).
    Silu,
}

impl Activation {
    /// Parses an HF `hidden_act` string.
    pub fn from_hf(name: &str) -> Option<Self> {
        match name {
            "gelu" => Some(Self::Gelu),
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Some(Self::GeluTanh),
            "quick_gelu" => Some(Self::QuickGelu),
            "silu" | "swish" => Some(Self::Silu),
            _ => None,
        }
    }

    /// Applies the activation element-wise.
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Self::Gelu => activation::gelu(x),
            Self::GeluTanh => activation::gelu_approximate(x),
            Self::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Self::Silu => activation::silu(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn closed_forms_at_one() {
        let x = Tensor::<NdArray<f32>, 1>::from_floats([1.0], &Default::default());
        let at = |a: Activation| a.forward(x.clone()).into_scalar() as f64;
        let sig = |z: f64| 1.0 / (1.0 + (-z).exp());
        assert!((at(Activation::Silu) - sig(1.0)).abs() < 1e-6);
        assert!((at(Activation::QuickGelu) - sig(1.702)).abs() < 1e-6);
        assert!((at(Activation::Gelu) - 0.841_344_746_068_542_9).abs() < 1e-5);
        assert!((at(Activation::GeluTanh) - 0.841_191_990_607_477_2).abs() < 1e-6);
        assert_eq!(
            Activation::from_hf("gelu_pytorch_tanh"),
            Some(Activation::GeluTanh)
        );
        assert_eq!(Activation::from_hf("relu6"), None);
    }
}
