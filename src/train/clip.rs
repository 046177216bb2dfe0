//! Gradient clipping by the global L2 norm over all trainable parameters (as
//! `torch.nn.utils.clip_grad_norm_`), which burn's optimizers (per-tensor clipping) do not offer.

use burn::module::{AutodiffModule, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};

/// Scales all gradients by `min(1, max_norm / ‖g‖)`; returns the gradients and the norm before
/// clipping (always computed, since it is logged). `max_norm = None` only measures.
pub fn clip_grad_norm<B: AutodiffBackend, M: AutodiffModule<B>>(
    module: &M,
    mut grads: GradientsParams,
    max_norm: Option<f64>,
) -> (GradientsParams, f64) {
    let mut measure = SquaredNorm::<B> {
        grads: &grads,
        total: None,
    };
    module.visit(&mut measure);
    let norm = measure
        .total
        .map(|total| total.into_scalar().elem::<f64>().sqrt())
        .unwrap_or(0.0);
    if let Some(max_norm) = max_norm {
        if norm.is_finite() && norm > max_norm {
            let mut scale = Scale::<B> {
                grads: &mut grads,
                factor: max_norm / (norm + 1e-6),
                _backend: std::marker::PhantomData,
            };
            module.visit(&mut scale);
        }
    }
    (grads, norm)
}

struct SquaredNorm<'a, B: AutodiffBackend> {
    grads: &'a GradientsParams,
    total: Option<Tensor<B::InnerBackend, 1>>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for SquaredNorm<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.get::<B::InnerBackend, D>(param.id) {
            let squares = grad.powi_scalar(2).sum();
            self.total = Some(match self.total.take() {
                Some(total) => total + squares,
                None => squares,
            });
        }
    }
}

struct Scale<'a, B: AutodiffBackend> {
    grads: &'a mut GradientsParams,
    factor: f64,
    _backend: std::marker::PhantomData<B>,
}

impl<B: AutodiffBackend> ModuleVisitor<B> for Scale<'_, B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = self.grads.remove::<B::InnerBackend, D>(param.id) {
            self.grads.register(param.id, grad.mul_scalar(self.factor));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::module::Module;
    use burn::tensor::backend::Backend;

    #[derive(Module, Debug)]
    struct Pair<B: Backend> {
        a: Param<Tensor<B, 1>>,
        b: Param<Tensor<B, 1>>,
    }

    type B = Autodiff<NdArray<f64>>;

    fn grads_of_3a_plus_4b() -> (Pair<B>, GradientsParams) {
        let device = Default::default();
        let pair = Pair {
            a: Param::from_tensor(Tensor::<B, 1>::from_floats([1.0], &device)),
            b: Param::from_tensor(Tensor::<B, 1>::from_floats([2.0], &device)),
        };
        let loss = pair.a.val().mul_scalar(3.0) + pair.b.val().mul_scalar(4.0);
        let grads = GradientsParams::from_grads(loss.backward(), &pair);
        (pair, grads)
    }

    fn value(grads: &GradientsParams, param: &Param<Tensor<B, 1>>) -> f64 {
        grads
            .get::<NdArray<f64>, 1>(param.id)
            .unwrap()
            .into_scalar()
    }

    #[test]
    fn clips_to_the_global_norm() {
        let (pair, grads) = grads_of_3a_plus_4b();
        let (clipped, norm) = clip_grad_norm(&pair, grads, Some(1.0));
        assert!((norm - 5.0).abs() < 1e-12);
        assert!((value(&clipped, &pair.a) - 0.6).abs() < 1e-6);
        assert!((value(&clipped, &pair.b) - 0.8).abs() < 1e-6);
    }

    #[test]
    fn leaves_small_gradients_alone() {
        let (pair, grads) = grads_of_3a_plus_4b();
        let (kept, norm) = clip_grad_norm(&pair, grads, Some(10.0));
        assert!((norm - 5.0).abs() < 1e-12);
        assert_eq!(value(&kept, &pair.a), 3.0);
        assert_eq!(value(&kept, &pair.b), 4.0);
    }
}
