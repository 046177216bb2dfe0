//! LoRA dropout, with the mask drawn on the host on CPU backends.
//!
//! burn's `Dropout` draws its Bernoulli mask through the backend's RNG. On ndarray and flex that
//! builds a sampler and runs ChaCha once per element (`TensorData::random`): 10.6 % of a LoRA
//! alignment step at 1 k tokens. A backend registered with [`register_host_dropout`] instead
//! draws one 60-bit seed per call through its own RNG (so `B::seed` still fixes every mask, and
//! a resumed run draws what the uninterrupted one drew) and expands it on the host with
//! SplitMix64, two 32-bit uniforms per output. Other backends (GPUs, whose RNG runs on the
//! device) keep burn's. Both keep an element with probability 1 − p and scale it by 1 / (1 − p),
//! as PEFT's `nn.Dropout`; the masks differ, so switching changes a run's random stream. A
//! thread seeded with [`seed_host_dropout`] (the trainer does, per step and peer) draws its
//! seeds from its own stream instead, so threads that train side by side repeat exactly.

use std::cell::Cell;
use std::marker::PhantomData;

use burn::backend::autodiff::checkpoint::strategy::{CheckpointStrategy, NoCheckpointing};
use burn::backend::Autodiff;
use burn::nn::Dropout;
use burn::tensor::{backend::Backend, Device, Distribution, Int, Shape, Tensor, TensorData};

use crate::kernel_registry::{register, registered};

/// Registry key saying that `B` draws its dropout masks on the host ([`host_mask`]). A marker
/// of `B` itself: a function type would name only `Device<B>`, which backends share (every
/// ndarray element type has one device type).
struct HostDropout<B>(PhantomData<fn() -> B>);

impl<B> Clone for HostDropout<B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B> Copy for HostDropout<B> {}

/// Makes LoRA dropout on `Autodiff<I>` draw its masks on the host (see the module doc). For
/// backends whose tensors live in host memory (ndarray, flex); idempotent.
pub fn register_host_dropout<I: Backend>() {
    register_host_dropout_with::<I, NoCheckpointing>();
}

/// [`register_host_dropout`] for `Autodiff<I, C>` with checkpoint strategy `C`.
pub fn register_host_dropout_with<I: Backend, C: CheckpointStrategy>() {
    register(HostDropout::<Autodiff<I, C>>(PhantomData));
}

/// Whether LoRA dropout on `B` draws its masks on the host.
pub fn host_dropout_registered<B: Backend>() -> bool {
    registered::<HostDropout<B>>().is_some()
}

/// `dropout` applied to `x`: identity without autodiff or with p = 0, the host mask where
/// registered, burn's `Dropout` elsewhere.
pub fn lora_dropout<B: Backend, const D: usize>(
    dropout: &Dropout,
    x: Tensor<B, D>,
) -> Tensor<B, D> {
    let device = x.device();
    if dropout.prob == 0.0 || !B::ad_enabled(&device) {
        return x;
    }
    if host_dropout_registered::<B>() {
        let (mask, dtype) = (host_mask::<B>(&x.shape(), dropout.prob, &device), x.dtype());
        x * Tensor::<B, D>::from_data(mask, (&device, dtype))
    } else {
        dropout.forward(x)
    }
}

/// Bits of seed per draw from the backend RNG (every int element type holds them).
const SEED_BITS_PER_DRAW: u32 = 15;
const SEED_DRAWS: usize = 4;

