//! Criterion benchmark of the CPU backends, ndarray f32 against flex, on the step a preference
//! trainer runs: the `small` preset (4 layers, 256-d, GQA 8/2, vocab 2048, 64 image tokens) with
//! LoRA, one prefix (image tokens included) of 96, 256 or 600 tokens and 4 answers of 32 tokens
//! (chosen, rejected and their corrupted-image twins in FiRe-MPO), scored by the policy with
//! gradients and by the adapters-off reference without, a DPO-style sigmoid loss on the two
//! pairs' margins, backward, and one AdamW step on the adapters.
//!
//! The two backends alternate within each prefix length, in one run, so a busy machine slows
//! both. flex runs its large ops on rayon's pool: compare thread counts with
//! `RAYON_NUM_THREADS=1` / `=2` (ndarray, single-threaded here, is the baseline of each run).
//! Run: `cargo bench -p firempo-models --bench backends`.

use std::time::Duration;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::{log_softmax, softplus};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use criterion::{criterion_group, criterion_main, Criterion};
use firempo_models::{LoraConfig, ScoringInput, Vlm, VlmConfig};

const PREFIXES: [usize; 3] = [96, 256, 600];
const N_ANSWERS: usize = 4;
const ANSWER: usize = 32;
const BETA: f64 = 0.1;

fn ints<B: Backend, const D: usize>(v: Vec<i64>, shape: [usize; D]) -> Tensor<B, D, Int> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// One prefix of `prefix_len` tokens (BOS, the image tokens, text) and 4 answers of 32 tokens;
/// fixed values (no RNG) so both backends see the same input.
fn scoring_input<B: Backend>(config: &VlmConfig, prefix_len: usize) -> ScoringInput<B> {
    let device = B::Device::default();
    let n_img = config.image_tokens_per_image();
    let mut prefix = vec![1i64];
    prefix.extend(std::iter::repeat_n(config.image_token_id as i64, n_img));
    prefix.extend((0..prefix_len - 1 - n_img).map(|i| 2 + (i as i64 * 7) % 1000));
    let answers: Vec<i64> = (0..N_ANSWERS * ANSWER)
        .map(|i| 3 + (i as i64 * 13) % 1000)
        .collect();
    let size = config
        .vision
        .as_ref()
        .expect("small has a vision tower")
        .image_size;
    let pixels: Vec<f32> = (0..3 * size * size)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    ScoringInput {
        prefix_ids: ints(prefix, [1, prefix_len]),
        prefix_mask: None,
        pixel_values: Some(Tensor::from_data(
            TensorData::new(pixels, [1, 3, size, size]),
            &device,
        )),
        answer_ids: ints(answers, [1, N_ANSWERS, ANSWER]),
    }
}

/// Summed log-probability of each answer's own tokens: `[n_answers]`.
fn answer_logps<B: Backend>(model: &Vlm<B>, input: ScoringInput<B>) -> Tensor<B, 1> {
    let labels = input.answer_ids.clone().unsqueeze_dim::<4>(3);
    let logits = model.score_answers(input).expect("valid scoring input");
    // [1, n_answers, answer_len, 1] -> [n_answers]
    log_softmax(logits, 3)
        .gather(3, labels)
        .sum_dim(2)
        .reshape([N_ANSWERS])
}

/// The trainer's state between steps: the LoRA policy (`None` only while the optimizer holds it)
/// and the optimizer.
struct Trainer<B: AutodiffBackend, O> {
    policy: Option<Vlm<B>>,
    optim: O,
    input: ScoringInput<B>,
    reference_input: ScoringInput<B::InnerBackend>,
}

impl<B: AutodiffBackend, O: Optimizer<Vlm<B>, B>> Trainer<B, O> {
    /// One preference step; returns the loss (read back once, as the trainer's metrics are).
    fn step(&mut self) -> f32 {
        let policy = self.policy.take().expect("policy present between steps");
        let reference = policy.clone().with_adapters(false).valid();
        let reference_logps = answer_logps(&reference, self.reference_input.clone());
        drop(reference);
        let logps = answer_logps(&policy, self.input.clone());
        let margins = logps - Tensor::from_inner(reference_logps);
        // Pairs (chosen, rejected) and (corrupted chosen, corrupted rejected): [2]
        let diff = margins.clone().narrow(0, 0, 1) - margins.clone().narrow(0, 1, 1);
        let corrupted = margins.clone().narrow(0, 2, 1) - margins.narrow(0, 3, 1);
        let loss = softplus(Tensor::cat(vec![diff, corrupted], 0).mul_scalar(-BETA), 1.0).mean();
        let value: f32 = loss.clone().into_scalar().elem();
        let grads = GradientsParams::from_grads(loss.backward(), &policy);
        self.policy = Some(self.optim.step(1e-3, policy, grads));
        value
    }
}

fn trainer<B: AutodiffBackend>(
    config: &VlmConfig,
    prefix_len: usize,
) -> Trainer<B, impl Optimizer<Vlm<B>, B>> {
    let device = B::Device::default();
    B::seed(&device, 0);
    let policy = config
        .init::<B>(&device)
        .with_lora(&LoraConfig::default(), &device)
        .expect("default LoRA fits the small preset");
    Trainer {
        policy: Some(policy),
        optim: AdamWConfig::new().init::<B, Vlm<B>>(),
        input: scoring_input(config, prefix_len),
        reference_input: scoring_input(config, prefix_len),
    }
}

fn bench_backends(c: &mut Criterion) {
    let config = VlmConfig::small();
    println!(
        "rayon threads (flex): {}",
        std::env::var("RAYON_NUM_THREADS").unwrap_or_else(|_| "all cores".into())
    );
    for prefix_len in PREFIXES {
        let mut group = c.benchmark_group(format!("preference_step_small_prefix{prefix_len}_4x32"));
        group
            .sample_size(10)
            .measurement_time(Duration::from_secs(if prefix_len > 300 { 25 } else { 10 }));
        let mut ndarray = trainer::<Autodiff<NdArray<f32>>>(&config, prefix_len);
        let mut flex = trainer::<Autodiff<Flex>>(&config, prefix_len);
        // LoRA's B starts at zero, so the first step's policy equals its reference: every
        // margin is 0 and the loss is ln 2 on both backends.
        for (name, loss) in [("ndarray", ndarray.step()), ("flex", flex.step())] {
            assert!(
                (loss - std::f32::consts::LN_2).abs() < 1e-5,
                "{name}: first-step loss {loss}, expected ln 2"
            );
        }
        group.bench_function("ndarray", |bench| bench.iter(|| ndarray.step()));
        group.bench_function("flex", |bench| bench.iter(|| flex.step()));
        group.finish();
    }
}

criterion_group!(benches, bench_backends);
criterion_main!(benches);
