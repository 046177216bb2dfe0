//! Shared-prefix answer scoring, the cost core of FiRe-MPO (`shared/design/METHOD.md`, "Cost").
//!
//! Each prefix (image + prompt) is followed by all of its answers packed into one sequence:
//! `[prefix | answer 1 | answer 2 | …]`. Answer tokens see the prefix and their own earlier tokens,
//! never another answer, and take the positions they would have right after the prefix; so one
//! forward gives every answer exactly the logits of a separate `prefix + answer` forward, while the
//! image is encoded and the prefix run once. Logits are computed only at answer positions.
//! (The same packing is known as "tree attention" / shared-prefix packing, e.g. in
//! `sglang`'s RadixAttention and in prefix-sharing DPO trainers.)

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::checkpoint::{FullGraph, Trunk};
use crate::decoder::Decoder;
use crate::error::ModelError;
use crate::mask::{attention_bias, host_ints, int_tensor, positions_from_mask, RowLayout};
use crate::vlm::{Vlm, VlmInput};

/// Prefixes and the answers to score after each.
///
/// # Shapes
/// - `prefix_ids`: `[n_prefixes, prefix_len]`, **left**-padded so every prefix ends at the last column.
/// - `prefix_mask`: `[n_prefixes, prefix_len]`, 1 = token, 0 = padding; `None` = no padding.
/// - `pixel_values`: `[n_images, C, H, W]` for the image tokens of the prefixes (row-major order).
/// - `answer_ids`: `[n_prefixes, n_answers, answer_len]`, right-padded with any valid token id
///   (padded positions produce logits the caller masks out).
#[derive(Debug, Clone)]
pub struct ScoringInput<B: Backend> {
    pub prefix_ids: Tensor<B, 2, Int>,
    pub prefix_mask: Option<Tensor<B, 2, Int>>,
    pub pixel_values: Option<Tensor<B, 4>>,
    pub answer_ids: Tensor<B, 3, Int>,
}

/// [`ScoringInput`] with the ids on the host, what the training loop builds: scoring it reads
/// nothing back from the device (on a GPU each read-back is a sync).
#[derive(Debug, Clone)]
pub struct HostScoringInput<B: Backend> {
    /// `[n_prefixes][prefix_len]`, left-padded.
    pub prefix_ids: Vec<Vec<i64>>,
    /// `[n_prefixes][prefix_len]`, true = token.
    pub prefix_mask: Vec<Vec<bool>>,
    /// `[n_images, C, H, W]` for the image tokens of the prefixes (row-major order).
    pub pixel_values: Option<Tensor<B, 4>>,
    /// `[n_prefixes][n_answers][answer_len]`, right-padded with any valid id.
    pub answer_ids: Vec<Vec<Vec<i64>>>,
}

impl<B: Backend> ScoringInput<B> {
    /// The ids read back to the host.
    pub fn host(&self) -> Result<HostScoringInput<B>, ModelError> {
        let prefix = host_ints(&self.prefix_ids);
        let mask: Vec<Vec<bool>> = match &self.prefix_mask {
            Some(m) => host_ints(m)
                .into_iter()
                .map(|r| r.into_iter().map(|v| v != 0).collect())
                .collect(),
            None => prefix.iter().map(|r| vec![true; r.len()]).collect(),
        };
        let [n_prefixes, n_answers, answer_len] = self.answer_ids.dims();
        if n_prefixes != prefix.len() || answer_len == 0 || n_answers == 0 {
            return Err(ModelError::Input(format!(
                "answer_ids {:?} must be [n_prefixes = {}, n_answers > 0, answer_len > 0]",
                self.answer_ids.dims(),
                prefix.len()
            )));
        }
        let flat = host_ints(
            &self
                .answer_ids
                .clone()
                .reshape([n_prefixes * n_answers, answer_len]),
        );
        let answers: Vec<Vec<Vec<i64>>> =
            flat.chunks(n_answers).map(<[Vec<i64>]>::to_vec).collect();
        Ok(HostScoringInput {
            prefix_ids: prefix,
            prefix_mask: mask,
            pixel_values: self.pixel_values.clone(),
            answer_ids: answers,
        })
    }
}

