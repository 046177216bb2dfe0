//! Memory of one LoRA preference step of Qwen2.5-VL-7B-Instruct and Qwen3-VL-4B-Instruct at their
//! real widths, as `llava_memory` measures LLaVA. Layout as in FiRe-MPO alignment: two prefixes (a
//! ~1-megapixel image and its lesion-corrupted copy, same grid, plus 40 text tokens each), two
//! answers of 24 tokens per prefix, vision tower and merger frozen, LoRA (rank 8, alpha 16) on all
//! seven decoder projections; the policy forward, the adapters-off reference forward without a
//! graph (`firempo align`'s `reference_of`), a log-prob reduction and the backward.
//!
//! Depth is extrapolated linearly on both stacks: steps with 1 and 2 decoder layers give the
//! per-layer increment, steps with 3 and 6 vision blocks the per-block one (the frozen tower keeps
//! no activations, so a block adds its weights; its whole-image attention is a transient of one
//! block whatever the depth, and the measurement shows both). The tower's weights are also built
//! at the real depth as a check.
//!
//! Counts live heap bytes on ndarray (f32), which is what the tensors need on any backend; a GPU
//! allocator adds its own pooling on top. The peak is taken per phase (policy forward, reference
//! forward, backward), each phase is extrapolated on its own and the step's peak is the largest.
//! Run (dev profile: dependencies are optimized there; ~30 min on two cores):
//! `cargo bench -p firempo-models --bench qwen_memory --profile dev` (append `-- qwen2.5` or
//! `-- qwen3` for one model, `-- vision` for the vision tower alone, ~1 min). Modes, combinable:
//! `-- ckpt` runs the policy's decoder with per-layer activation checkpointing
//! (`backward_checkpointed`, LoRA dropout 0 in every mode); `-- bf16` (or `f16`) stores the decoder
//! projections' frozen base weights in that dtype on flex, as `--dtype bf16` trains (add
//! `--features test-flex`); `-- pairs` also measures micro-batches of 2 pairs and extrapolates
//! to 4. Outside the default mode the vision blocks' increment is taken as their weights, which
//! is what the default mode measures it to be (a 6-block step costs as much as the rest).

use std::time::Instant;

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{
    activation::log_softmax, backend::Backend, Distribution, Int, Tensor, TensorData,
};
use firempo_models::precision::{cast_base_weights, WeightDType};
use firempo_models::qwen_vl::{QwenVisionConfig, QwenVisionTransformer};
use firempo_models::{
    backward_checkpointed, register_fused_attention, Activation, Checkpointed, FullGraph,
    LoraConfig, QwenScoringInput, QwenVlConfig, QwenVlFamily, TextConfig, Trunk,
};

/// What a run measures, from the command line's words (`ckpt`, `bf16`/`f16`, `pairs`).
#[derive(Debug, Clone, Copy)]
struct Mode {
    /// The decoder projections' frozen base weights (`--dtype`).
    dtype: WeightDType,
    /// Per-layer activation checkpointing of the policy's decoder.
    checkpointing: bool,
    /// Also micro-batches of 2 pairs, extrapolated to [`PAIRS_SHOWN`].
    pairs: bool,
}

