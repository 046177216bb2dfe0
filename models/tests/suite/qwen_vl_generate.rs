//! Qwen-VL KV-cached generation on the tiny fixtures of all three families (2 rows, different
//! image grids, row 1 left-padded): greedy tokens equal recomputation (argmax of a full forward
//! over prompt + generated tokens at each step, M-RoPE positions from `get_rope_index`), the
//! returned log-probs equal that forward's, right padding gives the same tokens as left padding,
//! and the tokens equal transformers' `generate` (`fixtures/make_qwen_vl_peft_fixtures.py`).

use crate::common;
use crate::qwen_vl_fixture;

use common::{fixture, Expected, B};
use firempo_models::{GenerationConfig, QwenVl, QwenVlInput, Sampling};
use qwen_vl_fixture::{fixture_input, floats, host, load, FAMILIES};

const NEW_TOKENS: usize = 8;
const TOL: f32 = 1e-4;

fn greedy() -> GenerationConfig {
    GenerationConfig {
        max_new_tokens: NEW_TOKENS,
        sampling: Sampling::Greedy,
        ..Default::default()
    }
}

/// `input` with each row's `generated` tokens appended after its real tokens (padding stays on
/// the left, so the last column is every row's latest token).
fn extended(input: &QwenVlInput<B>, generated: &[Vec<u32>], k: usize) -> QwenVlInput<B> {
    let mut out = input.clone();
    for (b, tokens) in generated.iter().enumerate() {
        out.input_ids[b].extend(tokens[..k].iter().map(|&t| t as i64));
        out.attention_mask[b].extend(std::iter::repeat_n(true, k));
    }
    out
}

fn log_softmax(row: &[f32]) -> Vec<f64> {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = row
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    row.iter().map(|&l| l as f64 - lse).collect()
}

/// Checks every step of `tokens` against a full forward; returns the largest log-prob error.
fn check_recomputation(model: &QwenVl<B>, input: &QwenVlInput<B>, dir: &str) -> Vec<Vec<u32>> {
    let out = model.generate(input.clone(), &greedy()).unwrap();
    let image = model.config.image_token_id;
    let mut worst = 0f64;
    for (b, tokens) in out.tokens.iter().enumerate() {
        assert_eq!(tokens.len(), NEW_TOKENS, "{dir}: row {b} length");
        assert!(!out.stopped[b]);
        assert!(
            tokens.iter().all(|&t| t as usize != image),
            "{dir}: image-pad emitted"
        );
    }
    for k in 0..NEW_TOKENS {
        let full = model.forward(&extended(input, &out.tokens, k)).unwrap();
        let [batch, seq, vocab] = full.dims();
        let logits = floats(full);
        for b in 0..batch {
            let mut row = logits[(b * seq + seq - 1) * vocab..(b * seq + seq) * vocab].to_vec();
            let lp = log_softmax(&row);
            row[image] = f32::NEG_INFINITY;
            let argmax = (0..vocab).fold(0, |best, i| if row[i] > row[best] { i } else { best });
            assert_eq!(
                out.tokens[b][k] as usize, argmax,
                "{dir}: row {b} step {k}: cached token differs from recomputation"
            );
            worst = worst.max((lp[argmax] - out.log_probs[b][k] as f64).abs());
        }
    }
    eprintln!(
        "{dir}: cached vs recomputed log-probs max |Δ| {worst:e}; tokens {:?}",
        out.tokens
    );
    assert!(worst <= TOL as f64, "{dir}: log-prob |Δ| {worst:e}");
    out.tokens
}

/// The same prompts with row 1's padding moved to the right.
fn right_padded(input: &QwenVlInput<B>) -> QwenVlInput<B> {
    let mut out = input.clone();
    let pad = out.attention_mask[1].iter().take_while(|&&m| !m).count();
    assert!(pad > 0, "the fixture left-pads row 1");
    out.input_ids[1].rotate_left(pad);
    out.attention_mask[1].rotate_left(pad);
    out
}

fn check_family(dir: &str) {
    let model = load::<B>(dir);
    let input = fixture_input::<B>(dir);
    assert_ne!(input.image_grid_thw[0], input.image_grid_thw[1]);
    let tokens = check_recomputation(&model, &input, dir);
    let right = model.generate(right_padded(&input), &greedy()).unwrap();
    assert_eq!(
        right.tokens, tokens,
        "{dir}: right padding changes the tokens"
    );
    let hf = fixture("qwen_vl_peft")
        .join(dir)
        .join("expected.safetensors");
    if hf.exists() {
        let (dims, want) = host(Expected::open(hf).ints::<2>("generated"));
        let want: Vec<Vec<u32>> = want
            .chunks(dims[1])
            .map(|r| r.iter().map(|&t| t as u32).collect())
            .collect();
        assert_eq!(
            tokens, want,
            "{dir}: tokens differ from transformers' generate"
        );
    }
}

#[test]
fn qwen2_vl_cached_generation_equals_recomputation() {
    check_family(FAMILIES[0]);
}

#[test]
fn qwen2_5_vl_cached_generation_equals_recomputation_and_transformers() {
    check_family(FAMILIES[1]);
}

#[test]
fn qwen3_vl_cached_generation_equals_recomputation_and_transformers() {
    check_family(FAMILIES[2]);
}

#[test]
fn first_token_logits_equal_the_forward_and_stop_tokens_end_rows() {
    let model = load::<B>("qwen2_vl");
    let input = fixture_input::<B>("qwen2_vl");
    let full = model.forward(&input).unwrap();
    let [_, seq, vocab] = full.dims();
    let logits = floats(full);
    let out = model.generate(input.clone(), &greedy()).unwrap();
    for b in 0..2 {
        let lp = log_softmax(&logits[(b * seq + seq - 1) * vocab..(b * seq + seq) * vocab]);
        let t = out.tokens[b][0] as usize;
        assert!((lp[t] - out.log_probs[b][0] as f64).abs() <= 1e-5);
    }
    // Stopping on row 0's third token: row 0 ends there, row 1 runs on.
    let stop = out.tokens[0][2];
    let config = GenerationConfig {
        stop_token_ids: vec![stop],
        ..greedy()
    };
    let stopped = model.generate(input, &config).unwrap();
    assert!(stopped.stopped[0]);
    assert_eq!(stopped.tokens[0], out.tokens[0][..2].to_vec());
    let bad = GenerationConfig {
        sampling: Sampling::TopP {
            temperature: 0.0,
            top_p: 0.9,
        },
        ..greedy()
    };
    let msg = model
        .generate(fixture_input::<B>("qwen2_vl"), &bad)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("temperature"), "{msg}");
}
