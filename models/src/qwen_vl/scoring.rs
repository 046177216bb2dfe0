//! Shared-prefix answer scoring for Qwen-VL: the packing of [`crate::Vlm::score_answers`]
//! (`[prefix | answer 1 | answer 2 | …]`, answers see the prefix and themselves only, logits only
//! at answer positions) with M-RoPE positions: the prefix keeps `get_rope_index`'s 3-D positions
//! and token `t` of every answer sits at `max prefix position + 1 + t` on all three axes, which
//! is what HF gives text right after the prompt.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::model::{QwenVl, QwenVlInput};
use super::rope_index::rope_index;
use crate::checkpoint::{FullGraph, Trunk};
use crate::error::ModelError;
use crate::mask::attention_bias;
use crate::scoring::PackedAnswers;

/// Prefixes (image + prompt) and the answers to score after each, as host ids.
///
/// - `prefix_ids`, `prefix_mask`: `[n_prefixes][prefix_len]`, **left**-padded; mask true = token.
/// - `pixel_values`: `[n_patches, C·T·p·p]`, all prefixes' images in order; `None` for text only.
/// - `image_grid_thw`: one `[t, h, w]` per image, in order.
/// - `answer_ids`: `[n_prefixes][n_answers][answer_len]`, right-padded with any valid id (padded
///   positions produce logits the caller masks out).
#[derive(Debug, Clone)]
pub struct QwenScoringInput<B: Backend> {
    pub prefix_ids: Vec<Vec<i64>>,
    pub prefix_mask: Vec<Vec<bool>>,
    pub pixel_values: Option<Tensor<B, 2>>,
    pub image_grid_thw: Vec<[usize; 3]>,
    pub answer_ids: Vec<Vec<Vec<i64>>>,
}

impl<B: Backend> QwenVl<B> {
    /// Scores every answer after its prefix in one packed forward.
    ///
    /// Returns logits `[n_prefixes, n_answers, answer_len, vocab]` where `[p, i, t]` is the
    /// distribution of `answer_ids[p][i][t]` (labels need no shift). Gradients flow through the
    /// prefix and the vision tower; images are encoded once.
    pub fn score_answers(&self, input: QwenScoringInput<B>) -> Result<Tensor<B, 4>, ModelError> {
        self.score_answers_with(input, &mut FullGraph)
    }

    /// [`QwenVl::score_answers`] with the decoder's layers run by `trunk` ([`Checkpointed`]:
    /// activation checkpointing for training).
    ///
    /// [`Checkpointed`]: crate::Checkpointed
    pub fn score_answers_with(
        &self,
        input: QwenScoringInput<B>,
        trunk: &mut (impl Trunk<B> + ?Sized),
    ) -> Result<Tensor<B, 4>, ModelError> {
        let packed = PackedAnswers::new(&input.prefix_ids, &input.prefix_mask, &input.answer_ids)?;
        let image_token = self.config.image_token_id as i64;
        if input
            .answer_ids
            .iter()
            .flatten()
            .flatten()
            .any(|&t| t == image_token)
        {
            return Err(ModelError::Input(format!(
                "answer_ids contain the image-pad token (id {image_token}); images belong in the prefix"
            )));
        }
        let index = rope_index(
            &input.prefix_ids,
            &input.prefix_mask,
            &input.image_grid_thw,
            image_token,
            self.config.vision.spatial_merge_size,
        )?;
        let (n, prefix_len, total) = (index.batch, index.seq, packed.total());
        let mut positions = Vec::with_capacity(3 * n * total);
        for axis in 0..3 {
            for p in 0..n {
                let n_real = input.prefix_mask[p].iter().filter(|&&m| m).count() as i64;
                // max prefix position + 1
                let start = index.rope_deltas[p] + n_real;
                let row = (axis * n + p) * prefix_len;
                positions
                    .extend(packed.row_positions(&index.positions[row..row + prefix_len], start));
            }
        }
        let device = self.decoder.embed_tokens.weight.device();
        let positions =
            Tensor::<B, 3, Int>::from_data(TensorData::new(positions, [3, n, total]), &device);
        let packed_input = QwenVlInput {
            input_ids: packed.ids.clone(),
            attention_mask: packed.rows.iter().map(|r| r.key_valid.clone()).collect(),
            pixel_values: input.pixel_values,
            image_grid_thw: input.image_grid_thw,
        };
        let (embeds, deepstack) = self.embed_with_deepstack(&packed_input)?;
        let bias = attention_bias::<B>(&packed.rows, 0, total, &device);
        let tables = self.rope_tables(positions);
        let hidden = trunk.run(&self.decoder, embeds, &tables, bias, deepstack.as_ref())?;
        Ok(packed.answer_logits(&self.decoder, hidden))
    }
}
