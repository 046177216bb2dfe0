//! Packs token-id lists into the model's shared-prefix scoring input: prompts left-padded (so
//! every prompt ends at the last column, where answers attach), answers right-padded.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};
use firempo_models::ScoringInput;

/// A scoring input with the answer labels and masks that go with it.
#[derive(Debug, Clone)]
pub struct ScoringBatch<B: Backend> {
    /// What [`firempo_models::Vlm::score_answers`] takes.
    pub input: ScoringInput<B>,
    /// Answer token ids `[n_prompts, n_answers, answer_len]` (padding holds `pad`).
    pub labels: Tensor<B, 3, Int>,
    /// 1 at real answer tokens `[n_prompts, n_answers, answer_len]`.
    pub answer_mask: Tensor<B, 3>,
}

/// Builds the batch. `answers[p]` are the answers scored after prompt `p` (same count for every
/// prompt); `pixels` holds one image per prompt, in prompt order.
pub fn scoring_batch<B: Backend>(
    prompts: &[Vec<i64>],
    answers: &[Vec<Vec<i64>>],
    pixels: Option<Tensor<B, 4>>,
    pad: i64,
    device: &B::Device,
) -> ScoringBatch<B> {
    let n_prompts = prompts.len();
    let n_answers = answers.first().map_or(0, Vec::len);
    assert!(
        answers.iter().all(|a| a.len() == n_answers),
        "every prompt needs the same number of answers"
    );
    let prefix_len = prompts.iter().map(Vec::len).max().unwrap_or(0);
    let answer_len = answers.iter().flatten().map(Vec::len).max().unwrap_or(0);
    let mut prefix_ids = Vec::with_capacity(n_prompts * prefix_len);
    let mut prefix_mask = Vec::with_capacity(n_prompts * prefix_len);
    for prompt in prompts {
        let padding = prefix_len - prompt.len();
        prefix_ids.extend(std::iter::repeat_n(pad, padding).chain(prompt.iter().copied()));
        prefix_mask
            .extend(std::iter::repeat_n(0i64, padding).chain(std::iter::repeat_n(1, prompt.len())));
    }
    let mut labels = Vec::with_capacity(n_prompts * n_answers * answer_len);
    let mut mask = Vec::with_capacity(labels.capacity());
    for answer in answers.iter().flatten() {
        let padding = answer_len - answer.len();
        labels.extend(
            answer
                .iter()
                .copied()
                .chain(std::iter::repeat_n(pad, padding)),
        );
        mask.extend(
            std::iter::repeat_n(1.0f32, answer.len()).chain(std::iter::repeat_n(0.0, padding)),
        );
    }
    let ints2 = |v: Vec<i64>| {
        Tensor::<B, 2, Int>::from_data(TensorData::new(v, [n_prompts, prefix_len]), device)
    };
    let shape3 = [n_prompts, n_answers, answer_len];
    let labels = Tensor::<B, 3, Int>::from_data(TensorData::new(labels, shape3), device);
    ScoringBatch {
        input: ScoringInput {
            prefix_ids: ints2(prefix_ids),
            prefix_mask: Some(ints2(prefix_mask)),
            pixel_values: pixels,
            answer_ids: labels.clone(),
        },
        labels,
        answer_mask: Tensor::from_data(TensorData::new(mask, shape3), device),
    }
}

/// Right-pads per-answer integer rows (e.g. phrase ids) to `[n_prompts, n_answers, len]`.
pub fn pad_rows<B: Backend>(
    rows: &[Vec<Vec<i64>>],
    len: usize,
    device: &B::Device,
) -> Tensor<B, 3, Int> {
    let n_prompts = rows.len();
    let n_answers = rows.first().map_or(0, Vec::len);
    let mut data = Vec::with_capacity(n_prompts * n_answers * len);
    for row in rows.iter().flatten() {
        data.extend(row.iter().copied().chain(std::iter::repeat(0)).take(len));
    }
    Tensor::from_data(TensorData::new(data, [n_prompts, n_answers, len]), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn prompts_left_padded_answers_right_padded() {
        let device = Default::default();
        let batch = scoring_batch::<NdArray>(
            &[vec![5, 6], vec![7]],
            &[vec![vec![1, 2, 3]], vec![vec![4]]],
            None,
            0,
            &device,
        );
        let prefix: Vec<i64> = batch.input.prefix_ids.into_data().to_vec().unwrap();
        assert_eq!(prefix, vec![5, 6, 0, 7]);
        let mask: Vec<i64> = batch
            .input
            .prefix_mask
            .unwrap()
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(mask, vec![1, 1, 0, 1]);
        let labels: Vec<i64> = batch.labels.into_data().to_vec().unwrap();
        assert_eq!(labels, vec![1, 2, 3, 4, 0, 0]);
        let answer_mask: Vec<f32> = batch.answer_mask.into_data().to_vec().unwrap();
        assert_eq!(answer_mask, vec![1.0, 1.0, 1.0, 1.0, 0.0, 0.0]);
        let phrases: Vec<i64> = pad_rows::<NdArray>(&[vec![vec![0, 1]], vec![vec![2]]], 3, &device)
            .into_data()
            .to_vec()
            .unwrap();
        assert_eq!(phrases, vec![0, 1, 0, 2, 0, 0]);
    }
}
