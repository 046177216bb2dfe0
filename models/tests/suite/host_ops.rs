//! The host ops of the CPU backends against the same formulas in burn tensor ops,
//! in values and gradients, with and without autodiff, on permuted inputs: the MLP's SwiGLU gate
//! `silu(gate) · up` (`register_host_swiglu`, also at arguments where `exp` would overflow or
//! underflow) and the rotary embedding (`register_host_rope`, tables per batch row and shared).

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{activation, backend::Backend, Distribution, Int, Tensor, TensorData};
use firempo_models::{
    apply_rope, host_rope_registered, host_swiglu_registered, register_host_rope,
    register_host_swiglu, swiglu, Rope, RopeTables,
};

/// Registered here; the attention module registers its host kernel on the same type, which
/// neither module's results depend on.
type Host = NdArray<f32, i32>;
type Plain = NdArray<f32, i8>;

const SHAPE: [usize; 3] = [2, 7, 13];

/// `gate` `[2, 7, 13]` from N(0, 3²) with extremes at its start (where `e^(−x)` overflows f32
/// and the gradient's `g · (1 − σ(g))` must not become `∞ · 0`), `up` and a weight for `dy`.
fn case() -> [TensorData; 3] {
    let device = Default::default();
    let random =
        |sd| Tensor::<Plain, 3>::random(SHAPE, Distribution::Normal(0.0, sd), &device).into_data();
    let mut gate = random(3.0).to_vec::<f32>().unwrap();
    gate[..8].copy_from_slice(&[-120.0, -88.0, -40.0, -1e-3, 0.0, 1e-3, 40.0, 120.0]);
    [TensorData::new(gate, SHAPE), random(1.0), random(1.0)]
}

fn tensor<B: Backend, const D: usize>(data: &TensorData) -> Tensor<B, D> {
    Tensor::from_data(data.clone(), &Default::default())
}

fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().to_vec().unwrap()
}

/// `(y, ∂L/∂gate, ∂L/∂up)` of `L = Σ w · f(gate, up)` on `Autodiff<Host>`.
fn with_grads(
    [gate, up, w]: &[TensorData; 3],
    f: impl Fn(Tensor<Autodiff<Host>, 3>, Tensor<Autodiff<Host>, 3>) -> Tensor<Autodiff<Host>, 3>,
) -> [Vec<f32>; 3] {
    let gate = tensor::<Autodiff<Host>, 3>(gate).require_grad();
    let up = tensor::<Autodiff<Host>, 3>(up).require_grad();
    let y = f(gate.clone(), up.clone());
    let grads = (y.clone() * tensor::<Autodiff<Host>, 3>(w))
        .sum()
        .backward();
    [
        values(y.inner()),
        values(gate.grad(&grads).unwrap()),
        values(up.grad(&grads).unwrap()),
    ]
}

/// Elementwise `|got − want| ≤ 2e-6 · (1 + |want|)` (a few f32 ulp on these magnitudes; a wrong
/// or missing term of the gradient is off by O(1)).
fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 2e-6 * (1.0 + w.abs()),
            "{name}[{i}]: host {g}, tensor ops {w}"
        );
    }
}

#[test]
fn host_swiglu_matches_tensor_ops_in_values_and_gradients() {
    crate::common::int64_device_defaults();
    register_host_swiglu::<Host>();
    assert!(host_swiglu_registered::<Autodiff<Host>>());
    assert!(host_swiglu_registered::<Host>());
    assert!(!host_swiglu_registered::<Plain>());
    let data = case();
    let host = with_grads(&data, swiglu);
    let ops = with_grads(&data, |g, u| activation::silu(g) * u);
    for (name, (h, o)) in ["value", "d gate", "d up"]
        .iter()
        .zip(host.iter().zip(&ops))
    {
        assert!(h.iter().all(|x| x.is_finite()), "{name}: not finite");
        assert_close(name, h, o);
    }
    // The extremes: silu(−120) = 0 with gradient 0, silu(120) = 120 with gradient 1.
    let [gate, up, w] = data.clone().map(|d| d.to_vec::<f32>().unwrap());
    assert_eq!(host[0][0], 0.0);
    assert_eq!(host[0][7], 120.0 * up[7]);
    assert_eq!(host[1][0], 0.0);
    assert_close("d gate at 120", &host[1][7..8], &[w[7] * up[7]]);
    assert_eq!(gate[4], 0.0);
    assert_close("d gate at 0", &host[1][4..5], &[0.5 * w[4] * up[4]]);

    // Without autodiff (the reference model), the same values.
    let inferred = values(swiglu(
        tensor::<Host, 3>(&data[0]),
        tensor::<Host, 3>(&data[1]),
    ));
    assert_close("inference", &inferred, &ops[0]);
}

