//! Memory of one LoRA preference step of Qwen2.5-VL-7B-Instruct and Qwen3-VL-4B-Instruct at their
//! real widths, as `llava_memory` measures LLaVA: 1 and 2 decoder layers measured, extrapolated
//! linearly to the real depth; the vision tower always at its real depth. Layout as in FiRe-MPO
//! alignment: two prefixes (a ~1-megapixel image and its lesion-corrupted copy, same grid, plus 40
//! text tokens each), two answers of 24 tokens per prefix, vision tower and merger frozen, LoRA
//! (rank 8, alpha 16) on all seven decoder projections; the policy forward, the adapters-off
//! reference forward without a graph (`firempo align`'s `reference_of`), a log-prob reduction and
//! the backward.
//!
//! Counts live heap bytes on ndarray (f32), which is what the tensors need on any backend; a GPU
//! allocator adds its own pooling on top. The peak is taken per phase (policy forward, reference
//! forward, backward), each phase is extrapolated on its own and the step's peak is the largest:
//! at 1–2 layers the reference's vision tower (dense whole-image attention over every patch)
//! can dominate, at full depth the saved decoder activations do. Run (dev profile: dependencies
//! are optimized there):
//! `cargo bench -p firempo-models --bench qwen_memory --profile dev` (append `-- qwen2.5` or
//! `-- qwen3` for one model).

use std::time::Instant;

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::tensor::{
    activation::log_softmax, backend::Backend, Distribution, Int, Tensor, TensorData,
};
use firempo_models::qwen_vl::{QwenVisionConfig, QwenVisionTransformer};
use firempo_models::{
    register_fused_attention, Activation, LoraConfig, QwenScoringInput, QwenVlConfig, QwenVlFamily,
    TextConfig,
};

type I = NdArray<f32>;
type A = Autodiff<I>;

const PREFIXES: usize = 2;
const TEXT_TOKENS: usize = 40;
const ANSWERS: usize = 2;
const ANSWER_LEN: usize = 24;
/// Vision blocks of the cut tower that checks whether the tower's memory grows with depth (it
/// holds a whole-image attention block in both models: Qwen2.5-VL's 7, Qwen3-VL's all).
const CUT_VISION_DEPTH: usize = 8;
const GIB: f64 = (1u64 << 30) as f64;

/// Qwen2 vocabulary ids (both checkpoints): `<|vision_start|>`, `<|vision_end|>`, `<|image_pad|>`.
const VISION_START: usize = 151_652;
const VISION_END: usize = 151_653;
const IMAGE_PAD: usize = 151_655;

/// `Qwen/Qwen2.5-VL-7B-Instruct` `config.json` (HuatuoGPT-Vision-7B-Qwen2.5VL has the same shapes).
fn qwen2_5_vl_7b() -> QwenVlConfig {
    let family = QwenVlFamily::Qwen25Vl;
    QwenVlConfig {
        family,
        text: TextConfig {
            vocab_size: 152_064,
            d_model: 3584,
            n_layers: 28,
            n_heads: 28,
            n_kv_heads: 4,
            head_dim: 128,
            d_ff: 18_944,
            rms_norm_eps: 1e-6,
            rope_theta: 1e6,
            qkv_bias: true,
            o_bias: false,
            mlp_bias: false,
            activation: Activation::Silu,
            tie_word_embeddings: false,
            max_position_embeddings: 128_000,
        },
        vision: QwenVisionConfig {
            family,
            depth: 32,
            d_model: 1280,
            n_heads: 16,
            d_ff: 3420,
            out_dim: 3584,
            activation: Activation::Silu,
            in_channels: 3,
            patch_size: 14,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            rope_theta: 10_000.0,
            window_size: Some(112),
            fullatt_block_indexes: vec![7, 15, 23, 31],
            num_position_embeddings: 0,
            deepstack_visual_indexes: Vec::new(),
        },
        mrope_section: vec![16, 24, 24],
        mrope_interleaved: false,
        qk_norm: false,
        image_token_id: IMAGE_PAD,
        video_token_id: 151_656,
        vision_start_token_id: VISION_START,
        vision_end_token_id: VISION_END,
    }
}

