//! The LLaVA composition: vision tower → projector → decoder, with image features written into the
//! image-token positions of the prompt (HF `modeling_llava.py` `LlavaModel.forward`,
//! `get_image_features`, `masked_scatter`; candle `llava/mod.rs`).

use burn::module::Module;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::config::{FeatureSelect, VlmConfig};
use crate::decoder::Decoder;
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::lora::LoraConfig;
use crate::mask::{attention_bias, host_ints, int_tensor, positions_from_mask, RowLayout};
use crate::projector::Projector;
use crate::vision::VisionTransformer;

/// The id original-LLaVA prompts carry for a whole image (`llava/constants.py`
/// `IMAGE_TOKEN_INDEX`, written by `tokenizer_image_token`): one per image, expanded by the model to
/// the image's feature positions.
pub const IMAGE_TOKEN_INDEX: i64 = -200;

/// Host token ids and attention mask of a batch, `[batch][seq_len]` each.
pub type HostIds = (Vec<Vec<i64>>, Vec<Vec<bool>>);

/// One batch of prompts, optionally with images.
///
/// # Shapes
/// - `input_ids`: `[batch, seq_len]`; each image occupies either `config.image_tokens_per_image()`
///   consecutive `image_token_id` positions (the expanded `<image>` of the HF processor) or one
///   [`IMAGE_TOKEN_INDEX`] (original LLaVA), which [`Vlm::forward`] expands (see
///   [`expand_image_placeholders`]).
/// - `pixel_values`: `[n_images, C, H, W]`, images in the order their tokens appear (row-major).
/// - `attention_mask`: `[batch, seq_len]`, 1 = token, 0 = padding (left or right); `None` = all 1.
#[derive(Debug, Clone)]
pub struct VlmInput<B: Backend> {
    pub input_ids: Tensor<B, 2, Int>,
    pub pixel_values: Option<Tensor<B, 4>>,
    pub attention_mask: Option<Tensor<B, 2, Int>>,
}

impl<B: Backend> VlmInput<B> {
    pub fn new(input_ids: Tensor<B, 2, Int>) -> Self {
        Self {
            input_ids,
            pixel_values: None,
            attention_mask: None,
        }
    }

    pub fn with_pixels(mut self, pixel_values: Tensor<B, 4>) -> Self {
        self.pixel_values = Some(pixel_values);
        self
    }

    pub fn with_attention_mask(mut self, mask: Tensor<B, 2, Int>) -> Self {
        self.attention_mask = Some(mask);
        self
    }

    /// Host copies of ids and mask.
    pub(crate) fn host(&self) -> (Vec<Vec<i64>>, Vec<Vec<bool>>) {
        let ids = host_ints(&self.input_ids);
        let mask = match &self.attention_mask {
            Some(m) => host_ints(m)
                .into_iter()
                .map(|r| r.into_iter().map(|v| v != 0).collect())
                .collect(),
            None => ids.iter().map(|r| vec![true; r.len()]).collect(),
        };
        (ids, mask)
    }
}

