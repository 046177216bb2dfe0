//! Memory of one LoRA preference step of LLaVA-1.5-7B, measured at the real widths with 1 and 2
//! decoder layers and extrapolated to 32 (memory is linear in depth: each layer adds its
//! weights and its saved activations). Layout as in alignment: two prefixes (the image and its
//! lesion-corrupted copy, 576 image tokens + 40 text tokens each), two answers of 24 tokens per
//! prefix, vision tower and projector frozen, LoRA (rank 8) on all decoder projections.
//!
//! Counts live heap bytes on ndarray (f32), which is what the tensors need on any backend; a
//! GPU allocator adds its own pooling overhead on top. Run (dev profile: dependencies are
//! optimized there, no release build of burn needed):
//! `cargo bench -p firempo-models --bench llava_memory --profile dev` (append `-- dense` for the
//! dense reference attention, `-- ckpt` to measure each depth also with per-layer activation
//! checkpointing, `backward_checkpointed`, LoRA dropout 0 in both). `-- bf16` measures on flex
//! with the decoder projections' frozen base weights in bf16 (adapters, norms, activations and
//! the loss in f32, as `--dtype bf16` trains; `-- bf16 f32` also the f32 step on flex): add
//! `--features test-flex`. `-- pairs` also measures the last (most frugal) mode with
//! micro-batches of 2 pairs at both depths and extrapolates to 4 pairs.

use std::time::Instant;

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::Module;
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::Backend;
use burn::tensor::{activation::log_softmax, Distribution, Int, Tensor, TensorData};
use firempo_models::precision::{cast_base_weights, WeightDType};
use firempo_models::{
    backward_checkpointed, register_fused_attention, AttentionKernel, Checkpointed, FullGraph,
    LoraConfig, ScoringInput, Trunk, VlmConfig,
};

const TEXT_TOKENS: usize = 40;
const ANSWERS: usize = 2;
const ANSWER_LEN: usize = 24;
const GIB: f64 = (1u64 << 30) as f64;

/// Pairs per micro-batch the `-- pairs` extrapolation reports.
const PAIRS_SHOWN: [usize; 2] = [2, 4];

/// Weights and step peak (both bytes) of LLaVA-1.5-7B cut to `layers` decoder layers on
/// `Autodiff<I>`, a micro-batch of `pairs` pairs (two prefixes each: the image and its corrupted
/// copy), the base weights of the decoder projections in `dtype`, the decoder checkpointed per
/// layer when `checkpointing`.
fn measure<I: Backend>(
    layers: usize,
    pairs: usize,
    checkpointing: bool,
    dtype: WeightDType,
) -> (usize, usize) {
    type A<I> = Autodiff<I>;
    let mut config = VlmConfig::llava_1_5_7b();
    config.text.n_layers = layers;
    let device = Default::default();
    let before = common::live_bytes();
    let mut model = config
        .init::<A<I>>(&device)
        .with_lora(&lora(), &device)
        .unwrap();
    model.decoder = cast_base_weights(model.decoder, dtype);
    model.vision = model.vision.map(|v| v.no_grad());
    model.projector = model.projector.map(|p| p.no_grad());
    // `-- dense`: the dense reference attention, for a before/after comparison.
    if std::env::args().any(|a| a == "dense") {
        model.decoder = model.decoder.with_attention_kernel(AttentionKernel::Dense);
    }
    let weights = common::live_bytes() - before;

    let n_img = config.image_tokens_per_image();
    let mut prefix = vec![1i64];
    prefix.extend(std::iter::repeat_n(config.image_token_id as i64, n_img));
    prefix.extend((0..TEXT_TOKENS).map(|i| 100 + i as i64));
    let len = prefix.len();
    let prefixes = 2 * pairs;
    let answers: Vec<i64> = (0..prefixes * ANSWERS * ANSWER_LEN)
        .map(|i| 200 + i as i64)
        .collect();
    let size = config.vision.as_ref().unwrap().image_size;
    let input = ScoringInput::<A<I>> {
        prefix_ids: Tensor::<A<I>, 2, Int>::from_data(
            TensorData::new(prefix.repeat(prefixes), [prefixes, len]),
            &device,
        ),
        prefix_mask: None,
        pixel_values: Some(Tensor::random(
            [prefixes, 3, size, size],
            Distribution::Normal(0.0, 1.0),
            &device,
        )),
        answer_ids: Tensor::<A<I>, 3, Int>::from_data(
            TensorData::new(answers, [prefixes, ANSWERS, ANSWER_LEN]),
            &device,
        ),
    };
    common::reset_peak();
    let started = Instant::now();
    let mut checkpointed = Checkpointed::new();
    let trunk: &mut dyn Trunk<A<I>> = if checkpointing {
        &mut checkpointed
    } else {
        &mut FullGraph
    };
    let logits = model
        .score_answers_host_with(input.host().unwrap(), &device, trunk)
        .unwrap();
    let loss = log_softmax(logits, 3)
        .slice([0..prefixes, 0..ANSWERS, 0..ANSWER_LEN, 5..6])
        .mean();
    // As the trainer does: every pass's gradients into one accumulator.
    let mut accumulator = GradientsAccumulator::new();
    backward_checkpointed(loss, checkpointed.into_tapes(), |g| {
        accumulator.accumulate(&model, GradientsParams::from_grads(g, &model))
    });
    let peak = common::peak_bytes() - before;
    drop(accumulator);
    let mode = if checkpointing { ", checkpointed" } else { "" };
    println!(
        "{layers} decoder layer(s), {pairs} pair(s){mode}: weights {:.2} GiB, peak during the step {:.2} GiB ({:.0} s)",
        weights as f64 / GIB,
        peak as f64 / GIB,
        started.elapsed().as_secs_f64()
    );
    (weights, peak)
}