/// Refuses prefixes that are not left-padded, non-empty and of one length, and answers that
/// are not `[n_prefixes][n_answers > 0][answer_len > 0]`.
fn check_layout(
    prefix: &[Vec<i64>],
    mask: &[Vec<bool>],
    answers: &[Vec<Vec<i64>>],
) -> Result<(), ModelError> {
    let prefix_len = prefix.first().map_or(0, Vec::len);
    if prefix.is_empty() || prefix.iter().any(|r| r.len() != prefix_len) {
        return Err(ModelError::Input(
            "prefix_ids must be a non-empty batch of rows of one length (left-pad them)".into(),
        ));
    }
    if mask.len() != prefix.len() || mask.iter().any(|r| r.len() != prefix_len) {
        return Err(ModelError::Input(
            "prefix_mask must have the shape of prefix_ids".into(),
        ));
    }
    for (p, row) in mask.iter().enumerate() {
        let first = row.iter().position(|&m| m);
        if first.is_none() || row[first.unwrap_or(0)..].iter().any(|&m| !m) {
            return Err(ModelError::Input(format!(
                "prefix {p} must be left-padded and non-empty (mask {row:?}): put padding before the prompt"
            )));
        }
    }
    let n_answers = answers.first().map_or(0, Vec::len);
    let answer_len = answers.first().and_then(|a| a.first()).map_or(0, Vec::len);
    if answers.len() != prefix.len()
        || n_answers == 0
        || answer_len == 0
        || answers
            .iter()
            .any(|a| a.len() != n_answers || a.iter().any(|t| t.len() != answer_len))
    {
        return Err(ModelError::Input(format!(
            "answer_ids must be [n_prefixes = {}][n_answers > 0][answer_len > 0], the same \
             n_answers for every prefix and answer_len for every answer (right-pad answers)",
            prefix.len()
        )));
    }
    Ok(())
}

/// Prefixes with their answers laid out as packed rows `[prefix | answer 1 | answer 2 | …]`,
/// shared by every model family's `score_answers`.
pub(crate) struct PackedAnswers {
    /// `[n_prefixes][total]`.
    pub ids: Vec<Vec<i64>>,
    /// Key validity and segments (0 = prefix, `i + 1` = answer `i`) of each packed row.
    pub rows: Vec<RowLayout>,
    pub prefix_len: usize,
    pub n_answers: usize,
    pub answer_len: usize,
}

impl PackedAnswers {
    /// Packs after checking the layout (left-padded prefixes, rectangular answers).
    pub fn new(
        prefix: &[Vec<i64>],
        mask: &[Vec<bool>],
        answers: &[Vec<Vec<i64>>],
    ) -> Result<Self, ModelError> {
        check_layout(prefix, mask, answers)?;
        let prefix_len = prefix[0].len();
        let n_answers = answers[0].len();
        let answer_len = answers[0][0].len();
        let total = prefix_len + n_answers * answer_len;
        let mut ids = Vec::with_capacity(prefix.len());
        let mut rows = Vec::with_capacity(prefix.len());
        for p in 0..prefix.len() {
            let mut row_ids = prefix[p].clone();
            let mut segment = vec![0u32; prefix_len];
            for (i, answer) in answers[p].iter().enumerate() {
                row_ids.extend_from_slice(answer);
                segment.extend(std::iter::repeat_n(i as u32 + 1, answer_len));
            }
            let mut valid = mask[p].clone();
            valid.resize(total, true);
            ids.push(row_ids);
            rows.push(RowLayout {
                key_valid: valid,
                key_segment: segment,
            });
        }
        Ok(Self {
            ids,
            rows,
            prefix_len,
            n_answers,
            answer_len,
        })
    }

    /// Packed row length.
    pub fn total(&self) -> usize {
        self.prefix_len + self.n_answers * self.answer_len
    }

    /// Positions of one packed row (one axis): the prefix's own, then `start + t` for token `t`
    /// of every answer (what each answer would get right after the prefix).
    pub fn row_positions(&self, prefix_positions: &[i64], start: i64) -> Vec<i64> {
        let mut pos = prefix_positions.to_vec();
        for _ in 0..self.n_answers {
            pos.extend((0..self.answer_len as i64).map(|t| start + t));
        }
        pos
    }

    /// Logits `[n_prefixes, n_answers, answer_len, vocab]` from the packed rows' hidden states
    /// `[n_prefixes, total, d_model]`, computed only at the answer predictors.
    pub fn answer_logits<B: Backend>(
        &self,
        decoder: &Decoder<B>,
        hidden: Tensor<B, 3>,
    ) -> Tensor<B, 4> {
        let index = predictor_index(self.prefix_len, self.n_answers, self.answer_len);
        let index = Tensor::<B, 1, Int>::from_data(
            TensorData::new(index, [self.n_answers * self.answer_len]),
            &hidden.device(),
        );
        let logits = decoder.logits(hidden.select(1, index));
        // [n_prefixes, n_answers · answer_len, vocab]
        let [n_prefixes, _, vocab] = logits.dims();
        logits.reshape([n_prefixes, self.n_answers, self.answer_len, vocab])
        // [n_prefixes, n_answers, answer_len, vocab]
    }
}

/// Positions in the packed row whose hidden state predicts answer token `t` of answer `i`:
/// the last prefix token for `t = 0`, else answer token `t - 1`.
fn predictor_index(prefix_len: usize, n_answers: usize, answer_len: usize) -> Vec<i64> {
    (0..n_answers)
        .flat_map(|i| {
            (0..answer_len).map(move |t| {
                if t == 0 {
                    prefix_len as i64 - 1
                } else {
                    (prefix_len + i * answer_len + t - 1) as i64
                }
            })
        })
        .collect()
}

