//! Criterion benchmarks of firempo-models on ndarray (CPU): a LoRA forward+backward step,
//! KV-cached generation, and shared-prefix scoring against separate sequences in the FiRe-MPO
//! layout (one 600-token prefix with an image, 4 answers of 32 tokens).
//!
//! Peak heap memory of the two scoring layouts is measured once with a counting allocator and
//! printed before the timings. Run: `cargo bench -p firempo-models`.

use std::time::Duration;

mod common;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{
    activation::log_softmax, backend::Backend, Distribution, Int, Tensor, TensorData,
};
use criterion::{criterion_group, criterion_main, Criterion};
use firempo_models::{
    register_fused_attention, GenerationConfig, LoraConfig, ScoringInput, Vlm, VlmConfig, VlmInput,
};

type A = Autodiff<NdArray<f32>>;

const PREFIX: usize = 600;
const N_ANSWERS: usize = 4;
const ANSWER: usize = 32;

fn ints<B: Backend, const D: usize>(v: Vec<i64>, shape: [usize; D]) -> Tensor<B, D, Int> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// One prefix of 600 tokens (image tokens included) and 4 answers of 32 tokens.
fn scoring_input<B: Backend>(config: &VlmConfig) -> ScoringInput<B> {
    let n_img = config.image_tokens_per_image();
    let mut prefix = vec![1i64];
    prefix.extend(std::iter::repeat_n(config.image_token_id as i64, n_img));
    prefix.extend((0..PREFIX - 1 - n_img).map(|i| 2 + (i as i64 * 7) % 1000));
    let answers: Vec<i64> = (0..N_ANSWERS * ANSWER)
        .map(|i| 3 + (i as i64 * 13) % 1000)
        .collect();
    let size = config.vision.as_ref().unwrap().image_size;
    ScoringInput {
        prefix_ids: ints(prefix, [1, PREFIX]),
        prefix_mask: None,
        pixel_values: Some(Tensor::random(
            [1, 3, size, size],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )),
        answer_ids: ints(answers, [1, N_ANSWERS, ANSWER]),
    }
}

/// Forward + backward of a log-prob objective at answer positions, as a training step does.
fn score_step(model: &Vlm<A>, input: ScoringInput<A>, shared: bool) {
    let logits = if shared {
        model.score_answers(input)
    } else {
        model.score_answers_separately(input)
    }
    .unwrap();
    let loss = log_softmax(logits, 3)
        .slice([0..1, 0..N_ANSWERS, 0..ANSWER, 5..6])
        .mean();
    let _grads = loss.backward();
}

fn peak_bytes(f: impl FnOnce()) -> usize {
    common::reset_peak();
    let before = common::live_bytes();
    f();
    common::peak_bytes() - before
}

fn lora_model(config: &VlmConfig) -> Vlm<A> {
    // The decoder's attention trains through its own backward op, as in `firempo align`.
    register_fused_attention::<NdArray<f32>>();
    let device = Default::default();
    config
        .init::<A>(&device)
        .with_lora(&LoraConfig::default(), &device)
        .unwrap()
}

fn bench_scoring(c: &mut Criterion) {
    let config = VlmConfig::small();
    let model = lora_model(&config);
    let input = scoring_input::<A>(&config);
    let shared = peak_bytes(|| score_step(&model, input.clone(), true));
    let separate = peak_bytes(|| score_step(&model, input.clone(), false));
    println!(
        "peak heap, small config, 600-token prefix + 4x32 answers: shared {:.1} MiB, separate {:.1} MiB (ratio {:.2}x)",
        shared as f64 / 1048576.0,
        separate as f64 / 1048576.0,
        separate as f64 / shared as f64
    );
    let mut group = c.benchmark_group("scoring_600_prefix_4x32");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    group.bench_function("shared_prefix", |b| {
        b.iter(|| score_step(&model, input.clone(), true))
    });
    group.bench_function("separate_sequences", |b| {
        b.iter(|| score_step(&model, input.clone(), false))
    });
    group.finish();
}

fn bench_train_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("lora_forward_backward");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, config) in [("tiny", VlmConfig::tiny()), ("small", VlmConfig::small())] {
        let model = lora_model(&config);
        let n_img = config.image_tokens_per_image();
        let mut ids = vec![1i64];
        ids.extend(std::iter::repeat_n(config.image_token_id as i64, n_img));
        ids.extend((0..127 - n_img).map(|i| 2 + i as i64));
        let size = config.vision.as_ref().unwrap().image_size;
        let input =
            VlmInput::new(ints::<A, 2>(ids.repeat(4), [4, 128])).with_pixels(Tensor::random(
                [4, 3, size, size],
                Distribution::Normal(0.0, 1.0),
                &Default::default(),
            ));
        group.bench_function(format!("{name}_batch4_seq128"), |b| {
            b.iter(|| {
                let loss = log_softmax(model.forward(input.clone()).unwrap(), 2)
                    .slice([0..4, 0..128, 5..6])
                    .mean();
                loss.backward()
            })
        });
    }
    group.finish();
}

fn bench_generation(c: &mut Criterion) {
    type I = NdArray<f32>;
    let mut group = c.benchmark_group("generate_32_tokens");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for (name, config) in [("tiny", VlmConfig::tiny()), ("small", VlmConfig::small())] {
        let model = config.init::<I>(&Default::default());
        let n_img = config.image_tokens_per_image();
        let mut ids = vec![1i64];
        ids.extend(std::iter::repeat_n(config.image_token_id as i64, n_img));
        ids.extend([5, 6, 7]);
        let len = ids.len();
        let size = config.vision.as_ref().unwrap().image_size;
        let input =
            VlmInput::new(ints::<I, 2>(ids.repeat(4), [4, len])).with_pixels(Tensor::random(
                [4, 3, size, size],
                Distribution::Normal(0.0, 1.0),
                &Default::default(),
            ));
        let gen = GenerationConfig {
            max_new_tokens: 32,
            ..GenerationConfig::default()
        };
        group.bench_function(format!("{name}_batch4"), |b| {
            b.iter(|| model.generate(input.clone(), &gen).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_scoring, bench_train_step, bench_generation);
criterion_main!(benches);
