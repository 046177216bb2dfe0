//! LoRA dropout: burn's `Dropout` on an unregistered backend, the host-drawn masks of
//! `register_host_dropout` on a registered one. Both must keep each element with probability
//! 1 − p, scale kept ones by 1 / (1 − p), pass gradients through the same mask, and do nothing
//! without autodiff or at p = 0. (Same seed → same mask is checked end to end by the root
//! package's determinism and resume tests: the suite's threads share burn's RNG.)

use burn::backend::{Autodiff, NdArray};
use burn::nn::DropoutConfig;
use burn::tensor::{backend::Backend, Distribution, Tensor};
use firempo_models::{
    host_dropout_registered, lora_dropout, register_host_dropout, seed_host_dropout,
};

/// A backend type only this module registers (the attention tests register `NdArray<f32, i32>`).
type Registered = NdArray<f32, i16>;
/// A backend type nothing registers host dropout for.
type Plain = NdArray<f32, i8>;

const P: f64 = 0.25;
const N: usize = 1 << 16;

/// Drops out a `[4, N / 4]` tensor of positive values on `B`; returns the inputs, the outputs
/// and the gradient of the outputs' sum with respect to the inputs.
fn dropout_and_grad<B: burn::tensor::backend::AutodiffBackend>() -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let device = Default::default();
    let x =
        Tensor::<B, 2>::random([4, N / 4], Distribution::Uniform(1.0, 2.0), &device).require_grad();
    let y = lora_dropout(&DropoutConfig::new(P).init(), x.clone());
    let grads = y.clone().sum().backward();
    let grad = x.grad(&grads).unwrap();
    let host = |d: burn::tensor::TensorData| d.convert::<f32>().to_vec::<f32>().unwrap();
    (
        host(x.inner().into_data()),
        host(y.inner().into_data()),
        host(grad.into_data()),
    )
}

/// Every output is 0 or exactly `x / (1 − p)`, its gradient is the mask, and the kept fraction
/// is within 4.5 standard deviations of 1 − p.
fn assert_dropout(name: &str, (x, y, grad): (Vec<f32>, Vec<f32>, Vec<f32>)) {
    let scale = (1.0 / (1.0 - P)) as f32;
    let mut kept = 0;
    for i in 0..N {
        if y[i] == 0.0 {
            assert_eq!(
                grad[i], 0.0,
                "{name}: dropped element {i} has gradient {}",
                grad[i]
            );
        } else {
            kept += 1;
            assert_eq!(y[i], x[i] * scale, "{name}: element {i}");
            assert_eq!(grad[i], scale, "{name}: gradient of kept element {i}");
        }
    }
    let fraction = kept as f64 / N as f64;
    let tolerance = 4.5 * (P * (1.0 - P) / N as f64).sqrt();
    assert!(
        (fraction - (1.0 - P)).abs() < tolerance,
        "{name}: kept {fraction}, expected {} ± {tolerance}",
        1.0 - P
    );
}

#[test]
fn host_masks_on_a_registered_backend_and_burns_elsewhere_drop_alike() {
    crate::common::int64_device_defaults();
    assert!(!host_dropout_registered::<Autodiff<Plain>>());
    assert_dropout("burn's Dropout", dropout_and_grad::<Autodiff<Plain>>());
    register_host_dropout::<Registered>();
    assert!(host_dropout_registered::<Autodiff<Registered>>());
    assert!(
        !host_dropout_registered::<Registered>(),
        "inference never drops out"
    );
    assert_dropout("host masks", dropout_and_grad::<Autodiff<Registered>>());
}

#[test]
fn dropout_is_the_identity_without_autodiff_or_at_zero() {
    crate::common::int64_device_defaults();
    register_host_dropout::<Registered>();
    fn check<B: Backend>(p: f64) {
        let device = Default::default();
        let x = Tensor::<B, 3>::random([2, 3, 64], Distribution::Normal(0.0, 1.0), &device);
        let y = lora_dropout(&DropoutConfig::new(p).init(), x.clone());
        assert_eq!(y.into_data(), x.into_data(), "p = {p}");
    }
    check::<Registered>(P);
    check::<Plain>(P);
    check::<Autodiff<Registered>>(0.0);
    check::<Autodiff<Plain>>(0.0);
}

/// `seed_host_dropout` gives this thread its own mask stream: the same seed repeats the masks
/// (what 2 data-parallel peers on threads need; the backend RNG is shared by the suite's threads,
/// so this test could not seed that), another seed draws others, and the draws stay dropout.
#[test]
fn a_seeded_thread_stream_repeats_its_masks() {
    crate::common::int64_device_defaults();
    register_host_dropout::<Registered>();
    let device = Default::default();
    let x = Tensor::<Autodiff<Registered>, 2>::random(
        [4, N / 4],
        Distribution::Uniform(1.0, 2.0),
        &device,
    );
    let dropout = DropoutConfig::new(P).init();
    let masks = |seed: u64| {
        seed_host_dropout(seed);
        let first = lora_dropout(&dropout, x.clone()).inner().into_data();
        let second = lora_dropout(&dropout, x.clone()).inner().into_data();
        (first, second)
    };
    let (a1, a2) = masks(7);
    let (b1, b2) = masks(7);
    assert_eq!(a1, b1, "same seed, same first mask");
    assert_eq!(a2, b2, "same seed, same second mask");
    assert_ne!(a1, a2, "the stream moves on between draws");
    assert_ne!(masks(8).0, a1, "another seed, another mask");
    let kept = a1
        .to_vec::<f32>()
        .unwrap()
        .iter()
        .filter(|&&v| v != 0.0)
        .count();
    let fraction = kept as f64 / N as f64;
    assert!((fraction - (1.0 - P)).abs() < 4.5 * (P * (1.0 - P) / N as f64).sqrt());
}