/// Expands every [`IMAGE_TOKEN_INDEX`] into `per_image` copies of `image_token_id`, with the mask
/// value of the placeholder, as LLaVA's `prepare_inputs_labels_for_multimodal` splices the image
/// features in. Rows that come out shorter than the longest are padded (id 0, mask 0) on the left
/// when the batch is left-padded (some row starts with padding and none ends with it), else on the
/// right (LLaVA's default `tokenizer_padding_side`). Positions follow from the mask, so every real
/// token keeps the position LLaVA gives it. Rows without a placeholder are returned unchanged.
pub fn expand_image_placeholders(
    ids: &[Vec<i64>],
    mask: &[Vec<bool>],
    per_image: usize,
    image_token_id: usize,
) -> HostIds {
    let mut out_ids = Vec::with_capacity(ids.len());
    let mut out_mask = Vec::with_capacity(ids.len());
    for (row, m) in ids.iter().zip(mask) {
        let n = row.iter().filter(|&&t| t == IMAGE_TOKEN_INDEX).count();
        let mut r = Vec::with_capacity(row.len() + n * per_image.saturating_sub(1));
        let mut rm = Vec::with_capacity(r.capacity());
        for (&t, &v) in row.iter().zip(m) {
            let copies = if t == IMAGE_TOKEN_INDEX { per_image } else { 1 };
            let t = if t == IMAGE_TOKEN_INDEX {
                image_token_id as i64
            } else {
                t
            };
            r.extend(std::iter::repeat_n(t, copies));
            rm.extend(std::iter::repeat_n(v, copies));
        }
        out_ids.push(r);
        out_mask.push(rm);
    }
    let longest = out_ids.iter().map(Vec::len).max().unwrap_or(0);
    let left = out_mask.iter().any(|m| m.first() == Some(&false))
        && !out_mask.iter().any(|m| m.last() == Some(&false));
    for (r, m) in out_ids.iter_mut().zip(out_mask.iter_mut()) {
        let pad = longest - r.len();
        if left {
            r.splice(0..0, std::iter::repeat_n(0, pad));
            m.splice(0..0, std::iter::repeat_n(false, pad));
        } else {
            r.extend(std::iter::repeat_n(0, pad));
            m.extend(std::iter::repeat_n(false, pad));
        }
    }
    (out_ids, out_mask)
}

/// A LLaVA-style vision-language model (or a text-only causal LM when `vision` is `None`).
#[derive(Module, Debug)]
pub struct Vlm<B: Backend> {
    pub vision: Option<VisionTransformer<B>>,
    pub projector: Option<Projector<B>>,
    pub decoder: Decoder<B>,
    #[module(skip)]
    pub config: VlmConfig,
    /// The adapters' hyperparameters, when [`Vlm::with_lora`] attached some.
    #[module(skip)]
    pub lora: Option<LoraConfig>,
}

impl VlmConfig {
    /// Builds a randomly initialized model (weights come from [`crate::load_pretrained`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> Vlm<B> {
        let vision = self
            .vision
            .as_ref()
            .map(|v| VisionTransformer::init(v, device));
        let projector = self.vision.as_ref().map(|v| {
            Projector::init_kind(
                self.projector_kind,
                v.d_model * self.vision_feature_layers.len(),
                self.text.d_model,
                self.projector_bias,
                self.projector_activation,
                device,
            )
        });
        Vlm {
            vision,
            projector,
            decoder: Decoder::init(&self.text, device),
            config: self.clone(),
            lora: None,
        }
    }
}

impl<B: Backend> Vlm<B> {
    /// Projected image features `[n_images, image_tokens_per_image, d_text]`.
    pub fn image_features(&self, pixel_values: Tensor<B, 4>) -> Result<Tensor<B, 3>, ModelError> {
        let (Some(vision), Some(projector), Some(vc)) =
            (&self.vision, &self.projector, &self.config.vision)
        else {
            return Err(ModelError::Input(
                "this model has no vision tower; pass no pixel_values".into(),
            ));
        };
        let [_, c, h, w] = pixel_values.dims();
        if c != vc.num_channels || h != vc.image_size || w != vc.image_size {
            return Err(ModelError::Input(format!(
                "pixel_values are [_, {c}, {h}, {w}] but the vision tower expects [_, {}, {s}, {s}]; preprocess with the checkpoint's preprocessor_config.json",
                vc.num_channels,
                s = vc.image_size
            )));
        }
        let states = vision.hidden_states(pixel_values, &self.config.resolved_feature_layers());
        let mut features = Tensor::cat(states, 2);
        // [n_images, n_positions, d_vision · n_feature_layers]
        if self.config.vision_feature_select == FeatureSelect::Default {
            let n = features.dims()[1];
            features = features.narrow(1, 1, n - 1);
        }
        Ok(projector.forward(features))
    }