/// LoRA as `firempo align` attaches it (rank 8); dropout 0, which checkpointing needs (it does
/// not change the memory).
fn lora() -> LoraConfig {
    LoraConfig {
        dropout: 0.0,
        ..LoraConfig::default()
    }
}

/// Whether the command line holds `word` (after `--`).
fn arg(word: &str) -> bool {
    std::env::args().any(|a| a == word)
}

fn main() {
    let checkpointing = arg("ckpt");
    if arg("bf16") {
        report_bf16(checkpointing);
        return;
    }
    // The decoder's attention trains through its own backward op, as in `firempo align`.
    register_fused_attention::<NdArray<f32>>();
    report::<NdArray<f32>>(false, WeightDType::F32, !checkpointing);
    if checkpointing {
        report::<NdArray<f32>>(true, WeightDType::F32, true);
    }
}

/// `-- bf16`: the bf16 steps on flex (ndarray has no bf16), the f32 ones too with `-- f32`,
/// with checkpointing too when asked.
#[cfg(feature = "test-flex")]
fn report_bf16(checkpointing: bool) {
    use burn::backend::Flex;
    register_fused_attention::<Flex>();
    let dtypes: Vec<WeightDType> = [WeightDType::F32]
        .into_iter()
        .filter(|_| arg("f32"))
        .chain([WeightDType::Bf16])
        .collect();
    let modes: Vec<bool> = [false]
        .into_iter()
        .chain(checkpointing.then_some(true))
        .collect();
    for &ckpt in &modes {
        for &dtype in &dtypes {
            let last = ckpt == *modes.last().unwrap() && dtype == *dtypes.last().unwrap();
            report::<Flex>(ckpt, dtype, last);
        }
    }
}

#[cfg(not(feature = "test-flex"))]
fn report_bf16(_: bool) {
    eprintln!(
        "`-- bf16` runs on flex: cargo bench -p firempo-models --bench llava_memory \
         --profile dev --features test-flex -- bf16"
    );
    std::process::exit(2);
}

/// Measures at 1 and 2 decoder layers and extrapolates to the full depth; at 2 pairs too when
/// `-- pairs` asks and `last` says this is the run's last mode.
fn report<I: Backend>(checkpointing: bool, dtype: WeightDType, last: bool) {
    let (w1, p1) = measure::<I>(1, 1, checkpointing, dtype);
    let (w2, p2) = measure::<I>(2, 1, checkpointing, dtype);
    let full = VlmConfig::llava_1_5_7b().text.n_layers;
    let mode = if checkpointing {
        " with per-layer activation checkpointing"
    } else {
        ""
    };
    let per_layer_weights = w2 - w1;
    let per_layer_peak = p2 - p1;
    println!(
        "per decoder layer{mode}: weights {:.2} GiB, peak {:.2} GiB (weights + saved activations)",
        per_layer_weights as f64 / GIB,
        per_layer_peak as f64 / GIB
    );
    println!(
        "LLaVA-1.5-7B ({full} layers), {} base weights on {}, LoRA step{mode}: weights {:.1} GiB, peak {:.1} GiB",
        dtype.name(),
        I::name(&Default::default()),
        (w1 + (full - 1) * per_layer_weights) as f64 / GIB,
        (p1 + (full - 1) * per_layer_peak) as f64 / GIB
    );
    if last && arg("pairs") {
        // What a further pair adds at 1 layer, and on top of that per further layer.
        let (_, p1_two) = measure::<I>(1, 2, checkpointing, dtype);
        let (_, p2_two) = measure::<I>(2, 2, checkpointing, dtype);
        let per_pair = p1_two as f64 - p1 as f64;
        let per_pair_layer = (p2_two as f64 - p2 as f64) - per_pair;
        let further_pair = per_pair + (full - 1) as f64 * per_pair_layer;
        let one_pair = (p1 + (full - 1) * per_layer_peak) as f64;
        println!(
            "each further pair at {full} layers{mode}: {:.2} GiB",
            further_pair / GIB
        );
        for pairs in PAIRS_SHOWN {
            println!(
                "LLaVA-1.5-7B ({full} layers), {} base weights on {}, LoRA step{mode}, {pairs} pairs per micro-batch: peak {:.1} GiB",
                dtype.name(),
                I::name(&Default::default()),
                (one_pair + (pairs - 1) as f64 * further_pair) / GIB
            );
        }
    }
}