impl Mode {
    /// The words this mode reads; every other word selects a model or `vision`.
    const WORDS: [&'static str; 4] = ["ckpt", "bf16", "f16", "pairs"];

    fn from_args(args: &[String]) -> Self {
        let has = |w: &str| args.iter().any(|a| a == w);
        let dtype = if has("bf16") {
            WeightDType::Bf16
        } else if has("f16") {
            WeightDType::F16
        } else {
            WeightDType::F32
        };
        Self {
            dtype,
            checkpointing: has("ckpt"),
            pairs: has("pairs"),
        }
    }

    /// The default mode (f32, no checkpointing) also measures the vision blocks' increment.
    fn is_default(&self) -> bool {
        !self.dtype.is_half() && !self.checkpointing
    }

    fn describe(&self) -> String {
        let ckpt = if self.checkpointing {
            ", per-layer activation checkpointing"
        } else {
            ""
        };
        format!("{} base weights{ckpt}", self.dtype.name())
    }
}

/// Pairs per micro-batch the `-- pairs` extrapolation reports.
const PAIRS_SHOWN: [usize; 2] = [2, 4];
/// Prefixes of one pair: the clean and the lesion-corrupted image.
const PREFIXES_PER_PAIR: usize = 2;
const TEXT_TOKENS: usize = 40;
const ANSWERS: usize = 2;
const ANSWER_LEN: usize = 24;
/// Vision blocks of the two cut towers ([`cut`]): the decoder is measured with the first, the
/// difference between them is what each further block adds (a full-depth step at these widths
/// takes over half an hour on ndarray, almost all of it in the tower's whole-image attention).
const VISION_BLOCKS: [usize; 2] = [3, 6];
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

/// Random pixel values `[n_patches, C·T·p·p]` for `prefixes` images of `grid`.
fn pixels<B: Backend>(
    vision: &QwenVisionConfig,
    grid: [usize; 3],
    prefixes: usize,
    device: &B::Device,
) -> Tensor<B, 2> {
    let patches = prefixes * grid.iter().product::<usize>();
    Tensor::random(
        [patches, vision.patch_dim()],
        Distribution::Normal(0.0, 1.0),
        device,
    )
}

/// `ANSWERS` answers of `ANSWER_LEN` tokens after each of `prefixes`, `[prefix][answer][token]`.
fn answer_ids(prefixes: usize) -> Vec<Vec<Vec<i64>>> {
    let answers: Vec<Vec<i64>> = (0..ANSWERS)
        .map(|a| {
            (0..ANSWER_LEN)
                .map(|t| 200 + (a * ANSWER_LEN + t) as i64)
                .collect()
        })
        .collect();
    vec![answers; prefixes]
}

/// The alignment layout: each prefix is `<|vision_start|> <|image_pad|>×N <|vision_end|>` and
/// `TEXT_TOKENS` question tokens, followed by [`answer_ids`].
fn scoring_input<B: Backend>(
    config: &QwenVlConfig,
    grid: [usize; 3],
    prefixes: usize,
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
        prefix_mask: vec![vec![true; prefix.len()]; prefixes],
        prefix_ids: vec![prefix; prefixes],
        pixel_values: Some(pixel_values),
        image_grid_thw: vec![grid; prefixes],
        answer_ids: answer_ids(prefixes),
    }
}

/// Merged image tokens of one image: `t·h·w / merge²`.
fn image_tokens(config: &QwenVlConfig, grid: [usize; 3]) -> usize {
    let merge = config.vision.spatial_merge_size;
    grid.iter().product::<usize>() / (merge * merge)
}

/// Bytes above the bench's starting point in one step: the weights, then the peak during the
/// policy forward, the reference forward and the backward (f64 so measurements combine linearly).
#[derive(Debug, Clone, Copy)]
struct StepMemory([f64; 4]);

