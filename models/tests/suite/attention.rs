//! The blocked causal attention equals the dense reference (f32, 1e-5) in forward and in the
//! gradients of q, k and v: through its own backward op (registered `Autodiff<B>`) and through
//! plain autodiff of the blocked ops (unregistered `Autodiff<B, BalancedCheckpointing>`), with
//! left padding, shared-prefix answer segments, grouped-query heads, a KV-cache offset and block
//! sizes that put seams inside every segment. The host kernel (`host_attention`, what ndarray
//! and flex train with) is held to the same references, directly and through its registration.

use crate::common;

use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{
    backend::{AutodiffBackend, Backend},
    Distribution, Tensor, TensorData,
};
use common::B;
use firempo_models::causal_attention::{dense_attention, AttentionInput, QUERY_BLOCK};
use firempo_models::host_attention::{host_backward, host_forward};
use firempo_models::mask::{attention_bias, RowLayout};
use firempo_models::{
    causal_attention_blocked, fused_attention_registered, register_fused_attention,
    register_host_attention,
};

const TOL: f32 = 1e-5;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;

/// Two rows over `kv_len` keys: row 0 left-padded by 3 with a prefix and two answers of 3 tokens,
/// row 1 unpadded with one answer of 4 tokens.
fn rows(kv_len: usize) -> Vec<RowLayout> {
    let mut seg0 = vec![0u32; kv_len];
    for (i, s) in seg0.iter_mut().enumerate().skip(kv_len - 6) {
        *s = if i < kv_len - 3 { 1 } else { 2 };
    }
    let mut seg1 = vec![0u32; kv_len];
    for s in seg1.iter_mut().skip(kv_len - 4) {
        *s = 1;
    }
    let mut valid0 = vec![true; kv_len];
    valid0[..3].iter_mut().for_each(|v| *v = false);
    vec![
        RowLayout {
            key_valid: valid0,
            key_segment: seg0,
        },
        RowLayout {
            key_valid: vec![true; kv_len],
            key_segment: seg1,
        },
    ]
}

/// Random q `[2, HEADS, q_len, HEAD_DIM]`, k/v `[2, KV_HEADS, past + q_len, HEAD_DIM]` and the
/// mask bias for queries at `past..past + q_len`, as host data.
fn case(past: usize, q_len: usize) -> [TensorData; 4] {
    let device = Default::default();
    let kv_len = past + q_len;
    let normal = |shape: [usize; 4]| {
        Tensor::<B, 4>::random(shape, Distribution::Normal(0.0, 1.5), &device).into_data()
    };
    [
        normal([2, HEADS, q_len, HEAD_DIM]),
        normal([2, KV_HEADS, kv_len, HEAD_DIM]),
        normal([2, KV_HEADS, kv_len, HEAD_DIM]),
        attention_bias::<B>(&rows(kv_len), past, q_len, &device).into_data(),
    ]
}

/// Output and (dq, dk, dv) of `Σ out ∘ w` for one attention implementation on backend `A`.
fn run<A: AutodiffBackend>(
    data: &[TensorData; 4],
    weight: &TensorData,
    attend: impl Fn(AttentionInput<A>) -> Tensor<A, 4>,
) -> [Vec<f32>; 4] {
    let device = Default::default();
    let t = |d: &TensorData| Tensor::<A, 4>::from_data(d.clone(), &device);
    let (q, k, v) = (
        t(&data[0]).require_grad(),
        t(&data[1]).require_grad(),
        t(&data[2]).require_grad(),
    );
    let out = attend(AttentionInput {
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        bias: t(&data[3]),
    });
    let grads = (out.clone() * t(weight)).sum().backward();
    let host = |x: Tensor<A::InnerBackend, 4>| x.into_data().convert::<f32>().to_vec().unwrap();
    [
        host(out.inner()),
        host(q.grad(&grads).unwrap()),
        host(k.grad(&grads).unwrap()),
        host(v.grad(&grads).unwrap()),
    ]
}

fn assert_close(name: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{name}: length");
    let worst = got
        .iter()
        .zip(want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst <= TOL, "{name}: max |blocked - dense| = {worst:e}");
    assert!(
        want.iter().any(|x| x.abs() > 1e-2),
        "{name}: degenerate case"
    );
}

/// Output and (dq, dk, dv) of the host kernel called directly on `B` (the output gradient of
/// `Σ out ∘ w` is `w`).
fn run_host(data: &[TensorData; 4], weight: &TensorData, block: usize) -> [Vec<f32>; 4] {
    run_host_on::<B>(data, weight, block)
}

fn run_host_on<Bk: Backend>(
    data: &[TensorData; 4],
    weight: &TensorData,
    block: usize,
) -> [Vec<f32>; 4] {
    let (out, lse) = host_forward(input_on::<Bk>(data), block);
    let weight = Tensor::<Bk, 4>::from_data(weight.clone(), &Default::default());
    let (dq, dk, dv) = host_backward(input_on(data), out.clone(), lse, weight, block);
    [values(out), values(dq), values(dk), values(dv)]
}

