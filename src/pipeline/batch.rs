//! Packs token-id lists into the model's shared-prefix scoring input: prompts left-padded (so
//! every prompt ends at the last column, where answers attach), answers right-padded.

use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// Prompts and the answers scored after each, as host ids in the packed layout every model
/// family's shared-prefix scoring takes ([`super::model::Model::score_answers`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoringIds {
    /// `[n_prompts][prefix_len]`, left-padded so every prompt ends at the last column.
    pub prefix_ids: Vec<Vec<i64>>,
    /// `[n_prompts][prefix_len]`, true at real tokens.
    pub prefix_mask: Vec<Vec<bool>>,
    /// `[n_prompts][n_answers][answer_len]`, right-padded with the pad id.
    pub answer_ids: Vec<Vec<Vec<i64>>>,
}

impl ScoringIds {
    /// `answer_ids` as a tensor `[n_prompts, n_answers, answer_len]`.
    pub fn answer_tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 3, Int> {
        let n_answers = self.answer_ids.first().map_or(0, Vec::len);
        let answer_len = self
            .answer_ids
            .first()
            .and_then(|a| a.first())
            .map_or(0, Vec::len);
        let flat: Vec<i64> = self
            .answer_ids
            .iter()
            .flatten()
            .flatten()
            .copied()
            .collect();
        let shape = [self.answer_ids.len(), n_answers, answer_len];
        Tensor::from_data(TensorData::new(flat, shape), device)
    }
}

/// A scoring input with the answer labels and masks that go with it.
#[derive(Debug, Clone)]
pub struct ScoringBatch<B: Backend> {
    /// The ids the model scores.
    pub packed: ScoringIds,
    /// Answer token ids `[n_prompts, n_answers, answer_len]` (padding holds `pad`).
    pub labels: Tensor<B, 3, Int>,
    /// 1 at real answer tokens `[n_prompts, n_answers, answer_len]`.
    pub answer_mask: Tensor<B, 3>,
}

/// Prompts left-padded with `pad` to the longest (every prompt ends at the last column, where
/// answers attach and generation continues), and their masks (true = token).
pub fn left_pad(prompts: &[Vec<i64>], pad: i64) -> (Vec<Vec<i64>>, Vec<Vec<bool>>) {
    let width = prompts.iter().map(Vec::len).max().unwrap_or(0);
    prompts
        .iter()
        .map(|p| {
            let padding = width - p.len();
            (
                [vec![pad; padding], p.clone()].concat(),
                [vec![false; padding], vec![true; p.len()]].concat(),
            )
        })
        .unzip()
}

/// Builds the batch. `answers[p]` are the answers scored after prompt `p` (same count for every
/// prompt).
pub fn scoring_batch<B: Backend>(
    prompts: &[Vec<i64>],
    answers: &[Vec<Vec<i64>>],
    pad: i64,
    device: &B::Device,
) -> ScoringBatch<B> {
    let n_answers = answers.first().map_or(0, Vec::len);
    assert!(
        answers.iter().all(|a| a.len() == n_answers),
        "every prompt needs the same number of answers"
    );
    let answer_len = answers.iter().flatten().map(Vec::len).max().unwrap_or(0);
    let (prefix_ids, prefix_mask) = left_pad(prompts, pad);
    let answer_ids: Vec<Vec<Vec<i64>>> = answers
        .iter()
        .map(|row| {
            row.iter()
                .map(|a| [a.clone(), vec![pad; answer_len - a.len()]].concat())
                .collect()
        })
        .collect();
    let mask: Vec<f32> = answers
        .iter()
        .flatten()
        .flat_map(|a| (0..answer_len).map(move |t| if t < a.len() { 1.0 } else { 0.0 }))
        .collect();
    let packed = ScoringIds {
        prefix_ids,
        prefix_mask,
        answer_ids,
    };
    let shape3 = [prompts.len(), n_answers, answer_len];
    ScoringBatch {
        labels: packed.answer_tensor(device),
        answer_mask: Tensor::from_data(TensorData::new(mask, shape3), device),
        packed,
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
            0,
            &device,
        );
        assert_eq!(batch.packed.prefix_ids, vec![vec![5, 6], vec![0, 7]]);
        assert_eq!(
            batch.packed.prefix_mask,
            vec![vec![true, true], vec![false, true]]
        );
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