thread_local! {
    /// This thread's mask seed stream ([`seed_host_dropout`]): the last seed handed out.
    static STREAM: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Makes the host dropout masks drawn on this thread come from a stream started at `seed`
/// (SplitMix64 over a counter) instead of the backend RNG, until the next call. The trainer
/// reseeds it per step and data-parallel peer: each peer runs on its own thread, and the CPU
/// backends' RNG is process-wide, so peers drawing from it would race for its draws and a
/// 2-peer run with dropout would not repeat. GPUs (burn's dropout) are not affected.
pub fn seed_host_dropout(seed: u64) {
    STREAM.set(Some(seed));
}

/// One mask seed: the next of this thread's stream where [`seed_host_dropout`] set one, else
/// four uniform 15-bit integers from `B`'s RNG.
fn draw_seed<B: Backend>(device: &Device<B>) -> u64 {
    if let Some(last) = STREAM.get() {
        let next = last.wrapping_add(GOLDEN_GAMMA);
        STREAM.set(Some(next));
        return splitmix64(next);
    }
    let range = (1u64 << SEED_BITS_PER_DRAW) as f64;
    let draws =
        Tensor::<B, 1, Int>::random([SEED_DRAWS], Distribution::Uniform(0.0, range), device)
            .into_data()
            .convert::<i64>();
    draws
        .iter::<i64>()
        .fold(0u64, |seed, d| (seed << SEED_BITS_PER_DRAW) | d as u64)
}

/// A keep mask (`1 / (1 − prob)` or 0, f32) of `shape`, from one seed drawn on `B`.
fn host_mask<B: Backend>(shape: &Shape, prob: f64, device: &Device<B>) -> TensorData {
    TensorData::new(
        keep_mask(draw_seed::<B>(device), shape.num_elements(), prob),
        shape.clone(),
    )
}

/// `n` independent draws: `1 / (1 − prob)` with probability `1 − prob`, else 0. Element `2i`
/// and `2i + 1` are the low and high halves of SplitMix64's output `i` for `seed`.
fn keep_mask(seed: u64, n: usize, prob: f64) -> Vec<f32> {
    let keep = 1.0 - prob;
    // P(u < threshold) = threshold / 2³² for u uniform on 32 bits.
    let threshold = (keep * 4_294_967_296.0) as u64;
    let scale = (1.0 / keep) as f32;
    let mut mask = vec![0.0f32; n];
    for (i, pair) in mask.chunks_mut(2).enumerate() {
        let bits = splitmix64(seed.wrapping_add((i as u64 + 1).wrapping_mul(GOLDEN_GAMMA)));
        for (half, m) in pair.iter_mut().enumerate() {
            if ((bits >> (32 * half)) & 0xffff_ffff) < threshold {
                *m = scale;
            }
        }
    }
    mask
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's output function (Steele, Lea & Flood 2014): a bijective mix of the counter.
fn splitmix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SplitMix64's first outputs from state 0 (the reference implementation's values).
    #[test]
    fn splitmix64_matches_the_reference_sequence() {
        let outputs: Vec<u64> = (1..=3)
            .map(|i: u64| splitmix64(i.wrapping_mul(GOLDEN_GAMMA)))
            .collect();
        assert_eq!(
            outputs,
            [
                0xe220_a839_7b1d_cdaf,
                0x6e78_9e6a_a1b9_65f4,
                0x06c4_5d18_8009_454f
            ]
        );
    }

    #[test]
    fn keep_mask_keeps_the_asked_fraction_in_both_halves_and_scales_it() {
        let (n, prob) = (1 << 20, 0.3);
        let mask = keep_mask(42, n, prob);
        let scale = (1.0 / 0.7) as f32;
        assert!(mask.iter().all(|&m| m == 0.0 || m == scale));
        // 4.5 standard deviations of a binomial proportion over n / 2 draws.
        let tolerance = 4.5 * (0.7 * 0.3 / (n / 2) as f64).sqrt();
        for half in 0..2 {
            let kept = mask
                .iter()
                .skip(half)
                .step_by(2)
                .filter(|&&m| m != 0.0)
                .count();
            let fraction = kept as f64 / (n / 2) as f64;
            assert!(
                (fraction - 0.7).abs() < tolerance,
                "half {half}: {fraction}"
            );
        }
        // Neighbours are independent: P(both kept) = 0.49.
        let both = mask
            .chunks(2)
            .filter(|p| p[0] != 0.0 && p[1] != 0.0)
            .count();
        let joint = both as f64 / (n / 2) as f64;
        assert!(
            (joint - 0.49).abs() < 4.5 * (0.49 * 0.51 / (n / 2) as f64).sqrt(),
            "{joint}"
        );
    }

    #[test]
    fn keep_mask_depends_on_the_seed_only() {
        assert_eq!(keep_mask(7, 1001, 0.05), keep_mask(7, 1001, 0.05));
        assert_ne!(keep_mask(7, 1001, 0.05), keep_mask(8, 1001, 0.05));
        assert_eq!(
            keep_mask(7, 1001, 0.05)[..1000],
            keep_mask(7, 1000, 0.05)[..]
        );
    }
}
