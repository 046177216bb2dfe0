//! FiRe-MPO loss forward + backward at realistic answer shapes on ndarray (f32):
//! batch 8, 32 answer tokens, vocabularies of 32 000 (LLaMA) and 152 000 (Qwen2), all four
//! answer variants, against DPO on the same inputs as the baseline.
//!
//! Peak heap memory of one step is measured with a counting global allocator and printed.
//! Run: `cargo bench --bench losses` (set `FIREMPO_BENCH_VOCABS=32000` to skip the large one).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::backend::ndarray::NdArrayDevice;
use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Distribution, Int, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use firempo_losses::{
    CorruptedAnswers, DpoConfig, FiReMpoConfig, PreferenceBatch, PreferenceLoss, ReferenceScores,
    ScoredAnswer,
};

/// Wraps the system allocator to track current and peak live bytes.
struct CountingAllocator;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

type B = Autodiff<NdArray<f32>>;

const BATCH: usize = 8;
const ANSWER_LEN: usize = 32;

/// Random answer-position logits for one variant; policy logits are trainable leaves.
fn answer(vocab: usize, device: &NdArrayDevice) -> ScoredAnswer<B> {
    let logits = || {
        Tensor::<B, 3>::random(
            [BATCH, ANSWER_LEN, vocab],
            Distribution::Normal(0.0, 3.0),
            device,
        )
    };
    ScoredAnswer {
        policy_logits: logits().require_grad(),
        reference: ReferenceScores::Logits(logits()),
        labels: Tensor::<B, 2, Int>::random(
            [BATCH, ANSWER_LEN],
            Distribution::Uniform(0.0, vocab as f64),
            device,
        ),
        answer_mask: Tensor::ones([BATCH, ANSWER_LEN], device),
        // A 4-token edited phrase in the middle of each answer.
        phrase_ids: Tensor::<B, 2, Int>::from_ints([[0i64; 32]], device)
            .slice_assign([0..1, 14..18], Tensor::ones([1, 4], device))
            .repeat_dim(0, BATCH),
    }
}

fn batch(vocab: usize) -> PreferenceBatch<B> {
    let device = Default::default();
    PreferenceBatch {
        chosen: answer(vocab, &device),
        rejected: answer(vocab, &device),
        corrupted: Some(CorruptedAnswers {
            chosen: answer(vocab, &device),
            rejected: Some(answer(vocab, &device)),
            present: Tensor::ones([BATCH], &device),
        }),
    }
}

fn step(loss: &PreferenceLoss, batch: PreferenceBatch<B>) -> f32 {
    let output = loss.loss(batch).expect("valid batch");
    let _grads = output.loss.backward();
    output.loss.into_scalar()
}

/// Peak bytes allocated above the inputs during one forward + backward.
fn peak_step_bytes(loss: &PreferenceLoss, vocab: usize) -> usize {
    let inputs = batch(vocab);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    step(loss, inputs);
    PEAK.load(Ordering::Relaxed) - base
}

fn vocabs() -> Vec<usize> {
    std::env::var("FIREMPO_BENCH_VOCABS")
        .ok()
        .map(|v| v.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![32_000, 152_000])
}

fn bench_losses(c: &mut Criterion) {
    let losses = [
        (
            "fire-mpo",
            PreferenceLoss::FireMpo(FiReMpoConfig::default()),
        ),
        ("dpo", PreferenceLoss::Dpo(DpoConfig::default())),
    ];
    let mut group = c.benchmark_group("loss_forward_backward");
    group.sample_size(10);
    for vocab in vocabs() {
        let input_bytes = 8 * BATCH * ANSWER_LEN * vocab * 4; // 4 variants x (policy + reference) logits
        for (name, loss) in &losses {
            let peak = peak_step_bytes(loss, vocab);
            println!(
                "{name} vocab {vocab}: inputs {:.0} MiB, peak extra heap during one step {:.0} MiB",
                input_bytes as f64 / (1 << 20) as f64,
                peak as f64 / (1 << 20) as f64
            );
            group.bench_with_input(BenchmarkId::new(*name, vocab), &vocab, |b, &vocab| {
                b.iter_batched(
                    || batch(vocab),
                    |inputs| step(loss, inputs),
                    criterion::BatchSize::PerIteration,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_losses);
criterion_main!(benches);