/// Case `data` (q, k, v, bias) as inputs on backend `Bk`.
fn input_on<Bk: Backend>(data: &[TensorData; 4]) -> AttentionInput<Bk> {
    let t = |d: &TensorData| Tensor::<Bk, 4>::from_data(d.clone(), &Default::default());
    AttentionInput {
        q: t(&data[0]),
        k: t(&data[1]),
        v: t(&data[2]),
        bias: t(&data[3]),
    }
}

fn values<Bk: Backend>(x: Tensor<Bk, 4>) -> Vec<f32> {
    x.into_data().convert::<f32>().to_vec().unwrap()
}

fn check(past: usize, q_len: usize, blocks: &[usize]) {
    register_fused_attention::<B>();
    assert!(fused_attention_registered::<Autodiff<B>>());
    assert!(!fused_attention_registered::<
        Autodiff<B, BalancedCheckpointing>,
    >());
    let data = case(past, q_len);
    let weight = Tensor::<B, 4>::random(
        [2, HEADS, q_len, HEAD_DIM],
        Distribution::Normal(0.0, 1.0),
        &Default::default(),
    )
    .into_data();
    let dense = run::<Autodiff<B>>(&data, &weight, dense_attention);
    for &block in blocks {
        let fused = run::<Autodiff<B>>(&data, &weight, |x| causal_attention_blocked(x, block));
        let plain = run::<Autodiff<B, BalancedCheckpointing>>(&data, &weight, |x| {
            causal_attention_blocked(x, block)
        });
        let host = run_host(&data, &weight, block);
        for (i, name) in ["out", "dq", "dk", "dv"].iter().enumerate() {
            assert_close(
                &format!("host kernel, block {block}, past {past}: {name}"),
                &host[i],
                &dense[i],
            );
            assert_close(
                &format!("fused op, block {block}, past {past}: {name}"),
                &fused[i],
                &dense[i],
            );
            assert_close(
                &format!("autodiff of blocks, block {block}, past {past}: {name}"),
                &plain[i],
                &dense[i],
            );
        }
    }
}

#[test]
fn blocked_equals_dense_on_a_packed_padded_batch() {
    check(0, 19, &[1, 4, 7, QUERY_BLOCK]);
}

#[test]
fn blocked_equals_dense_after_a_kv_cache() {
    // Queries 11..19 over 19 keys, as a chunk after 11 cached positions.
    check(11, 8, &[3, QUERY_BLOCK]);
    // One decoding step.
    check(18, 1, &[QUERY_BLOCK]);
}

#[test]
fn inference_backend_runs_the_blocked_forward() {
    let data = case(5, 9);
    assert_close(
        "inference forward",
        &values(causal_attention_blocked(input_on::<B>(&data), 2)),
        &values(dense_attention(input_on::<B>(&data))),
    );
}

/// A backend type no other test registers host attention for, so its registration cannot race
/// the others'.
type Host = NdArray<f32, i32>;

#[test]
fn registered_host_backend_trains_and_infers_through_the_host_kernel() {
    crate::common::int64_device_defaults();
    register_host_attention::<Host>();
    assert!(fused_attention_registered::<Autodiff<Host>>());
    assert!(fused_attention_registered::<Host>());
    let device = Default::default();
    let data = case(5, 9);
    let weight = Tensor::<Host, 4>::random(
        [2, HEADS, 9, HEAD_DIM],
        Distribution::Normal(0.0, 1.0),
        &device,
    )
    .into_data();
    let block = 4;
    let via_op = run::<Autodiff<Host>>(&data, &weight, |x| causal_attention_blocked(x, block));
    let dense = run::<Autodiff<Host>>(&data, &weight, dense_attention);
    let direct = run_host_on::<Host>(&data, &weight, block);
    let inferred = causal_attention_blocked(input_on::<Host>(&data), block);
    // Bit-identical to the direct calls: the registered op is the host kernel (the tensor
    // kernel sums in another order), and it still equals the dense reference.
    for (i, name) in ["out", "dq", "dk", "dv"].into_iter().enumerate() {
        assert_eq!(via_op[i], direct[i], "{name}: registered op vs host kernel");
        assert_close(name, &via_op[i], &dense[i]);
    }
    assert_eq!(values(inferred), via_op[0], "inference on the host backend");
    let tensor_kernel =
        causal_attention_blocked::<Autodiff<Host, BalancedCheckpointing>>(input_on(&data), block);
    assert_ne!(
        values(tensor_kernel.inner()),
        via_op[0],
        "the tensor kernel rounds differently: the comparison above can tell them apart"
    );
}