/// `Qwen/Qwen3-VL-4B-Instruct` `config.json` (nested `text_config` / `vision_config`).
fn qwen3_vl_4b() -> QwenVlConfig {
    let family = QwenVlFamily::Qwen3Vl;
    QwenVlConfig {
        family,
        text: TextConfig {
            vocab_size: 151_936,
            d_model: 2560,
            n_layers: 36,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            d_ff: 9728,
            rms_norm_eps: 1e-6,
            rope_theta: 5e6,
            qkv_bias: false,
            o_bias: false,
            mlp_bias: false,
            activation: Activation::Silu,
            tie_word_embeddings: true,
            max_position_embeddings: 262_144,
        },
        vision: QwenVisionConfig {
            family,
            depth: 24,
            d_model: 1024,
            n_heads: 16,
            d_ff: 4096,
            out_dim: 2560,
            activation: Activation::GeluTanh,
            in_channels: 3,
            patch_size: 16,
            temporal_patch_size: 2,
            spatial_merge_size: 2,
            rope_theta: 10_000.0,
            window_size: None,
            fullatt_block_indexes: Vec::new(),
            num_position_embeddings: 2304,
            deepstack_visual_indexes: vec![5, 11, 17],
        },
        mrope_section: vec![24, 20, 20],
        mrope_interleaved: true,
        qk_norm: true,
        image_token_id: IMAGE_PAD,
        video_token_id: 151_656,
        vision_start_token_id: VISION_START,
        vision_end_token_id: VISION_END,
    }
}

/// One benchmarked checkpoint and the ~1-megapixel image it sees.
struct Case {
    name: &'static str,
    /// Selects the case on the command line (`-- qwen2.5`).
    key: &'static str,
    config: QwenVlConfig,
    /// `image_grid_thw` of the image (in patches): side = a multiple of `patch · merge` near 1000 px.
    grid: [usize; 3],
}

fn cases() -> Vec<Case> {
    vec![
        // 1008 × 1008 px / patch 14 → 72 × 72 patches → 1296 merged image tokens.
        Case {
            name: "Qwen2.5-VL-7B",
            key: "qwen2.5",
            config: qwen2_5_vl_7b(),
            grid: [1, 72, 72],
        },
        // 1024 × 1024 px / patch 16 → 64 × 64 patches → 1024 merged image tokens.
        Case {
            name: "Qwen3-VL-4B",
            key: "qwen3",
            config: qwen3_vl_4b(),
            grid: [1, 64, 64],
        },
    ]
}

