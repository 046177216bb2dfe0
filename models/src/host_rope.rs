//! [`crate::rope::apply_rope`] as one op on the CPU backends.
//!
//! In tensor ops the rotation is six passes forward (two narrows of a permuted view, a negation,
//! a `cat`, two products and a sum, each a fresh buffer) and as many backward, for q and k of every
//! layer: 7 % of a LoRA alignment step at 1 k tokens on ndarray. A backend registered with
//! [`register_host_rope`] rotates the host f32 data in one pass and, on `Autodiff<I, C>`, runs it
//! as one autodiff op whose backward is the inverse rotation (the transpose of a rotation):
//! `dx[j] = dy[j] cos[j] + dy[j + h] sin[j + h]` for `j < h = head_dim / 2`,
//! `dx[j] = dy[j] cos[j] − dy[j − h] sin[j − h]` above. The tables are constants (built from
//! positions). Other backends, dtypes and table shapes keep the tensor ops.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::Autodiff;
use burn::tensor::{backend::Backend, ops::FloatTensor, DType, Tensor};

use crate::host_math::wide_fn;
use crate::host_tensor::{float, host_tensor, host_vec, primitive};
use crate::kernel_registry::{register, registered};
use crate::rope::RopeTables;

type RopeFn<B> = fn(Tensor<B, 4>, &RopeTables<B>) -> Tensor<B, 4>;

/// Makes [`crate::rope::apply_rope`] on `Autodiff<I>` and on `I` (inference) run on the host
/// (see the module doc). For backends whose tensors live in host memory (ndarray, flex);
/// idempotent.
pub fn register_host_rope<I: Backend>() {
    register_host_rope_with::<I, NoCheckpointing>();
}

/// [`register_host_rope`] for `Autodiff<I, C>` with checkpoint strategy `C`.
pub fn register_host_rope_with<I: Backend, C: CheckpointStrategy>() {
    register::<RopeFn<Autodiff<I, C>>>(rope_op::<I, C>);
    register::<RopeFn<I>>(rope_host::<I>);
}

/// Whether [`crate::rope::apply_rope`] on `B` runs on the host.
pub fn host_rope_registered<B: Backend>() -> bool {
    registered::<RopeFn<B>>().is_some()
}

/// The host rotation for `x` `[batch, heads, seq_len, head_dim]` with these tables, where
/// registered and applicable: f32, an even `head_dim`, tables `[1 or batch, 1 or heads,
/// seq_len, head_dim]`.
pub(crate) fn host_rope<B: Backend>(x: &Tensor<B, 4>, tables: &RopeTables<B>) -> Option<RopeFn<B>> {
    let [b, h, s, d] = x.dims();
    let [tb, th, ts, td] = tables.cos.dims();
    let fits = x.dtype() == DType::F32
        && tables.cos.dtype() == DType::F32
        && tables.sin.dims() == tables.cos.dims()
        && d % 2 == 0
        && (tb == 1 || tb == b)
        && (th == 1 || th == h)
        && (ts, td) == (s, d);
    fits.then(registered::<RopeFn<B>>).flatten()
}

/// Which way [`rotate`] turns: the embedding, or its transpose (the gradient).
#[derive(Clone, Copy)]
enum Direction {
    Forward,
    Transpose,
}

wide_fn! {
    /// Rotates every `head_dim` row of `x` (`[batch, heads, seq_len, head_dim]`, row-major) with
    /// the tables' row of the same (batch, head, position), broadcast where the tables have size 1.
    fn rotate(
        x: &[f32],
        dims: [usize; 4],
        cos: &[f32],
        sin: &[f32],
        table_dims: [usize; 4],
        dir: Direction,
    ) -> Vec<f32> {
        let [b, h, s, d] = dims;
        let [tb, th, _, _] = table_dims;
        let half = d / 2;
        let mut y = vec![0.0; x.len()];
        for bi in 0..b {
            for hi in 0..h {
                for si in 0..s {
                    let row = ((bi * h + hi) * s + si) * d;
                    let t = (((bi % tb) * th + hi % th) * s + si) * d;
                    let (x1, x2) = x[row..row + d].split_at(half);
                    let (y1, y2) = y[row..row + d].split_at_mut(half);
                    let (c1, c2) = cos[t..t + d].split_at(half);
                    let (s1, s2) = sin[t..t + d].split_at(half);
                    // y = x cos + rotate_half(x) sin, rotate_half(x) = (−x2, x1); its transpose
                    // turns the other way.
                    let (sin_1, sin_2, sign) = match dir {
                        Direction::Forward => (s1, s2, 1.0),
                        Direction::Transpose => (s2, s1, -1.0),
                    };
                    for j in 0..half {
                        y1[j] = x1[j] * c1[j] - sign * x2[j] * sin_1[j];
                        y2[j] = x2[j] * c2[j] + sign * x1[j] * sin_2[j];
                    }
                }
            }
        }
        y
    }
}

/// `x` rotated by `tables` in `dir`, on the host.
fn rotate_tensor<B: Backend>(
    x: Tensor<B, 4>,
    tables: &RopeTables<B>,
    dir: Direction,
) -> Tensor<B, 4> {
    let (dims, device) = (x.dims(), x.device());
    let table_dims = tables.cos.dims();
    let (cos, sin) = (host_vec(tables.cos.clone()), host_vec(tables.sin.clone()));
    host_tensor(
        rotate(&host_vec(x), dims, &cos, &sin, table_dims, dir),
        dims,
        &device,
    )
}

fn rope_host<B: Backend>(x: Tensor<B, 4>, tables: &RopeTables<B>) -> Tensor<B, 4> {
    rotate_tensor(x, tables, Direction::Forward)
}

/// Backward step of [`rope_op`]; state: the tables.
#[derive(Debug)]
struct RopeBackward;

impl<I: Backend> Backward<I, 1> for RopeBackward {
    type State = (FloatTensor<I>, FloatTensor<I>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let [node] = ops.parents;
        let dy = float::<I, 4>(grads.consume::<I>(&ops.node));
        let (cos, sin) = ops.state;
        let tables = RopeTables {
            cos: float(cos),
            sin: float(sin),
        };
        if let Some(node) = node {
            let dx = rotate_tensor(dy, &tables, Direction::Transpose);
            grads.register::<I>(node.id, primitive(dx));
        }
    }
}

/// [`rope_host`] as one autodiff op on `Autodiff<I, C>`; the tables are constants.
fn rope_op<I: Backend, C: CheckpointStrategy>(
    x: Tensor<Autodiff<I, C>, 4>,
    tables: &RopeTables<Autodiff<I, C>>,
) -> Tensor<Autodiff<I, C>, 4> {
    let x = primitive(x);
    let inner = RopeTables::<I> {
        cos: tables.cos.clone().inner(),
        sin: tables.sin.clone().inner(),
    };
    let rotated = |x: FloatTensor<I>| primitive(rope_host::<I>(float(x), &inner));
    let prep = RopeBackward
        .prepare::<C>([x.node.clone()])
        .compute_bound()
        .stateful();
    float(match prep {
        OpsKind::Tracked(prep) => {
            let out = rotated(x.primitive);
            let state = (primitive(inner.cos.clone()), primitive(inner.sin.clone()));
            prep.finish(state, out)
        }
        OpsKind::UnTracked(prep) => prep.finish(rotated(x.primitive)),
    })
}