    /// Input embeddings `[batch, seq_len, d_model]`: token embeddings with the image features
    /// scattered into the image-token positions in row-major order (HF `masked_scatter`).
    pub fn embed_inputs(
        &self,
        ids: &[Vec<i64>],
        pixel_values: Option<Tensor<B, 4>>,
        device: &B::Device,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let image_id = self.config.image_token_id as i64;
        let vocab = self.config.text.vocab_size as i64;
        let batch = ids.len();
        let seq_len = ids.first().map_or(0, Vec::len);
        if ids.iter().flatten().any(|&t| t == IMAGE_TOKEN_INDEX) {
            return Err(ModelError::Input(format!(
                "embed_inputs got unexpanded image placeholders ({IMAGE_TOKEN_INDEX}); expand them \
                 with `Vlm::host_input` / `expand_image_placeholders` first (`Vlm::forward` does)"
            )));
        }
        if let Some(bad) = ids
            .iter()
            .flatten()
            .find(|&&t| t < 0 || (t >= vocab && t != image_id))
        {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary (size {vocab})"
            )));
        }
        let n_image_tokens = ids.iter().flatten().filter(|&&t| t == image_id).count();
        // Image positions embed token 0, then get overwritten.
        let safe: Vec<Vec<i64>> = ids
            .iter()
            .map(|r| {
                r.iter()
                    .map(|&t| if t == image_id { 0 } else { t })
                    .collect()
            })
            .collect();
        let text = self.decoder.embed(int_tensor::<B>(&safe, device));
        let Some(pixels) = pixel_values else {
            if n_image_tokens > 0 && self.vision.is_some() {
                return Err(ModelError::Input(format!(
                    "the prompt has {n_image_tokens} image tokens (id {image_id}) but no pixel_values were given"
                )));
            }
            return Ok(text);
        };
        let features = self.image_features(pixels)?;
        let [n_images, per_image, d_model] = features.dims();
        if n_image_tokens != n_images * per_image {
            return Err(ModelError::Input(format!(
                "the prompt has {n_image_tokens} image tokens (id {image_id}) but {n_images} image(s) need {}; \
                 put the image placeholder in the prompt and expand it to {per_image} tokens per image (see chat.rs)",
                n_images * per_image
            )));
        }
        let n_text = batch * seq_len;
        let mut next_feature = n_text as i64;
        let index: Vec<i64> = ids
            .iter()
            .flatten()
            .enumerate()
            .map(|(i, &t)| {
                if t == image_id {
                    next_feature += 1;
                    next_feature - 1
                } else {
                    i as i64
                }
            })
            .collect();
        let rows = Tensor::cat(
            vec![
                text.reshape([n_text, d_model]),
                features.reshape([n_images * per_image, d_model]),
            ],
            0,
        );
        // [batch·seq_len + n_image_tokens, d_model]
        let index = Tensor::<B, 1, Int>::from_data(TensorData::new(index, [n_text]), device);
        Ok(rows.select(0, index).reshape([batch, seq_len, d_model]))
        // [batch, seq_len, d_model]
    }

    /// Host ids and mask of `input` with every [`IMAGE_TOKEN_INDEX`] expanded to this model's
    /// feature positions per image (the layout [`Vlm::forward`] returns logits in).
    pub fn host_input(&self, input: &VlmInput<B>) -> Result<HostIds, ModelError> {
        let (ids, mask) = input.host();
        self.expand_host_ids(ids, mask)
    }

    /// Host ids and mask with every [`IMAGE_TOKEN_INDEX`] expanded (see [`Vlm::host_input`]).
    pub fn expand_host_ids(
        &self,
        ids: Vec<Vec<i64>>,
        mask: Vec<Vec<bool>>,
    ) -> Result<HostIds, ModelError> {
        if !ids.iter().flatten().any(|&t| t == IMAGE_TOKEN_INDEX) {
            return Ok((ids, mask));
        }
        if self.vision.is_none() {
            return Err(ModelError::Input(format!(
                "the prompt has image placeholders ({IMAGE_TOKEN_INDEX}) but this model has no vision tower"
            )));
        }
        Ok(expand_image_placeholders(
            &ids,
            &mask,
            self.config.image_tokens_per_image(),
            self.config.image_token_id,
        ))
    }

    /// Full forward: logits `[batch, seq_len, vocab]` at every position; with
    /// [`IMAGE_TOKEN_INDEX`] placeholders in the ids, `seq_len` is that of the expanded ids
    /// ([`Vlm::host_input`]).
    pub fn forward(&self, input: VlmInput<B>) -> Result<Tensor<B, 3>, ModelError> {
        let hidden = self.forward_hidden(input, &mut [])?;
        Ok(self.decoder.logits(hidden))
    }

    /// Normalized decoder hidden states `[batch, seq_len, d_model]`; with one [`KvCache`] per layer
    /// (empty caches) the prompt's keys and values are kept for [`Vlm::generate`].
    pub fn forward_hidden(
        &self,
        input: VlmInput<B>,
        caches: &mut [KvCache<B>],
    ) -> Result<Tensor<B, 3>, ModelError> {
        let device = input.input_ids.device();
        let (ids, mask) = self.host_input(&input)?;
        self.forward_hidden_host(&ids, &mask, input.pixel_values, caches, &device)
    }

    /// [`Vlm::forward_hidden`] on host ids and mask `[batch][seq]` (placeholders already
    /// expanded, [`Vlm::expand_host_ids`]): nothing is read back from the device.
    pub fn forward_hidden_host(
        &self,
        ids: &[Vec<i64>],
        mask: &[Vec<bool>],
        pixel_values: Option<Tensor<B, 4>>,
        caches: &mut [KvCache<B>],
        device: &B::Device,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let device = device.clone();
        let embeds = self.embed_inputs(ids, pixel_values, &device)?;
        let seq_len = ids.first().map_or(0, Vec::len);
        let rows: Vec<RowLayout> = mask
            .iter()
            .map(|m| RowLayout {
                key_valid: m.clone(),
                key_segment: vec![0; seq_len],
            })
            .collect();
        let bias = attention_bias::<B>(&rows, 0, seq_len, &device);
        let positions = int_tensor::<B>(&positions_from_mask(mask), &device);
        Ok(self.decoder.forward(embeds, positions, bias, caches))
    }

    crate::loading::adapter::inherent_lora_methods!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_in_place_and_pad_on_the_padded_side() {
        let p = IMAGE_TOKEN_INDEX;
        // Right-padded batch; row 1 has one image fewer, so it gains two more padding slots.
        let ids = vec![vec![1, p, 2, p], vec![1, p, 2, 0]];
        let mask = vec![vec![true; 4], vec![true, true, true, false]];
        let (got, m) = expand_image_placeholders(&ids, &mask, 3, 9);
        assert_eq!(
            got,
            vec![vec![1, 9, 9, 9, 2, 9, 9, 9], vec![1, 9, 9, 9, 2, 0, 0, 0]]
        );
        assert_eq!(m[1], [true, true, true, true, true, false, false, false]);
        // Left-padded: the shorter row is padded on the left, its tokens keep their positions.
        let ids = vec![vec![1, p, p], vec![0, 1, p]];
        let mask = vec![vec![true; 3], vec![false, true, true]];
        let (got, m) = expand_image_placeholders(&ids, &mask, 2, 9);
        assert_eq!(got, vec![vec![1, 9, 9, 9, 9], vec![0, 0, 1, 9, 9]]);
        assert_eq!(m[1], [false, false, true, true, true]);
        // Already expanded ids pass unchanged.
        let ids = vec![vec![1, 9, 9, 2]];
        let mask = vec![vec![true; 4]];
        assert_eq!(expand_image_placeholders(&ids, &mask, 2, 9), (ids, mask));
    }
}