#[test]
fn host_swiglu_reads_permuted_inputs_in_logical_order() {
    crate::common::int64_device_defaults();
    register_host_swiglu::<Host>();
    let [gate, up, _] = case();
    // [2, 13, 7] views of the [2, 7, 13] buffers: strided, not row-major.
    let gate = tensor::<Host, 3>(&gate).swap_dims(1, 2);
    let up = tensor::<Host, 3>(&up).swap_dims(1, 2);
    let host = values(swiglu(gate.clone(), up.clone()));
    let ops = values(activation::silu(gate) * up);
    assert_close("permuted", &host, &ops);
}

/// Heads 3, positions 5, head_dim 8; `x` comes as the attention builds it, a `[batch, heads,
/// seq, head_dim]` view of a `[batch, seq, heads, head_dim]` buffer.
const ROPE_X: [usize; 4] = [2, 5, 3, 8];

/// `(y, ∂L/∂x)` of `L = Σ w · apply_rope(x, tables(positions))` on `Autodiff<B>`.
fn rope_with_grads<B: Backend>(
    x: &TensorData,
    w: &TensorData,
    positions: &TensorData,
) -> [Vec<f32>; 2] {
    let tables = tables::<Autodiff<B>>(positions);
    let x = tensor::<Autodiff<B>, 4>(x).require_grad();
    let y = apply_rope(x.clone().swap_dims(1, 2), &tables);
    let grads = (y.clone() * tensor::<Autodiff<B>, 4>(w)).sum().backward();
    [values(y.inner()), values(x.grad(&grads).unwrap())]
}

#[test]
fn host_rope_matches_tensor_ops_in_values_and_gradients() {
    crate::common::int64_device_defaults();
    register_host_rope::<Host>();
    assert!(host_rope_registered::<Autodiff<Host>>());
    assert!(host_rope_registered::<Host>());
    assert!(!host_rope_registered::<Plain>());
    let device = Default::default();
    let x = Tensor::<Plain, 4>::random(ROPE_X, Distribution::Normal(0.0, 1.0), &device);
    let [b, s, h, d] = ROPE_X;
    let w = Tensor::<Plain, 4>::random([b, h, s, d], Distribution::Normal(0.0, 1.0), &device);
    let (x, w) = (x.into_data(), w.into_data());
    // One table per batch row (packed prefixes start at other positions), and one for all.
    for positions in [
        TensorData::new(vec![0i64, 1, 2, 3, 4, 7, 8, 9, 400, 1000], [b, s]),
        TensorData::new(vec![3i64, 4, 5, 6, 7], [1, s]),
    ] {
        let host = rope_with_grads::<Host>(&x, &w, &positions);
        let ops = rope_with_grads::<Plain>(&x, &w, &positions);
        assert_close("rope value", &host[0], &ops[0]);
        assert_close("rope d x", &host[1], &ops[1]);
    }
    // Without autodiff (the reference model, generation), the same values.
    let positions = TensorData::new(vec![0i64, 1, 2, 3, 4, 7, 8, 9, 400, 1000], [b, s]);
    assert_close(
        "rope inference",
        &rope_inference::<Host>(&x, &positions),
        &rope_inference::<Plain>(&x, &positions),
    );
}

fn rope_inference<B: Backend>(x: &TensorData, positions: &TensorData) -> Vec<f32> {
    values(apply_rope(
        tensor::<B, 4>(x).swap_dims(1, 2),
        &tables::<B>(positions),
    ))
}

/// The rotary tables of integer `positions` `[batch, seq]` (θ = 10⁴).
fn tables<B: Backend>(positions: &TensorData) -> RopeTables<B> {
    let rope = Rope {
        theta: 10_000.0,
        head_dim: ROPE_X[3],
    };
    rope.tables(Tensor::<B, 2, Int>::from_data(
        positions.clone(),
        &Default::default(),
    ))
}
