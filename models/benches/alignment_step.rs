//! One FiRe-MPO-like LoRA alignment step on the `small` preset, the Rust half of the comparison
//! with PyTorch (`benches/pytorch/alignment_step.py`, driven by `benches/pytorch/compare.py`).
//!
//! Layout (as `firempo align`): one pair = 2 prefixes (the image and a corrupted copy, 64 image
//! tokens each, `--prefix` tokens in all) × 2 answers (chosen, rejected) of 32 tokens, scored in
//! one shared-prefix forward for the policy (LoRA r8/α16, dropout 0.05 on all seven projections)
//! and one for the adapters-off reference (inner backend, no graph). Loss: a DPO term (image,
//! chosen vs rejected), an mDPO image term (chosen, image vs corrupted) and the token KL to the
//! reference at every answer position, summed; backward; AdamW on the adapters. PyTorch
//! computes the same loss on the same architecture.
//!
//! Run by hand (dev profile: its dependencies are optimized, no release build of burn needed):
//! `cargo bench -p firempo-models --profile dev --bench alignment_step -- --prefix 600 --vocab 2048
//! --kernel host --steps 3`. `--kernel host`: every host kernel of the CPU backends (attention,
//! LoRA dropout masks, the SwiGLU gate, RoPE); each other mode switches one off:
//! `host_burn_dropout` (burn's `Dropout`), `host_tensor_swiglu` / `host_tensor_rope` (the gate /
//! the rotary embedding in tensor ops), `blocked` / `dense` (the attention in tensor ops, blocked
//! or dense). Prints one JSON line per timed step set: the step times (s, after one warm-up step)
//! and the peak heap bytes of one step.

use std::time::Instant;

mod common;

use burn::backend::autodiff::checkpoint::strategy::{
    BalancedCheckpointing, CheckpointStrategy, NoCheckpointing,
};
use burn::backend::{Autodiff, NdArray};
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{
    activation::{log_sigmoid, log_softmax},
    backend::Backend,
    Distribution, Int, Tensor, TensorData,
};
use firempo_models::{
    register_fused_attention_with, register_host_attention_with, register_host_dropout_with,
    register_host_rope_with, register_host_swiglu_with, AttentionKernel, LoraConfig, ScoringInput,
    Vlm, VlmConfig,
};

type I = NdArray<f32>;

const ANSWERS: usize = 2;
const ANSWER_LEN: usize = 32;
const BETA: f64 = 0.1;
const LR: f64 = 1e-5;

struct Args {
    prefix: usize,
    vocab: usize,
    /// The `--kernel` mode, as given (names the run in the output).
    mode: String,
    kernel: AttentionKernel,
    /// The blocked attention computed by the host kernel (`register_host_attention`).
    host_attention: bool,
    /// LoRA dropout masks drawn on the host (`register_host_dropout`), else burn's `Dropout`.
    host_dropout: bool,
    /// The SwiGLU gate as one host op (`register_host_swiglu`), else tensor ops.
    host_swiglu: bool,
    /// The rotary embedding as one host op (`register_host_rope`), else tensor ops.
    host_rope: bool,
    steps: usize,
    /// `Autodiff<I, BalancedCheckpointing>` instead of `Autodiff<I>` (burn's op-level recomputation).
    balanced: bool,
}

fn args() -> Args {
    let mut a = Args {
        prefix: 600,
        vocab: 2048,
        mode: "host".into(),
        kernel: AttentionKernel::Blocked,
        host_attention: true,
        host_dropout: true,
        host_swiglu: true,
        host_rope: true,
        steps: 3,
        balanced: false,
    };
    let argv: Vec<String> = std::env::args().collect();
    let value = |i: usize| argv.get(i + 1).map(String::as_str).unwrap_or("");
    for (i, arg) in argv.iter().enumerate() {
        match arg.as_str() {
            "--prefix" => a.prefix = value(i).parse().expect("--prefix N"),
            "--vocab" => a.vocab = value(i).parse().expect("--vocab N"),
            "--steps" => a.steps = value(i).parse().expect("--steps N"),
            "--checkpointing" => a.balanced = value(i) == "balanced",
            "--kernel" => {
                a.mode = value(i).to_string();
                match value(i) {
                    "host" => {}
                    "host_burn_dropout" => a.host_dropout = false,
                    "host_tensor_swiglu" => a.host_swiglu = false,
                    "host_tensor_rope" => a.host_rope = false,
                    "blocked" => a.host_attention = false,
                    "dense" => (a.kernel, a.host_attention) = (AttentionKernel::Dense, false),
                    other => panic!(
                        "--kernel host|host_burn_dropout|host_tensor_swiglu|host_tensor_rope|\
                         blocked|dense, got {other:?}"
                    ),
                }
            }
            _ => {}
        }
    }
    a
}

