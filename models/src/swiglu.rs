//! SwiGLU's gate `silu(gate) · up` (the decoder MLP of LLaMA, Qwen, Mistral), as one op on the
//! CPU backends.
//!
//! Written in tensor ops, the gate is five elementwise passes forward, each a fresh buffer:
//! burn's `sigmoid` alone is `exp(−log1p(exp(−x)))`, three libm calls per element, and autodiff
//! recomputes it in backward. On 1 k tokens that was a tenth of a LoRA alignment step on ndarray.
//! A backend registered with [`register_host_swiglu`] computes it on the host f32 data in one
//! pass (one vectorized `exp` per element) and, on `Autodiff<I, C>`, as one autodiff op whose
//! backward is one more pass over `gate` and `up`:
//! `∂/∂gate = dy · up · σ(g) · (1 + g · (1 − σ(g)))`, `∂/∂up = dy · g · σ(g)`.
//! Other backends (GPUs) and other dtypes keep the tensor ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::{activation, backend::Backend, ops::FloatTensor, DType, Tensor};

use crate::host_math::{sigmoid, wide_fn};
use crate::host_tensor::{float, host_tensor, host_vec, primitive};
use crate::kernel_registry::{register, registered};

type SwigluFn<B> = fn(Tensor<B, 3>, Tensor<B, 3>) -> Tensor<B, 3>;

/// Makes [`swiglu`] on `Autodiff<I>` and on `I` (inference) run on the host (see the module
/// doc). For backends whose tensors live in host memory (ndarray, flex); idempotent.
pub fn register_host_swiglu<I: Backend>() {
    register_host_swiglu_with::<I, NoCheckpointing>();
}

/// [`register_host_swiglu`] for `Autodiff<I, C>` with checkpoint strategy `C`.
pub fn register_host_swiglu_with<I: Backend, C: CheckpointStrategy>() {
    register::<SwigluFn<Autodiff<I, C>>>(swiglu_op::<I, C>);
    register::<SwigluFn<I>>(swiglu_host::<I>);
}

/// Whether [`swiglu`] on `B` runs on the host.
pub fn host_swiglu_registered<B: Backend>() -> bool {
    registered::<SwigluFn<B>>().is_some()
}

/// `silu(gate) · up`, `[batch, seq_len, d_ff]` each (other shapes broadcast in tensor ops).
pub fn swiglu<B: Backend>(gate: Tensor<B, 3>, up: Tensor<B, 3>) -> Tensor<B, 3> {
    let host = (gate.dtype() == DType::F32 && up.dtype() == DType::F32 && gate.dims() == up.dims())
        .then(registered::<SwigluFn<B>>)
        .flatten();
    match host {
        Some(f) => f(gate, up),
        None => activation::silu(gate) * up,
    }
}

wide_fn! {
    /// `y ← silu(g) · y` (`y` holds `up`).
    fn gate_forward(y: &mut [f32], g: &[f32]) {
        for (y, &g) in y.iter_mut().zip(g) {
            *y *= g * sigmoid(g);
        }
    }
}

wide_fn! {
    /// `d_gate ← ∂/∂gate`, `d_up ← ∂/∂up` of `silu(g) · u` (`d_gate` holds `dy`).
    fn gate_backward(d_gate: &mut [f32], d_up: &mut [f32], g: &[f32], u: &[f32]) {
        let rows = d_gate.iter_mut().zip(d_up.iter_mut()).zip(g.iter().zip(u));
        for ((dg, du), (&g, &u)) in rows {
            let (dy, s) = (*dg, sigmoid(g));
            *du = dy * g * s;
            *dg = dy * u * s * (1.0 + g * (1.0 - s));
        }
    }
}

/// `silu(g) · u` elementwise on the host.
fn swiglu_host<B: Backend>(gate: Tensor<B, 3>, up: Tensor<B, 3>) -> Tensor<B, 3> {
    let (shape, device) = (gate.dims(), gate.device());
    let g = host_vec(gate);
    let mut y = host_vec(up);
    gate_forward(&mut y, &g);
    host_tensor(y, shape, &device)
}

/// The gradients of [`swiglu_host`] for `dy`: `(∂/∂gate, ∂/∂up)`.
fn swiglu_host_backward<B: Backend>(
    gate: Tensor<B, 3>,
    up: Tensor<B, 3>,
    dy: Tensor<B, 3>,
) -> (Tensor<B, 3>, Tensor<B, 3>) {
    let (shape, device) = (gate.dims(), gate.device());
    let g = host_vec(gate);
    let u = host_vec(up);
    let mut d_gate = host_vec(dy);
    let mut d_up = vec![0.0; d_gate.len()];
    gate_backward(&mut d_gate, &mut d_up, &g, &u);
    (
        host_tensor(d_gate, shape, &device),
        host_tensor(d_up, shape, &device),
    )
}

/// Backward step of [`swiglu_op`]; state: gate, up.
#[derive(Debug)]
struct SwigluBackward;

impl<I: Backend> Backward<I, 2> for SwigluBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_gate, node_up] = ops.parents;
        let dy = float::<I, 3>(grads.consume::<I>(&ops.node));
        let (gate, up) = ops.state;
        let (d_gate, d_up) = swiglu_host_backward(float(gate), float(up), dy);
        for (node, g) in [(node_gate, d_gate), (node_up, d_up)] {
            if let Some(node) = node {
                grads.register::<I>(node.id, primitive(g));
            }
        }
    }
}

/// [`swiglu_host`] as one autodiff op on `Autodiff<I, C>`.
fn swiglu_op<I: Backend, C: CheckpointStrategy>(
    gate: Tensor<Autodiff<I, C>, 3>,
    up: Tensor<Autodiff<I, C>, 3>,
) -> Tensor<Autodiff<I, C>, 3> {
    let (gate, up) = (primitive(gate), primitive(up));
    let inner = |g: &FloatTensor<I>, u: &FloatTensor<I>| {
        primitive(swiglu_host::<I>(float(g.clone()), float(u.clone())))
    };
    let prep = SwigluBackward
        .prepare::<C>([gate.node.clone(), up.node.clone()])
        .compute_bound()
        .stateful();
    float(match prep {
        OpsKind::Tracked(prep) => {
            let out = inner(&gate.primitive, &up.primitive);
            prep.finish((gate.primitive, up.primitive), out)
        }
        OpsKind::UnTracked(prep) => prep.finish(inner(&gate.primitive, &up.primitive)),
    })
}
