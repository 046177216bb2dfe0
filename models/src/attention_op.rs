//! The decoder's attention entry point and its autodiff op with its own backward.
//!
//! [`causal_attention`] dispatches on the backend:
//! - a backend without autodiff (inference, the reference model of alignment) runs
//!   [`blocked_forward`] and drops the statistics (the host kernel where registered, below);
//! - an `Autodiff<I, C>` registered with [`register_fused_attention`] runs one custom op whose
//!   backward is [`blocked_backward`]: the graph keeps q, k, v, the output and the row
//!   log-sum-exp, never a `[heads, L, L]` tensor;
//! - any other autodiff backend differentiates [`blocked_forward`] op by op (exact, half the
//!   dense work, but every block's intermediates stay alive until backward).
//!
//! Backends whose tensors live in host memory (ndarray, flex) register with
//! [`register_host_attention`] instead: the same op, forward and backward run by the host
//! kernel of [`crate::host_attention`] on the f32 data, and inference on `I` runs it too.
//!
//! The binary, which names its backends, registers them once (`register_fused_attention::<Wgpu>()`,
//! [`crate::kernel_registry`] says why a registry).

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, ops::FloatTensor, Tensor};

use crate::causal_attention::{
    blocked_backward, blocked_forward, to_f32, AttentionInput, QUERY_BLOCK,
};
use crate::host_attention::{host_backward, host_forward, host_supported};
use crate::host_tensor::{float, primitive};
use crate::kernel_registry::{register, registered};

type AttentionFn<B> = fn(AttentionInput<B>, usize) -> Tensor<B, 4>;

/// Makes `Autodiff<I>` (no checkpointing) train the decoder's attention through the blocked op
/// with its own backward. Idempotent; call once per backend the program trains on.
pub fn register_fused_attention<I: Backend>() {
    register_fused_attention_with::<I, NoCheckpointing>();
}

/// [`register_fused_attention`] for `Autodiff<I, C>` with checkpoint strategy `C`
/// (e.g. `BalancedCheckpointing`).
pub fn register_fused_attention_with<I: Backend, C: CheckpointStrategy>() {
    register::<AttentionFn<Autodiff<I, C>>>(fused_attention::<I, C, false>);
}

/// [`register_fused_attention`] for a backend whose tensors live in host memory (ndarray,
/// flex): the op's forward and backward, and `I`'s own (inference) attention, run the host
/// kernel ([`crate::host_attention`]) on f32 inputs; other dtypes keep the tensor kernel.
/// On a GPU backend it would copy every input to the host: register those with
/// [`register_fused_attention`].
pub fn register_host_attention<I: Backend>() {
    register_host_attention_with::<I, NoCheckpointing>();
}

/// [`register_host_attention`] for `Autodiff<I, C>` with checkpoint strategy `C`.
pub fn register_host_attention_with<I: Backend, C: CheckpointStrategy>() {
    register::<AttentionFn<Autodiff<I, C>>>(fused_attention::<I, C, true>);
    register::<AttentionFn<I>>(host_attention::<I>);
}

/// Whether [`causal_attention`] on `B` runs the blocked op with its own backward (for tests and
/// start-up checks).
pub fn fused_attention_registered<B: Backend>() -> bool {
    registered::<AttentionFn<B>>().is_some()
}

/// Causal grouped-query attention `softmax(q kᵀ / √d + bias) v`, `[batch, n_heads, q_len,
/// head_dim]`. See [`AttentionInput`] for shapes and [`crate::causal_attention`] for the causality
/// contract on `bias`.
pub fn causal_attention<B: Backend>(input: AttentionInput<B>) -> Tensor<B, 4> {
    causal_attention_blocked(input, QUERY_BLOCK)
}

/// [`causal_attention`] with an explicit query block size (tests use small blocks to cover the
/// block seams on small shapes).
pub fn causal_attention_blocked<B: Backend>(
    input: AttentionInput<B>,
    block: usize,
) -> Tensor<B, 4> {
    let (input, cast_back) = to_f32(input);
    let out = match registered::<AttentionFn<B>>() {
        Some(f) => f(input, block),
        None => blocked_forward(input, block).0,
    };
    match cast_back {
        Some(dtype) => out.cast(dtype),
        None => out,
    }
}

/// Inference attention of a host backend: the host kernel on f32, the tensor kernel otherwise.
fn host_attention<I: Backend>(input: AttentionInput<I>, block: usize) -> Tensor<I, 4> {
    blocked_forward_on(input, block, true).0
}

/// [`blocked_forward`], or [`host_forward`] when `host` and the inputs are f32.
fn blocked_forward_on<I: Backend>(
    input: AttentionInput<I>,
    block: usize,
    host: bool,
) -> (Tensor<I, 4>, Tensor<I, 4>) {
    if host && host_supported(&input) {
        host_forward(input, block)
    } else {
        blocked_forward(input, block)
    }
}

/// Backward step of [`fused_attention`]; state: q, k, v, bias, output, log-sum-exp, block size.
/// `host`: run [`host_backward`] (f32 inputs of a host backend) instead of [`blocked_backward`].
#[derive(Debug)]
struct BlockedAttentionBackward {
    host: bool,
}

type State<I> = (
    FloatTensor<I>,
    FloatTensor<I>,
    FloatTensor<I>,
    FloatTensor<I>,
    FloatTensor<I>,
    FloatTensor<I>,
    usize,
);

impl<I: Backend> Backward<I, 3> for BlockedAttentionBackward {
    type State = State<I>;

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node_q, node_k, node_v] = ops.parents;
        let grad = grads.consume::<I>(&ops.node);
        let (q, k, v, bias, out, lse, block) = ops.state;
        let input = AttentionInput {
            q: float::<I, 4>(q),
            k: float(k),
            v: float(v),
            bias: float(bias),
        };
        let (out, lse, grad) = (float(out), float(lse), float(grad));
        let (dq, dk, dv) = if self.host && host_supported(&input) {
            host_backward(input, out, lse, grad, block)
        } else {
            blocked_backward(input, out, lse, grad, block)
        };
        for (node, g) in [(node_q, dq), (node_k, dk), (node_v, dv)] {
            if let Some(node) = node {
                grads.register::<I>(node.id, primitive(g));
            }
        }
    }
}

/// The blocked attention as one autodiff op on `Autodiff<I, C>`, computed by the host kernel
/// when `HOST` (and the inputs are f32). `bias` is treated as a constant (it is built from host
/// masks and never needs a gradient).
fn fused_attention<I: Backend, C: CheckpointStrategy, const HOST: bool>(
    input: AttentionInput<Autodiff<I, C>>,
    block: usize,
) -> Tensor<Autodiff<I, C>, 4> {
    let q = primitive(input.q);
    let k = primitive(input.k);
    let v = primitive(input.v);
    let bias = primitive(input.bias).primitive;
    let inner = AttentionInput {
        q: float::<I, 4>(q.primitive.clone()),
        k: float(k.primitive.clone()),
        v: float(v.primitive.clone()),
        bias: float(bias.clone()),
    };
    let prep = BlockedAttentionBackward { host: HOST }
        .prepare::<C>([q.node.clone(), k.node.clone(), v.node.clone()])
        .compute_bound()
        .stateful();
    let output = match prep {
        OpsKind::Tracked(prep) => {
            let (out, lse) = blocked_forward_on(inner, block, HOST);
            let out = primitive(out);
            let state = (
                q.primitive,
                k.primitive,
                v.primitive,
                bias,
                out.clone(),
                primitive(lse),
                block,
            );
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(primitive(blocked_forward_on(inner, block, HOST).0))
        }
    };
    float(output)
}