/// Random pixel values `[n_patches, C·T·p·p]` for `PREFIXES` images of `grid`.
fn pixels(
    vision: &QwenVisionConfig,
    grid: [usize; 3],
    device: &burn::backend::ndarray::NdArrayDevice,
) -> Tensor<I, 2> {
    let patches = PREFIXES * grid.iter().product::<usize>();
    Tensor::random(
        [patches, vision.patch_dim()],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

/// `ANSWERS` answers of `ANSWER_LEN` tokens after each prefix, `[prefix][answer][token]`.
fn answer_ids() -> Vec<Vec<Vec<i64>>> {
    let answers: Vec<Vec<i64>> = (0..ANSWERS)
        .map(|a| {
            (0..ANSWER_LEN)
                .map(|t| 200 + (a * ANSWER_LEN + t) as i64)
                .collect()
        })
        .collect();
    vec![answers; PREFIXES]
}

/// The alignment layout: each prefix is `<|vision_start|> <|image_pad|>×N <|vision_end|>` and
/// `TEXT_TOKENS` question tokens, followed by [`answer_ids`].
fn scoring_input<B: Backend>(
    config: &QwenVlConfig,
    grid: [usize; 3],
    pixel_values: Tensor<B, 2>,
) -> QwenScoringInput<B> {
    let mut prefix = vec![VISION_START as i64];
    prefix.extend(std::iter::repeat_n(
        IMAGE_PAD as i64,
        image_tokens(config, grid),
    ));
    prefix.push(VISION_END as i64);
    prefix.extend((0..TEXT_TOKENS).map(|i| 100 + i as i64));
    QwenScoringInput {
        prefix_mask: vec![vec![true; prefix.len()]; PREFIXES],
        prefix_ids: vec![prefix; PREFIXES],
        pixel_values: Some(pixel_values),
        image_grid_thw: vec![grid; PREFIXES],
        answer_ids: answer_ids(),
    }
}

/// Merged image tokens of one image: `t·h·w / merge²`.
fn image_tokens(config: &QwenVlConfig, grid: [usize; 3]) -> usize {
    let merge = config.vision.spatial_merge_size;
    grid.iter().product::<usize>() / (merge * merge)
}

/// Bytes above the bench's starting point at each phase of one step.
#[derive(Debug, Clone, Copy)]
struct StepMemory {
    /// Policy weights with adapters, plus the reference (which shares them).
    weights: usize,
    policy_forward: usize,
    reference_forward: usize,
    backward: usize,
}

impl StepMemory {
    const PHASES: [&'static str; 3] = ["policy forward", "reference forward", "backward"];

    fn phases(&self) -> [usize; 3] {
        [self.policy_forward, self.reference_forward, self.backward]
    }

    /// `self` (1 layer) + (`full` − 1) × (`next` (2 layers) − `self`), field by field.
    fn extrapolate(&self, next: &StepMemory, full: usize) -> StepMemory {
        let line =
            |a: usize, b: usize| (a as isize + (full as isize - 1) * increment(a, b)) as usize;
        StepMemory {
            weights: line(self.weights, next.weights),
            policy_forward: line(self.policy_forward, next.policy_forward),
            reference_forward: line(self.reference_forward, next.reference_forward),
            backward: line(self.backward, next.backward),
        }
    }

    /// The step's peak and the phase where it occurs.
    fn peak(&self) -> (usize, &'static str) {
        let phases = self.phases();
        let i = (0..3).max_by_key(|&i| phases[i]).unwrap();
        (phases[i], Self::PHASES[i])
    }
}

fn gib(bytes: usize) -> f64 {
    bytes as f64 / GIB
}

/// What one more decoder layer adds (signed: a phase the tower dominates may barely move).
fn increment(one: usize, two: usize) -> isize {
    two as isize - one as isize
}

/// Highest live bytes above `base` since the last reset; starts the next phase.
fn phase_peak(base: usize) -> usize {
    let peak = common::peak_bytes() - base;
    common::reset_peak();
    peak
}

/// One step of `case` cut to `layers` decoder layers.
fn measure_step(case: &Case, layers: usize) -> StepMemory {
    let mut config = case.config.clone();
    config.text.n_layers = layers;
    let device = Default::default();
    let base = common::live_bytes();
    let mut policy = config
        .init::<A>(&device)
        .with_lora(&LoraConfig::default(), &device)
        .expect("rank 8 fits every projection");
    policy.visual = policy.visual.no_grad();
    let reference = policy.clone().with_adapters(false).valid();
    let weights = common::live_bytes() - base;

    let pixels = pixels(&config.vision, case.grid, &device);
    let labels = Tensor::<A, 4, Int>::from_data(
        TensorData::new(
            answer_ids().concat().concat(),
            [PREFIXES, ANSWERS, ANSWER_LEN, 1],
        ),
        &device,
    );
    let started = Instant::now();
    common::reset_peak();
    let policy_logits = policy
        .score_answers(scoring_input(
            &config,
            case.grid,
            Tensor::<A, 2>::from_inner(pixels.clone()),
        ))
        .expect("policy scoring");
    let policy_forward = phase_peak(base);
    let reference_logits = reference
        .score_answers(scoring_input(&config, case.grid, pixels))
        .expect("reference scoring");
    let reference_forward = phase_peak(base);
    // Sequence log-probs `[prefixes, answers, 1, 1]`; their mean difference stands in for the
    // preference loss (its own cost is a few scalars per answer).
    let logps = |logits: Tensor<A, 4>| log_softmax(logits, 3).gather(3, labels.clone()).sum_dim(2);
    let loss = (logps(policy_logits) - logps(Tensor::from_inner(reference_logits))).mean();
    let grads = loss.backward();
    let backward = phase_peak(base);
    drop(grads);
    let step = StepMemory {
        weights,
        policy_forward,
        reference_forward,
        backward,
    };
    println!(
        "  {layers} decoder layer(s): weights {:.2} GiB; peak in policy forward {:.2}, reference forward {:.2}, backward {:.2} GiB ({:.0} s)",
        gib(step.weights),
        gib(step.policy_forward),
        gib(step.reference_forward),
        gib(step.backward),
        started.elapsed().as_secs_f64()
    );
    step
}

/// The frozen vision tower alone on the step's two images: weights, and the transient of one
/// forward above them (what the tower adds on top of whatever is live when it runs), at `depth`.
fn measure_vision(case: &Case, depth: usize) -> (usize, usize) {
    let mut vision = case.config.vision.clone();
    vision.depth = depth;
    vision.deepstack_visual_indexes.retain(|&i| i < depth);
    let device = Default::default();
    let base = common::live_bytes();
    let tower = QwenVisionTransformer::<I>::init(&vision, &device);
    let weights = common::live_bytes() - base;
    let pixels = pixels(&vision, case.grid, &device);
    let started = Instant::now();
    let live = common::live_bytes();
    common::reset_peak();
    let out = tower.forward(pixels, &[case.grid; PREFIXES]);
    let transient = common::peak_bytes() - live;
    drop(out);
    println!(
        "  vision tower, {depth} blocks: weights {:.2} GiB, forward transient {:.2} GiB ({:.0} s)",
        gib(weights),
        gib(transient),
        started.elapsed().as_secs_f64()
    );
    (weights, transient)
}

fn report(case: &Case) {
    let full = case.config.text.n_layers;
    let depth = case.config.vision.depth;
    let [t, h, w] = case.grid;
    let patch = case.config.vision.patch_size;
    println!(
        "{}: {PREFIXES} prefixes of a {}x{} px image (grid [{t}, {h}, {w}], {} image tokens) + {TEXT_TOKENS} text tokens, {ANSWERS}x{ANSWER_LEN} answer tokens each",
        case.name,
        h * patch,
        w * patch,
        image_tokens(&case.config, case.grid)
    );
    let one = measure_step(case, 1);
    let two = measure_step(case, 2);
    let per_layer = |a: usize, b: usize| increment(a, b) as f64 / GIB;
    println!(
        "  per decoder layer: weights {:.3} GiB; peak increment in policy forward {:.3}, reference forward {:.3}, backward {:.3} GiB",
        per_layer(one.weights, two.weights),
        per_layer(one.policy_forward, two.policy_forward),
        per_layer(one.reference_forward, two.reference_forward),
        per_layer(one.backward, two.backward),
    );
    let (vision_weights, transient) = measure_vision(case, depth);
    let (cut_weights, cut_transient) = measure_vision(case, CUT_VISION_DEPTH);
    println!(
        "  vision tower: weights linear in depth ({:.3} GiB per block), forward transient {:.2} GiB at {depth} blocks vs {:.2} GiB at {CUT_VISION_DEPTH} (one block's, not depth-linear: the frozen tower keeps no activations)",
        gib(vision_weights - cut_weights) / (depth - CUT_VISION_DEPTH) as f64,
        gib(transient),
        gib(cut_transient)
    );
    let at_full = one.extrapolate(&two, full);
    let (peak, phase) = at_full.peak();
    println!(
        "  {} ({full} layers), f32, LoRA step: weights {:.1} GiB (vision tower {:.1} GiB, {:.0}%), peak {:.1} GiB in the {phase} (vision forward transient {:.1} GiB = {:.0}% of it)",
        case.name,
        gib(at_full.weights),
        gib(vision_weights),
        100.0 * vision_weights as f64 / at_full.weights as f64,
        gib(peak),
        gib(transient),
        100.0 * transient as f64 / peak as f64,
    );
    println!(
        "  computed, not measured (ndarray is f32 only): frozen base in bf16 halves the weights part: weights {:.1} GiB, peak {:.1} GiB (activations still f32)",
        gib(at_full.weights) / 2.0,
        gib(peak) - gib(at_full.weights) / 2.0
    );
}

fn main() {
    // The decoder's attention trains through its own backward op, as in `firempo align`.
    register_fused_attention::<I>();
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    for case in cases() {
        if only.is_empty() || only.iter().any(|k| k == case.key) {
            report(&case);
        }
    }
}
