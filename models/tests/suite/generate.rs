//! Cached generation equals recomputing the full sequence at every step; padding side does not
//! matter; stop tokens and seeds behave.

use crate::common;

use burn::tensor::{activation::log_softmax, Distribution, Int, Tensor, TensorData};
use common::B;
use firempo_models::{GenerationConfig, Sampling, Vlm, VlmConfig, VlmInput};

fn prompts(config: &VlmConfig) -> Vec<Vec<i64>> {
    let img = config.image_token_id as i64;
    let n = config.image_tokens_per_image();
    let mut a = vec![1, 4];
    a.extend(std::iter::repeat_n(img, n));
    a.extend([7, 8, 9]);
    let mut b = vec![1];
    b.extend(std::iter::repeat_n(img, n));
    b.push(3);
    vec![a, b]
}

/// Pads rows to one length on the `left` or right; returns ids and mask tensors.
fn padded(rows: &[Vec<i64>], left: bool) -> (Tensor<B, 2, Int>, Tensor<B, 2, Int>) {
    let len = rows.iter().map(Vec::len).max().unwrap();
    let (mut ids, mut mask): (Vec<i64>, Vec<i64>) = (Vec::new(), Vec::new());
    for r in rows {
        let pad = len - r.len();
        let (pi, pm) = (vec![0i64; pad], vec![0i64; pad]);
        if left {
            ids.extend(pi.iter().chain(r));
            mask.extend(pm.iter().chain(&vec![1; r.len()]));
        } else {
            ids.extend(r.iter().chain(&pi));
            mask.extend(vec![1; r.len()].iter().chain(&pm));
        }
    }
    let d = Default::default();
    (
        Tensor::from_data(TensorData::new(ids, [rows.len(), len]), &d),
        Tensor::from_data(TensorData::new(mask, [rows.len(), len]), &d),
    )
}

/// Greedy decoding by re-running the whole sequence each step (no cache), one row at a time.
fn recompute(
    model: &Vlm<B>,
    prompt: &[i64],
    pixels: Tensor<B, 4>,
    steps: usize,
) -> (Vec<u32>, Vec<f32>) {
    let mut seq = prompt.to_vec();
    let (mut tokens, mut lps) = (Vec::new(), Vec::new());
    for _ in 0..steps {
        let n = seq.len();
        let ids = Tensor::from_data(TensorData::new(seq.clone(), [1, n]), &Default::default());
        let logits = model
            .forward(VlmInput::new(ids).with_pixels(pixels.clone()))
            .unwrap();
        let last = log_softmax(logits.slice([0..1, n - 1..n]), 2).flatten::<1>(0, 2);
        // Generation never emits the image placeholder; exclude it here too.
        let image = model.config.image_token_id;
        let mut mask = vec![0.0f32; last.dims()[0]];
        mask[image] = f32::NEG_INFINITY;
        let allowed =
            last.clone() + Tensor::<B, 1>::from_floats(mask.as_slice(), &Default::default());
        let token = allowed.argmax(0).into_scalar() as i64;
        lps.push(last.narrow(0, token as usize, 1).into_scalar());
        tokens.push(token as u32);
        seq.push(token);
    }
    (tokens, lps)
}

#[test]
fn cached_greedy_equals_recomputation_for_left_and_right_padding() {
    let device = Default::default();
    let config = VlmConfig::tiny();
    let model = config.init::<B>(&device);
    let rows = prompts(&config);
    let pixels = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let gen = GenerationConfig {
        max_new_tokens: 8,
        ..GenerationConfig::default()
    };
    let mut outputs = Vec::new();
    for left in [true, false] {
        let (ids, mask) = padded(&rows, left);
        let input = VlmInput::new(ids)
            .with_pixels(pixels.clone())
            .with_attention_mask(mask);
        outputs.push(model.generate(input, &gen).unwrap());
    }
    assert_eq!(
        outputs[0].tokens, outputs[1].tokens,
        "padding side changes nothing"
    );
    for (b, row) in rows.iter().enumerate() {
        let px = pixels.clone().slice([b..b + 1, 0..3, 0..32, 0..32]);
        let (tokens, lps) = recompute(&model, row, px, 8);
        assert_eq!(outputs[0].tokens[b], tokens, "row {b}");
        for (got, want) in outputs[0].log_probs[b].iter().zip(&lps) {
            assert!((got - want).abs() <= 1e-4, "row {b}: log p {got} vs {want}");
        }
    }

    // Stopping on row 0's second token ends that row early and leaves row 1 alone.
    let stop = outputs[0].tokens[0][1];
    let (ids, mask) = padded(&rows, true);
    let input = VlmInput::new(ids)
        .with_pixels(pixels)
        .with_attention_mask(mask);
    let stopped = model
        .generate(
            input,
            &GenerationConfig {
                stop_token_ids: vec![stop],
                ..gen
            },
        )
        .unwrap();
    assert_eq!(stopped.tokens[0], outputs[0].tokens[0][..1].to_vec());
    assert!(stopped.stopped[0]);
    let first_stop = outputs[0].tokens[1].iter().position(|&t| t == stop);
    let want: Vec<u32> = outputs[0].tokens[1][..first_stop.unwrap_or(8)].to_vec();
    assert_eq!(stopped.tokens[1], want);
}

#[test]
fn sampling_is_seeded() {
    let device = Default::default();
    let config = VlmConfig::tiny();
    let model = config.init::<B>(&device);
    let rows = prompts(&config);
    let pixels = Tensor::<B, 4>::random([2, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
    let (ids, mask) = padded(&rows, true);
    let input = VlmInput::new(ids)
        .with_pixels(pixels)
        .with_attention_mask(mask);
    let sample = |seed| {
        let gen = GenerationConfig {
            max_new_tokens: 12,
            sampling: Sampling::TopP {
                temperature: 5.0,
                top_p: 0.95,
            },
            seed,
            ..GenerationConfig::default()
        };
        model.generate(input.clone(), &gen).unwrap().tokens
    };
    assert_eq!(sample(7), sample(7));
    assert_ne!(sample(7), sample(8));
    let bad = GenerationConfig {
        sampling: Sampling::TopP {
            temperature: 0.0,
            top_p: 0.9,
        },
        ..GenerationConfig::default()
    };
    assert!(model.generate(input, &bad).is_err());
}
