//! Qwen-VL shared-prefix scoring on the tiny fixtures of all three families: the packed forward
//! (two left-padded prompts of different lengths with images of different grids, answers of
//! different lengths) gives every answer the logits of a separate `prefix + answer` forward, and
//! gradients reach the vision tower through the prefix.

use crate::common;
use crate::qwen_vl_fixture;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use common::B;
use firempo_models::{QwenScoringInput, QwenVlInput};
use qwen_vl_fixture::{fixture_input, floats, load, single_row, FAMILIES};

const TOL: f32 = 1e-4;

/// Answers per prefix: real lengths 3 and 5 (right-padded with token 1), different per prefix.
fn answers() -> (Vec<Vec<Vec<i64>>>, Vec<usize>) {
    let a = vec![
        vec![vec![5, 17, 33, 1, 1], vec![44, 9, 71, 2, 88]],
        vec![vec![60, 61, 62, 1, 1], vec![3, 99, 14, 15, 16]],
    ];
    (a, vec![3, 5])
}

fn scoring_input<Bk: Backend>(prompts: &QwenVlInput<Bk>) -> QwenScoringInput<Bk> {
    QwenScoringInput {
        prefix_ids: prompts.input_ids.clone(),
        prefix_mask: prompts.attention_mask.clone(),
        pixel_values: prompts.pixel_values.clone(),
        image_grid_thw: prompts.image_grid_thw.clone(),
        answer_ids: answers().0,
    }
}

fn packed_equals_separate(dir: &str) {
    let model = load::<B>(dir);
    let prompts = fixture_input::<B>(dir);
    let lens: Vec<usize> = prompts
        .attention_mask
        .iter()
        .map(|m| m.iter().filter(|&&v| v).count())
        .collect();
    assert_ne!(lens[0], lens[1], "prompts of different lengths");
    assert_ne!(prompts.image_grid_thw[0], prompts.image_grid_thw[1]);
    let logits = model.score_answers(scoring_input(&prompts)).unwrap();
    let [n_prefixes, n_answers, answer_len, vocab] = logits.dims();
    assert_eq!([n_prefixes, n_answers, answer_len], [2, 2, 5]);
    let packed = floats(logits);
    let (answer_ids, answer_lens) = answers();
    let mut worst = 0f32;
    for (p, prefix_answers) in answer_ids.iter().enumerate() {
        for (i, &len) in answer_lens.iter().enumerate() {
            let mut one = single_row(&prompts, p);
            let prefix_len = one.input_ids[0].len();
            one.input_ids[0].extend_from_slice(&prefix_answers[i][..len]);
            one.attention_mask[0].resize(prefix_len + len, true);
            let full = floats(model.forward(&one).unwrap());
            for t in 0..len {
                let want = &full[(prefix_len - 1 + t) * vocab..(prefix_len + t) * vocab];
                let at = ((p * n_answers + i) * answer_len + t) * vocab;
                let got = &packed[at..at + vocab];
                let d = got
                    .iter()
                    .zip(want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                worst = worst.max(d);
            }
        }
    }
    eprintln!("{dir}: packed vs separate max |Δlogit| {worst:e}");
    assert!(
        worst <= TOL,
        "{dir}: packed vs separate max |Δlogit| {worst:e}"
    );
}

#[test]
fn qwen2_vl_packed_scoring_equals_separate_forwards() {
    packed_equals_separate(FAMILIES[0]);
}

#[test]
fn qwen2_5_vl_packed_scoring_equals_separate_forwards() {
    packed_equals_separate(FAMILIES[1]);
}

#[test]
fn qwen3_vl_packed_scoring_with_deepstack_equals_separate_forwards() {
    packed_equals_separate(FAMILIES[2]);
}

#[test]
fn gradients_reach_the_vision_tower_through_scoring() {
    type A = Autodiff<B>;
    for dir in ["qwen2_5_vl", "qwen3_vl"] {
        let model = load::<A>(dir);
        let prompts = fixture_input::<A>(dir);
        let logits = model.score_answers(scoring_input(&prompts)).unwrap();
        let grads = logits.sum().backward();
        let patch = model
            .visual
            .patch_embed
            .weight
            .grad(&grads)
            .expect("patch embedding receives a gradient");
        let norm = patch.abs().sum().into_scalar();
        eprintln!("{dir}: |∂/∂ patch_embed| = {norm:e}");
        assert!(norm > 0.0, "{dir}: zero gradient at the patch embedding");
        if let Some(ds) = model.visual.deepstack_mergers.first() {
            let grad = ds
                .mlp_2
                .weight
                .grad(&grads)
                .expect("DeepStack merger gradient");
            let norm = grad.abs().sum().into_scalar();
            assert!(norm > 0.0, "{dir}: zero gradient through DeepStack");
        }
    }
}

#[test]
fn bad_scoring_layouts_are_refused() {
    let model = load::<B>("qwen2_vl");
    let prompts = fixture_input::<B>("qwen2_vl");
    let mut ragged = scoring_input(&prompts);
    ragged.answer_ids[1][0].pop();
    let msg = model.score_answers(ragged).unwrap_err().to_string();
    assert!(msg.contains("answer_ids"), "{msg}");
    let mut right_padded = scoring_input(&prompts);
    right_padded.prefix_mask[1].rotate_left(1);
    let msg = model.score_answers(right_padded).unwrap_err().to_string();
    assert!(msg.contains("left-padded"), "{msg}");
    let mut image_in_answer = scoring_input(&prompts);
    image_in_answer.answer_ids[0][0][0] = model.config.image_token_id as i64;
    let msg = model
        .score_answers(image_in_answer)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("image-pad"), "{msg}");
}
