//! Shared-prefix scoring gives the log-probs of separate full sequences, and gradients reach the
//! image encoder through the prefix.

mod common;

use burn::backend::Autodiff;
use burn::tensor::{
    activation::log_softmax, backend::Backend, Distribution, Int, Tensor, TensorData,
};
use common::B;
use firempo_models::{ScoringInput, VlmConfig, VlmInput};

const TOL: f32 = 1e-4;

fn ints<Bk: Backend, const D: usize>(v: Vec<i64>, shape: [usize; D]) -> Tensor<Bk, D, Int> {
    Tensor::from_data(TensorData::new(v, shape), &Default::default())
}

/// Two prefixes (the second left-padded by 2), three answers of up to 4 tokens each.
/// Prefix token rows and answer token rows (right-padded with 0).
type HostCase = (Vec<Vec<i64>>, Vec<Vec<Vec<i64>>>);

fn input<Bk: Backend>(config: &VlmConfig) -> (ScoringInput<Bk>, HostCase) {
    let img = config.image_token_id as i64;
    let n_img = config.image_tokens_per_image();
    let mut p0 = vec![1, 7];
    p0.extend(std::iter::repeat_n(img, n_img));
    p0.extend([11, 12, 13]);
    let mut p1 = vec![1, 8];
    p1.extend(std::iter::repeat_n(img, n_img));
    p1.push(21);
    let len = p0.len();
    let padded1: Vec<i64> = [vec![0, 0], p1.clone()].concat();
    let mask: Vec<i64> = [vec![1; len], vec![0, 0], vec![1; len - 2]].concat();
    let answers = vec![
        vec![vec![30, 31, 32, 33], vec![40, 41, 0, 0], vec![50, 0, 0, 0]],
        vec![
            vec![60, 61, 62, 0],
            vec![70, 71, 72, 73],
            vec![80, 81, 0, 0],
        ],
    ];
    let input = ScoringInput {
        prefix_ids: ints([p0.clone(), padded1].concat(), [2, len]),
        prefix_mask: Some(ints(mask, [2, len])),
        pixel_values: Some(Tensor::random(
            [2, 3, 32, 32],
            Distribution::Normal(0.0, 1.0),
            &Default::default(),
        )),
        answer_ids: ints(
            answers.iter().flatten().flatten().copied().collect(),
            [2, 3, 4],
        ),
    };
    (input, (vec![p0, p1], answers))
}

#[test]
fn shared_prefix_equals_separate_sequences() {
    let device = Default::default();
    let config = VlmConfig::tiny();
    let model = config.init::<B>(&device);
    let (input, (prefixes, answers)) = input::<B>(&config);
    let pixels = input.pixel_values.clone().unwrap();
    let shared = log_softmax(model.score_answers(input.clone()).unwrap(), 3);
    let batched = log_softmax(model.score_answers_separately(input).unwrap(), 3);
    let mut worst = 0f32;
    for (p, prefix) in prefixes.iter().enumerate() {
        for (i, answer) in answers[p].iter().enumerate() {
            let real: Vec<i64> = answer.iter().copied().take_while(|&t| t != 0).collect();
            // Independent, unpadded forward of `prefix + answer`.
            let seq = [prefix.clone(), real.clone()].concat();
            let n = seq.len();
            let px = pixels.clone().slice([p..p + 1, 0..3, 0..32, 0..32]);
            let full = model
                .forward(VlmInput::new(ints(seq, [1, n])).with_pixels(px))
                .unwrap();
            let full = log_softmax(full, 2);
            for (t, &tok) in real.iter().enumerate() {
                let want: f32 = full
                    .clone()
                    .slice([
                        0..1,
                        prefix.len() - 1 + t..prefix.len() + t,
                        tok as usize..tok as usize + 1,
                    ])
                    .into_scalar();
                for got_t in [&shared, &batched] {
                    let got: f32 = got_t
                        .clone()
                        .slice([p..p + 1, i..i + 1, t..t + 1, tok as usize..tok as usize + 1])
                        .into_scalar();
                    worst = worst.max((got - want).abs());
                }
            }
        }
    }
    eprintln!("shared-prefix max abs diff of log-probs: {worst:e}");
    assert!(worst <= TOL, "max |Δ log p| = {worst:e}");
}

#[test]
fn gradients_flow_through_the_prefix_into_the_vision_tower() {
    type A = Autodiff<B>;
    let device = Default::default();
    let config = VlmConfig::tiny();
    let model = config.init::<A>(&device);
    let (input, _) = input::<A>(&config);
    let logits = model.score_answers(input).unwrap();
    let loss = log_softmax(logits, 3)
        .slice([0..2, 0..3, 0..4, 30..31])
        .sum();
    let grads = loss.backward();
    let vision = model.vision.as_ref().unwrap();
    let g = vision
        .patch_embedding
        .weight
        .grad(&grads)
        .expect("patch embedding receives a gradient");
    assert!(g.abs().sum().into_scalar() > 0.0);
    let g = model.decoder.layers[0]
        .self_attn
        .q_proj
        .base
        .weight
        .grad(&grads)
        .unwrap();
    assert!(g.abs().sum().into_scalar() > 0.0);
}