impl<B: Backend> Vlm<B> {
    /// Scores every answer after its prefix in one packed forward.
    ///
    /// Returns logits `[n_prefixes, n_answers, answer_len, vocab]` where `[p, i, t]` is the
    /// distribution of `answer_ids[p, i, t]` (labels need no shift). Gradients flow through the
    /// prefix, the image encoder and the projector.
    pub fn score_answers(&self, input: ScoringInput<B>) -> Result<Tensor<B, 4>, ModelError> {
        let device = input.prefix_ids.device();
        self.score_answers_host(input.host()?, &device)
    }

    /// [`Vlm::score_answers`] on host ids (nothing read back from the device).
    pub fn score_answers_host(
        &self,
        input: HostScoringInput<B>,
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, ModelError> {
        self.score_answers_host_with(input, device, &mut FullGraph)
    }

    /// [`Vlm::score_answers_host`] with the decoder's layers run by `trunk` ([`Checkpointed`]:
    /// activation checkpointing for training).
    ///
    /// [`Checkpointed`]: crate::Checkpointed
    pub fn score_answers_host_with(
        &self,
        input: HostScoringInput<B>,
        device: &B::Device,
        trunk: &mut (impl Trunk<B> + ?Sized),
    ) -> Result<Tensor<B, 4>, ModelError> {
        let device = device.clone();
        let packed = PackedAnswers::new(&input.prefix_ids, &input.prefix_mask, &input.answer_ids)?;
        let prefix_positions = positions_from_mask(&input.prefix_mask);
        let positions: Vec<Vec<i64>> = prefix_positions
            .iter()
            .zip(&input.prefix_mask)
            .map(|(pos, m)| {
                let n_real = m.iter().filter(|&&m| m).count() as i64;
                packed.row_positions(pos, n_real)
            })
            .collect();
        let total = packed.total();
        let embeds = self.embed_inputs(&packed.ids, input.pixel_values, &device)?;
        let bias = attention_bias::<B>(&packed.rows, 0, total, &device);
        let tables = self
            .decoder
            .rope
            .tables(int_tensor::<B>(&positions, &device));
        let hidden = trunk.run(&self.decoder, embeds, &tables, bias, None)?;
        Ok(packed.answer_logits(&self.decoder, hidden))
    }

    /// The baseline layout: one full `prefix + answer` sequence per answer (image re-encoded per
    /// sequence), same output as [`Vlm::score_answers`]. For tests and benchmarks; needs exactly one
    /// image per prefix when images are given.
    pub fn score_answers_separately(
        &self,
        input: ScoringInput<B>,
    ) -> Result<Tensor<B, 4>, ModelError> {
        let device = input.prefix_ids.device();
        let host = input.host()?;
        check_layout(&host.prefix_ids, &host.prefix_mask, &host.answer_ids)?;
        let n_prefixes = host.prefix_ids.len();
        let prefix_len = host.prefix_ids[0].len();
        let n_answers = host.answer_ids[0].len();
        let answer_len = host.answer_ids[0][0].len();
        let mut ids = Vec::new();
        let mut mask = Vec::new();
        for p in 0..n_prefixes {
            for answer in &host.answer_ids[p] {
                ids.push([host.prefix_ids[p].clone(), answer.clone()].concat());
                let mut m: Vec<i64> = host.prefix_mask[p].iter().map(|&b| i64::from(b)).collect();
                m.resize(prefix_len + answer_len, 1);
                mask.push(m);
            }
        }
        let pixel_values = match input.pixel_values {
            Some(px) => {
                let [n_images, c, h, w] = px.dims();
                if n_images != n_prefixes {
                    return Err(ModelError::Input(format!(
                        "separate scoring needs one image per prefix, got {n_images} for {n_prefixes}"
                    )));
                }
                let px = px.unsqueeze_dim::<5>(1).repeat_dim(1, n_answers);
                Some(px.reshape([n_prefixes * n_answers, c, h, w]))
                // [n_prefixes · n_answers, C, H, W]
            }
            None => None,
        };
        let input = VlmInput {
            input_ids: int_tensor::<B>(&ids, &device),
            pixel_values,
            attention_mask: Some(int_tensor::<B>(&mask, &device)),
        };
        let hidden = self.forward_hidden(input, &mut [])?;
        let index: Vec<i64> = (0..answer_len as i64)
            .map(|t| prefix_len as i64 - 1 + t)
            .collect();
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [answer_len]), &device);
        let logits = self.decoder.logits(hidden.select(1, index));
        // [n_prefixes · n_answers, answer_len, vocab]
        let vocab = logits.dims()[2];
        Ok(logits.reshape([n_prefixes, n_answers, answer_len, vocab]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predictors_point_at_the_previous_token() {
        // prefix of 3, two answers of 2: answer 0 at 3..5, answer 1 at 5..7.
        assert_eq!(predictor_index(3, 2, 2), vec![2, 3, 2, 5]);
    }
}
