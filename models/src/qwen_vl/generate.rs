//! KV-cached generation for Qwen-VL (HF `Qwen2VLForConditionalGeneration.generate`): the prompt,
//! re-packed to left padding, runs once with its M-RoPE positions; the shared decode loop
//! (`generate.rs`) then continues each row at `max prompt position + 1` (HF `rope_deltas`:
//! generated text after an image continues from the image's largest position).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::model::{QwenVl, QwenVlInput};
use crate::error::ModelError;
use crate::generate::{check_sampling, decode, left_pack, Prefilled};
use crate::generate::{Generation, GenerationConfig};
use crate::kv_cache::KvCache;

impl<B: Backend> QwenVl<B> {
    /// Generates up to `config.max_new_tokens` tokens after each prompt row, with the semantics
    /// of [`crate::Vlm::generate`]: left- or right-padded prompts (re-packed to left padding),
    /// greedy or top-p sampling, stop tokens, never the image-pad token. Decode step `s` of row
    /// `b` sits at position `max_prompt_position_b + 1 + s` on all three M-RoPE axes.
    pub fn generate(
        &self,
        input: QwenVlInput<B>,
        config: &GenerationConfig,
    ) -> Result<Generation, ModelError> {
        check_sampling(config)?;
        self.rope_index(&input)?; // shape checks before the re-pack
        let packed = left_pack(&input.input_ids, &input.attention_mask)?;
        let prefill = QwenVlInput {
            input_ids: packed.ids,
            attention_mask: packed.mask,
            pixel_values: input.pixel_values,
            image_grid_thw: input.image_grid_thw,
        };
        let index = self.rope_index(&prefill)?;
        let device = self.decoder.embed_tokens.weight.device();
        let positions = Tensor::<B, 3, Int>::from_data(
            TensorData::new(index.positions, [3, index.batch, index.seq]),
            &device,
        );
        let mut caches = KvCache::for_layers(self.decoder.layers.len());
        let hidden = self.forward_hidden(&prefill, positions, &mut caches)?;
        // max position + 1 = rope_deltas + real tokens.
        let next_positions = index
            .rope_deltas
            .iter()
            .zip(&packed.n_real)
            .map(|(&delta, &n)| delta + n as i64)
            .collect();
        let prefilled = Prefilled {
            logits: self.decoder.logits(hidden.narrow(1, index.seq - 1, 1)),
            caches,
            key_valid: prefill.attention_mask,
            next_positions,
        };
        Ok(decode(
            &self.decoder,
            prefilled,
            Some(self.config.image_token_id),
            config,
        ))
    }
}
