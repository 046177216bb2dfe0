//! LLaVA's multimodal projector: `linear_2(act(linear_1(features)))`
//! (HF `modeling_llava.py` `LlavaMultiModalProjector`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::activation::Activation;

#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    pub linear_1: Linear<B>,
    pub linear_2: Linear<B>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> Projector<B> {
    /// `d_in` = vision width × number of feature layers, `d_out` = decoder width.
    pub fn init(
        d_in: usize,
        d_out: usize,
        bias: bool,
        activation: Activation,
        device: &B::Device,
    ) -> Self {
        Self {
            linear_1: LinearConfig::new(d_in, d_out).with_bias(bias).init(device),
            linear_2: LinearConfig::new(d_out, d_out).with_bias(bias).init(device),
            activation,
        }
    }

    /// `[batch, n_tokens, d_in]` → `[batch, n_tokens, d_out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        self.linear_2
            .forward(self.activation.forward(self.linear_1.forward(x)))
    }
}
