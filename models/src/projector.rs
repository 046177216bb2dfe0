//! LLaVA's multimodal projector: `linear_2(act(linear_1(features)))` (HF `modeling_llava.py`
//! `LlavaMultiModalProjector`, original LLaVA `mlp2x_gelu`), or the single `linear_1(features)` of
//! LLaVA's `linear` projector (`llava/model/multimodal_projector/builder.py`).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::{backend::Backend, Tensor};

use crate::activation::Activation;
use crate::config::ProjectorKind;

#[derive(Module, Debug)]
pub struct Projector<B: Backend> {
    pub linear_1: Linear<B>,
    /// `None` for the single-layer `linear` projector.
    pub linear_2: Option<Linear<B>>,
    #[module(skip)]
    pub activation: Activation,
}

impl<B: Backend> Projector<B> {
    /// The two-layer projector. `d_in` = vision width × number of feature layers, `d_out` =
    /// decoder width.
    pub fn init(
        d_in: usize,
        d_out: usize,
        bias: bool,
        activation: Activation,
        device: &B::Device,
    ) -> Self {
        Self::init_kind(ProjectorKind::Mlp2x, d_in, d_out, bias, activation, device)
    }

    /// A projector of the given kind (`activation` is unused by [`ProjectorKind::Linear`]).
    pub fn init_kind(
        kind: ProjectorKind,
        d_in: usize,
        d_out: usize,
        bias: bool,
        activation: Activation,
        device: &B::Device,
    ) -> Self {
        let linear_2 = match kind {
            ProjectorKind::Mlp2x => {
                Some(LinearConfig::new(d_out, d_out).with_bias(bias).init(device))
            }
            ProjectorKind::Linear => None,
        };
        Self {
            linear_1: LinearConfig::new(d_in, d_out).with_bias(bias).init(device),
            linear_2,
            activation,
        }
    }

    /// `[batch, n_tokens, d_in]` → `[batch, n_tokens, d_out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let x = self.linear_1.forward(x);
        match &self.linear_2 {
            Some(linear_2) => linear_2.forward(self.activation.forward(x)),
            None => x,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn linear_projector_is_one_affine_map() {
        let device = Default::default();
        let p = Projector::<NdArray>::init_kind(
            ProjectorKind::Linear,
            4,
            3,
            true,
            Activation::Gelu,
            &device,
        );
        assert!(p.linear_2.is_none());
        let x =
            Tensor::<NdArray, 3>::random([1, 2, 4], burn::tensor::Distribution::Default, &device);
        let want = p.linear_1.forward(x.clone());
        let got = p.forward(x);
        assert_eq!(got.dims(), [1, 2, 3]);
        assert_eq!(got.into_data(), want.into_data());
    }
}