impl StepMemory {
    const PHASES: [&'static str; 3] = ["policy forward", "reference forward", "backward"];

    fn weights(&self) -> f64 {
        self.0[0]
    }

    /// `self + k · (to − from)`, column by column: a linear extrapolation.
    fn plus_slope(&self, from: &Self, to: &Self, k: f64) -> Self {
        Self(std::array::from_fn(|i| {
            self.0[i] + k * (to.0[i] - from.0[i])
        }))
    }

    /// The step's peak and the phase where it occurs.
    fn peak(&self) -> (f64, &'static str) {
        let i = (1..4)
            .max_by(|&a, &b| self.0[a].total_cmp(&self.0[b]))
            .unwrap();
        (self.0[i], Self::PHASES[i - 1])
    }

    fn show(&self, digits: usize) -> String {
        let [w, p, r, b] = self.0.map(|x| x / GIB);
        format!("weights {w:.digits$}; peak in policy forward {p:.digits$}, reference forward {r:.digits$}, backward {b:.digits$} GiB")
    }
}

fn gib(bytes: f64) -> f64 {
    bytes / GIB
}

/// Highest live bytes above `base` since the last reset; starts the next phase.
fn phase_peak(base: usize) -> f64 {
    let peak = common::peak_bytes() - base;
    common::reset_peak();
    peak as f64
}

/// `config` with `layers` decoder layers and a vision tower of `blocks` blocks that keeps the real
/// tower's kinds of block: Qwen2.5-VL's last block attends to whole images (the others to
/// windows, as 28 of the real 32 do), Qwen3-VL's three DeepStack levels read the last blocks.
fn cut(config: &QwenVlConfig, layers: usize, blocks: usize) -> QwenVlConfig {
    let mut config = config.clone();
    config.text.n_layers = layers;
    let vision = &mut config.vision;
    if blocks < vision.depth {
        if !vision.fullatt_block_indexes.is_empty() {
            vision.fullatt_block_indexes = vec![blocks - 1];
        }
        let levels = vision.deepstack_visual_indexes.len();
        vision.deepstack_visual_indexes = (blocks - levels..blocks).collect();
        vision.depth = blocks;
    }
    config
}

/// One step of `case` cut to `layers` decoder layers and `blocks` vision blocks, on a micro-batch
/// of `pairs` pairs, on backend `I` in `mode`.
fn measure_step<I: Backend>(
    case: &Case,
    layers: usize,
    blocks: usize,
    pairs: usize,
    mode: Mode,
) -> StepMemory {
    type A<I> = Autodiff<I>;
    let config = cut(&case.config, layers, blocks);
    let prefixes = pairs * PREFIXES_PER_PAIR;
    let device = Default::default();
    let base = common::live_bytes();
    let mut policy = config
        .init::<A<I>>(&device)
        .with_lora(
            &LoraConfig {
                dropout: 0.0,
                ..LoraConfig::default()
            },
            &device,
        )
        .expect("rank 8 fits every projection");
    policy.visual = policy.visual.no_grad();
    policy.decoder = cast_base_weights(policy.decoder, mode.dtype);
    let reference = policy.clone().with_adapters(false).valid();
    let weights = (common::live_bytes() - base) as f64;

    let pixels = pixels::<I>(&config.vision, case.grid, prefixes, &device);
    let labels = Tensor::<A<I>, 4, Int>::from_data(
        TensorData::new(
            answer_ids(prefixes).concat().concat(),
            [prefixes, ANSWERS, ANSWER_LEN, 1],
        ),
        &device,
    );
    let started = Instant::now();
    common::reset_peak();
    let mut checkpointed = Checkpointed::new();
    let trunk: &mut dyn Trunk<A<I>> = if mode.checkpointing {
        &mut checkpointed
    } else {
        &mut FullGraph
    };
    let policy_logits = policy
        .score_answers_with(
            scoring_input(
                &config,
                case.grid,
                prefixes,
                Tensor::<A<I>, 2>::from_inner(pixels.clone()),
            ),
            trunk,
        )
        .expect("policy scoring");
    let policy_forward = phase_peak(base);
    let reference_logits = reference
        .score_answers(scoring_input(&config, case.grid, prefixes, pixels))
        .expect("reference scoring");
    let reference_forward = phase_peak(base);
    // Sequence log-probs `[prefixes, answers, 1, 1]`; their mean difference stands in for the
    // preference loss (its own cost is a few scalars per answer).
    let logps =
        |logits: Tensor<A<I>, 4>| log_softmax(logits, 3).gather(3, labels.clone()).sum_dim(2);
    let loss = (logps(policy_logits) - logps(Tensor::from_inner(reference_logits))).mean();
    // As the trainer does: every pass's gradients (one without checkpointing) accumulated.
    let mut accumulator = GradientsAccumulator::new();
    backward_checkpointed(loss, checkpointed.into_tapes(), |g| {
        accumulator.accumulate(&policy, GradientsParams::from_grads(g, &policy))
    });
    let backward = phase_peak(base);
    drop(accumulator);
    let step = StepMemory([weights, policy_forward, reference_forward, backward]);
    println!(
        "  {layers} decoder layer(s), {blocks} vision blocks, {pairs} pair(s): {} ({:.0} s)",
        step.show(2),
        started.elapsed().as_secs_f64()
    );
    step
}

/// A frozen vision tower with its weights in memory (burn initializes parameters lazily; mapping
/// them, as freezing does, materializes them).
fn frozen_tower<I: Backend>(vision: &QwenVisionConfig) -> QwenVisionTransformer<I> {
    QwenVisionTransformer::<I>::init(vision, &Default::default()).no_grad()
}

/// What the frozen vision tower alone needs, in bytes.
struct TowerMemory {
    /// Its weights at the real depth (built, not run).
    weights: f64,
    /// The weights of one block.
    per_block: f64,
    /// The transient of one forward of the cut tower on one pair's two images, above its weights
    /// and inputs (what the tower adds on top of whatever is live when it runs).
    transient: f64,
}

fn measure_vision<I: Backend>(case: &Case) -> TowerMemory {
    let weights_of = |vision: &QwenVisionConfig| {
        let base = common::live_bytes();
        let tower = frozen_tower::<I>(vision);
        let weights = (common::live_bytes() - base) as f64;
        (tower, weights)
    };
    let (full, weights) = weights_of(&case.config.vision);
    drop(full);
    let vision = cut(&case.config, 1, VISION_BLOCKS[0]).vision;
    let (tower, cut_weights) = weights_of(&vision);
    let per_block = (weights - cut_weights) / (case.config.vision.depth - vision.depth) as f64;
    let pixels = pixels::<I>(&vision, case.grid, PREFIXES_PER_PAIR, &Default::default());
    let started = Instant::now();
    let live = common::live_bytes();
    common::reset_peak();
    let out = tower.forward(pixels, &[case.grid; PREFIXES_PER_PAIR]);
    let transient = (common::peak_bytes() - live) as f64;
    drop(out);
    println!(
        "  vision tower: weights {:.2} GiB at {} blocks ({:.3} GiB per block); forward transient {:.2} GiB ({} blocks, {:.0} s)",
        gib(weights),
        case.config.vision.depth,
        gib(per_block),
        gib(transient),
        VISION_BLOCKS[0],
        started.elapsed().as_secs_f64()
    );
    TowerMemory {
        weights,
        per_block,
        transient,
    }
}

fn report<I: Backend>(case: &Case, vision_only: bool, mode: Mode) {
    let layers = case.config.text.n_layers;
    let depth = case.config.vision.depth;
    let [t, h, w] = case.grid;
    let patch = case.config.vision.patch_size;
    println!(
        "{} ({}, on {}): {PREFIXES_PER_PAIR} prefixes per pair of a {}x{} px image (grid [{t}, {h}, {w}], {} image tokens) + {TEXT_TOKENS} text tokens, {ANSWERS}x{ANSWER_LEN} answer tokens each",
        case.name,
        mode.describe(),
        I::name(&Default::default()),
        h * patch,
        w * patch,
        image_tokens(&case.config, case.grid)
    );
    let tower = measure_vision::<I>(case);
    if vision_only {
        return;
    }
    let [d1, d2] = VISION_BLOCKS;
    let base = measure_step::<I>(case, 1, d1, 1, mode);
    let deeper = measure_step::<I>(case, 2, d1, 1, mode);
    let zero = StepMemory([0.0; 4]);
    let per_layer = zero.plus_slope(&base, &deeper, 1.0);
    println!("  per decoder layer: {}", per_layer.show(3));
    // Each frozen block adds its weights to every phase; the default mode measures that.
    let per_block = if mode.is_default() {
        let wider_tower = measure_step::<I>(case, 1, d2, 1, mode);
        let per_block = zero.plus_slope(&base, &wider_tower, 1.0 / (d2 - d1) as f64);
        println!(
            "  per vision block: {} (frozen: each phase grows by the block's weights, {:.3} GiB)",
            per_block.show(3),
            gib(tower.per_block)
        );
        per_block
    } else {
        StepMemory([tower.per_block; 4])
    };
    let full = base
        .plus_slope(&base, &deeper, (layers - 1) as f64)
        .plus_slope(&zero, &per_block, (depth - d1) as f64);
    let (peak, phase) = full.peak();
    println!(
        "  {} ({layers} layers, {depth} vision blocks), {}, LoRA step, 1 pair: weights {:.1} GiB (vision tower {:.1} GiB = {:.0}%), peak {:.1} GiB in the {phase} (vision forward transient {:.1} GiB = {:.0}% of it)",
        case.name,
        mode.describe(),
        gib(full.weights()),
        gib(tower.weights),
        100.0 * tower.weights / full.weights(),
        gib(peak),
        gib(tower.transient),
        100.0 * tower.transient / peak,
    );
    if mode.pairs {
        report_pairs::<I>(case, mode, [&base, &deeper], &full);
    }
    if !mode.dtype.is_half() {
        report_computed_bf16(case, &full);
    }
}

/// `-- pairs`: steps of 2 pairs at 1 and 2 layers give what a further pair adds per phase, and how
/// that grows with depth; extrapolated to the full depth and [`PAIRS_SHOWN`] pairs.
fn report_pairs<I: Backend>(
    case: &Case,
    mode: Mode,
    one_pair: [&StepMemory; 2],
    full: &StepMemory,
) {
    let [base, deeper] = one_pair;
    let d1 = VISION_BLOCKS[0];
    let two = measure_step::<I>(case, 1, d1, 2, mode);
    let two_deeper = measure_step::<I>(case, 2, d1, 2, mode);
    let zero = StepMemory([0.0; 4]);
    // What a further pair adds at 1 layer, and what it adds on top of that per further layer.
    let per_pair = zero.plus_slope(base, &two, 1.0);
    let per_pair_layer = zero
        .plus_slope(&two, &two_deeper, 1.0)
        .plus_slope(deeper, base, 1.0);
    let layers = case.config.text.n_layers;
    let further_pair = per_pair.plus_slope(&zero, &per_pair_layer, (layers - 1) as f64);
    println!(
        "  each further pair at {layers} layers: {}",
        further_pair.show(2)
    );
    for pairs in PAIRS_SHOWN {
        let (peak, phase) = full
            .plus_slope(&zero, &further_pair, (pairs - 1) as f64)
            .peak();
        println!(
            "  {} ({layers} layers), {}, LoRA step, {pairs} pairs per micro-batch: peak {:.1} GiB in the {phase}",
            case.name,
            mode.describe(),
            gib(peak)
        );
    }
}

/// Computed, not measured, for an f32 run: what `--dtype bf16` saves on the weights alone.
fn report_computed_bf16(case: &Case, full: &StepMemory) {
    let (peak, _) = full.peak();
    let projections = projection_bytes(&case.config.text);
    println!(
        "  computed, not measured (activations stay f32; `-- bf16` measures it on flex): `--dtype bf16` halves the decoder projections ({:.1} GiB f32, {:.0}% of the weights; embeddings, head, tower, norms and adapters stay f32): weights {:.1} GiB, peak {:.1} GiB; the whole frozen base in bf16: weights {:.1} GiB, peak {:.1} GiB",
        gib(projections),
        100.0 * projections / full.weights(),
        gib(full.weights() - projections / 2.0),
        gib(peak - projections / 2.0),
        gib(full.weights() / 2.0),
        gib(peak - full.weights() / 2.0)
    );
}

/// f32 bytes of the decoder's seven projection matrices at full depth (q/k/v/o, gate/up/down:
/// what `--dtype bf16` stores in bf16), from the shapes.
fn projection_bytes(text: &TextConfig) -> f64 {
    let (d, q, kv) = (
        text.d_model,
        text.n_heads * text.head_dim,
        text.n_kv_heads * text.head_dim,
    );
    let per_layer = 2 * d * q + 2 * d * kv + 3 * d * text.d_ff;
    4.0 * (per_layer * text.n_layers) as f64
}

/// Every selected case on backend `I`.
fn run<I: Backend>(mode: Mode, selected: &[&String], vision_only: bool) {
    // The decoder's attention trains through its own backward op, as in `firempo align`.
    register_fused_attention::<I>();
    for case in cases() {
        if selected.is_empty() || selected.iter().any(|k| **k == case.key) {
            report::<I>(&case, vision_only, mode);
        }
    }
}

/// Half-precision base weights run on flex (ndarray is f32 only).
#[cfg(feature = "test-flex")]
fn run_half(mode: Mode, selected: &[&String], vision_only: bool) {
    run::<burn::backend::Flex>(mode, selected, vision_only);
}

#[cfg(not(feature = "test-flex"))]
fn run_half(_: Mode, _: &[&String], _: bool) {
    eprintln!(
        "`-- bf16` and `-- f16` run on flex: cargo bench -p firempo-models --bench qwen_memory \
         --profile dev --features test-flex -- bf16"
    );
    std::process::exit(2);
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let mode = Mode::from_args(&args);
    let vision_only = args.iter().any(|a| a == "vision");
    let selected: Vec<&String> = args
        .iter()
        .filter(|a| *a != "vision" && !Mode::WORDS.contains(&a.as_str()))
        .collect();
    if mode.dtype.is_half() {
        run_half(mode, &selected, vision_only);
    } else {
        run::<NdArray<f32>>(mode, &selected, vision_only);
    }
}