fn ints<B: Backend, const D: usize>(v: Vec<i64>, shape: [usize; D]) -> Tensor<B, D, Int> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// Same token ids as the Python script: `[1, image × 64, 2 + (7 i mod (vocab − 10)) …]`, answers
/// `3 + (13 j mod (vocab − 10))`; the corrupted image is the image plus noise.
fn input<B: Backend>(config: &VlmConfig, prefix_len: usize) -> ScoringInput<B> {
    let n_img = config.image_tokens_per_image();
    let v = config.text.vocab_size as i64 - 10;
    let mut prefix = vec![1i64];
    prefix.extend(std::iter::repeat_n(config.image_token_id as i64, n_img));
    prefix.extend((0..prefix_len - 1 - n_img).map(|i| 2 + (i as i64 * 7) % v));
    let answers: Vec<i64> = (0..ANSWERS * ANSWER_LEN)
        .map(|j| 3 + (j as i64 * 13) % v)
        .collect();
    let size = config.vision.as_ref().unwrap().image_size;
    let device = Default::default();
    let image = Tensor::<B, 4>::random([1, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
    let noise = Tensor::random([1, 3, size, size], Distribution::Normal(0.0, 0.5), &device);
    ScoringInput {
        prefix_ids: ints(prefix.repeat(2), [2, prefix_len]),
        prefix_mask: None,
        pixel_values: Some(Tensor::cat(vec![image.clone(), image + noise], 0)),
        answer_ids: ints(answers.repeat(2), [2, ANSWERS, ANSWER_LEN]),
    }
}

/// Sequence log-probs `[2 prefixes, 2 answers]` and token log-softmax `[2, 2, 32, vocab]`.
fn logps<B: Backend>(logits: Tensor<B, 4>, ids: Tensor<B, 3, Int>) -> (Tensor<B, 2>, Tensor<B, 4>) {
    let logp = log_softmax(logits, 3);
    let tok = logp.clone().gather(3, ids.unsqueeze_dim(3));
    // [2, 2, 32, 1]
    (tok.sum_dim(2).reshape([2, ANSWERS]), logp)
}

fn step<C: CheckpointStrategy>(
    model: Vlm<Autodiff<I, C>>,
    optim: &mut impl Optimizer<Vlm<Autodiff<I, C>>, Autodiff<I, C>>,
    input: &ScoringInput<Autodiff<I, C>>,
    ref_input: &ScoringInput<I>,
) -> Vlm<Autodiff<I, C>> {
    let reference = model.clone().with_adapters(false).valid();
    let (ref_seq, ref_tok) = logps(
        reference.score_answers(ref_input.clone()).unwrap(),
        ref_input.answer_ids.clone(),
    );
    let ref_seq = Tensor::<Autodiff<I, C>, 2>::from_inner(ref_seq);
    let ref_tok = Tensor::<Autodiff<I, C>, 4>::from_inner(ref_tok);
    let (seq, tok) = logps(
        model.score_answers(input.clone()).unwrap(),
        input.answer_ids.clone(),
    );
    let r = (seq - ref_seq) * BETA;
    // [prefix (image, corrupted), answer (chosen, rejected)]
    let at = |p: usize, a: usize| r.clone().slice([p..p + 1, a..a + 1]).reshape([1]);
    let dpo = -log_sigmoid(at(0, 0) - at(0, 1));
    let mdpo = -log_sigmoid(at(0, 0) - at(1, 0));
    let kl = (tok.clone().exp() * (tok - ref_tok)).sum_dim(3).mean();
    let loss = dpo + mdpo + kl;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    optim.step(LR, model, grads)
}

/// The process's peak resident set (`VmHWM`), bytes; 0 where /proc is absent.
fn peak_rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<usize>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

fn main() {
    let args = args();
    if args.balanced {
        run::<BalancedCheckpointing>(&args)
    } else {
        run::<NoCheckpointing>(&args)
    }
}

fn run<C: CheckpointStrategy>(args: &Args) {
    type A<C> = Autodiff<I, C>;
    if args.host_attention {
        register_host_attention_with::<I, C>();
    } else {
        register_fused_attention_with::<I, C>();
    }
    if args.host_dropout {
        register_host_dropout_with::<I, C>();
    }
    if args.host_swiglu {
        register_host_swiglu_with::<I, C>();
    }
    if args.host_rope {
        register_host_rope_with::<I, C>();
    }
    let mut config = VlmConfig::small();
    config.text.vocab_size = args.vocab;
    config.image_token_id = args.vocab - 1;
    let device = Default::default();
    let mut model = config
        .init::<A<C>>(&device)
        .with_lora(&LoraConfig::default(), &device)
        .unwrap();
    model.decoder = model.decoder.with_attention_kernel(args.kernel);
    let input = input::<A<C>>(&config, args.prefix);
    let ref_input = ScoringInput::<I> {
        prefix_ids: input.prefix_ids.clone().inner(),
        prefix_mask: None,
        pixel_values: input.pixel_values.clone().map(|p| p.inner()),
        answer_ids: input.answer_ids.clone().inner(),
    };
    let mut optim = AdamWConfig::new().init::<A<C>, Vlm<A<C>>>();
    common::reset_peak();
    let before = common::live_bytes();
    model = step(model, &mut optim, &input, &ref_input);
    let peak = common::peak_bytes().saturating_sub(before);
    let mut times = Vec::new();
    for _ in 0..args.steps {
        let t = Instant::now();
        model = step(model, &mut optim, &input, &ref_input);
        times.push(t.elapsed().as_secs_f64());
    }
    println!(
        "{{\"impl\": \"firempo-{}{}\", \"prefix\": {}, \"vocab\": {}, \"times\": {:?}, \"peak_heap_bytes\": {}, \"peak_rss_bytes\": {}}}",
        args.mode,
        if args.balanced { "-balanced" } else { "" },
        args.prefix,
        args.vocab,
        times,
        peak,
        peak_rss_bytes()
    );
}
