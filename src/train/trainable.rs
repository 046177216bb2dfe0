//! The trained part of a model: its parameters that require gradients, in module order, with their
//! ids (the optimizer state is keyed by them).
//!
//! Checkpoints hold only these: a LoRA run's checkpoint is the adapters (megabytes), not the
//! 26 GiB base model, and a run whose vision tower is frozen does not copy the tower at every
//! checkpoint. On resume the model is built as for a fresh run (same source model and seed: the
//! run identity guarantees it) and the trained parameters are put back.

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

/// Trainable parameters flattened to 1-D (one record type for every rank), with their shapes.
pub struct Trainable<B: Backend> {
    /// The parameters, ids kept, flattened.
    pub params: Vec<Param<Tensor<B, 1>>>,
    /// Each parameter's shape, in module order.
    pub shapes: Vec<Vec<usize>>,
}

/// Collects the parameters of `model` that require gradients.
pub fn trainable_params<B: Backend, M: Module<B>>(model: &M) -> Trainable<B> {
    let mut collector = Collector {
        found: Trainable {
            params: Vec::new(),
            shapes: Vec::new(),
        },
    };
    model.visit(&mut collector);
    collector.found
}

/// The shapes of the trainable parameters of `model`, in module order.
pub fn trainable_shapes<B: Backend, M: Module<B>>(model: &M) -> Vec<Vec<usize>> {
    let mut shapes = ShapeCollector(Vec::new());
    model.visit(&mut shapes);
    shapes.0
}

/// Puts saved trainable parameters back into `model` (built as for a fresh run): the i-th
/// trainable parameter takes the i-th saved value and id. The caller checks the shapes first
/// ([`trainable_shapes`] against the saved ones).
pub fn restore_trainable<B: Backend, M: Module<B>>(model: M, saved: Vec<Param<Tensor<B, 1>>>) -> M {
    let mut restorer = Restorer {
        saved: saved.into_iter(),
    };
    model.map(&mut restorer)
}

struct Collector<B: Backend> {
    found: Trainable<B>,
}

impl<B: Backend> ModuleVisitor<B> for Collector<B> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if value.is_require_grad() {
            let shape = value.dims().to_vec();
            let flat = value.detach().reshape([shape.iter().product::<usize>()]);
            self.found.params.push(Param::initialized(param.id, flat));
            self.found.shapes.push(shape);
        }
    }
}

struct ShapeCollector(Vec<Vec<usize>>);

impl<B: Backend> ModuleVisitor<B> for ShapeCollector {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let value = param.val();
        if value.is_require_grad() {
            self.0.push(value.dims().to_vec());
        }
    }
}

struct Restorer<B: Backend> {
    saved: std::vec::IntoIter<Param<Tensor<B, 1>>>,
}

impl<B: Backend> ModuleMapper<B> for Restorer<B> {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        if !param.val().is_require_grad() {
            return param;
        }
        let Some(saved) = self.saved.next() else {
            return param;
        };
        let (_, fresh, mapper) = param.consume();
        let shape: [usize; D] = fresh.dims();
        let device = fresh.device();
        let (id, value, _): (ParamId, _, _) = saved.consume();
        let value = value
            .to_device(&device)
            .reshape(shape)
            .detach()
            .require_grad();
        Param::from_mapped_value(id, value, mapper)
    }
}
