//! The Qwen-VL model (HF `Qwen2VLForConditionalGeneration`, `Qwen2_5_VLForConditionalGeneration`):
//! vision tower → merged image tokens written over the image-pad embeddings → the Qwen2 decoder
//! ([`Decoder`]; Qwen3-VL: Qwen3 decoder with q/k RMSNorm and DeepStack features added after
//! its first layers) with multimodal RoPE ([`crate::Rope::mrope_tables`]) → logits.

use burn::module::Module;
use burn::nn::RmsNormConfig;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use super::config::QwenVlConfig;
use super::rope_index::{rope_index, RopeIndex};
use super::vision::QwenVisionTransformer;
use crate::decoder::{Decoder, DeepStack};
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::lora::LoraConfig;
use crate::mask::{attention_bias, int_tensor, RowLayout};
use crate::rope::RopeTables;

/// One batch as a Hugging Face Qwen-VL processor produces it.
///
/// - `input_ids`, `attention_mask`: `[batch][seq]` on the host (M-RoPE positions are built there,
///   as HF does); `attention_mask` true = token, false = padding (left or right).
/// - `pixel_values`: `[n_patches, C·T·p·p]`, all images' patches concatenated in the order their
///   image-pad runs appear (row-major over the batch); `None` for text-only batches.
/// - `image_grid_thw`: one `[t, h, w]` (in patches) per image.
#[derive(Debug, Clone)]
pub struct QwenVlInput<B: Backend> {
    pub input_ids: Vec<Vec<i64>>,
    pub attention_mask: Vec<Vec<bool>>,
    pub pixel_values: Option<Tensor<B, 2>>,
    pub image_grid_thw: Vec<[usize; 3]>,
}

#[derive(Module, Debug)]
pub struct QwenVl<B: Backend> {
    pub visual: QwenVisionTransformer<B>,
    pub decoder: Decoder<B>,
    #[module(skip)]
    pub config: QwenVlConfig,
    /// The adapters' hyperparameters, when [`QwenVl::with_lora`] attached some.
    #[module(skip)]
    pub lora: Option<LoraConfig>,
}

impl QwenVlConfig {
    /// A randomly initialised model (weights come from [`crate::load_qwen_vl`]).
    pub fn init<B: Backend>(&self, device: &B::Device) -> QwenVl<B> {
        let mut decoder = Decoder::init(&self.text, device);
        if self.qk_norm {
            let norm = || {
                Some(
                    RmsNormConfig::new(self.text.head_dim)
                        .with_epsilon(self.text.rms_norm_eps)
                        .init(device),
                )
            };
            for layer in &mut decoder.layers {
                layer.self_attn.q_norm = norm();
                layer.self_attn.k_norm = norm();
            }
        }
        QwenVl {
            visual: QwenVisionTransformer::init(&self.vision, device),
            decoder,
            config: self.clone(),
            lora: None,
        }
    }
}

impl<B: Backend> QwenVl<B> {
    /// The 3-D M-RoPE positions and `rope_deltas` of `input` (HF `get_rope_index`).
    pub fn rope_index(&self, input: &QwenVlInput<B>) -> Result<RopeIndex, ModelError> {
        check_shapes(input)?;
        rope_index(
            &input.input_ids,
            &input.attention_mask,
            &input.image_grid_thw,
            self.config.image_token_id as i64,
            self.config.vision.spatial_merge_size,
        )
    }

    /// Logits `[batch, seq, vocab]` at every position (padding positions hold unspecified values).
    pub fn forward(&self, input: &QwenVlInput<B>) -> Result<Tensor<B, 3>, ModelError> {
        let index = self.rope_index(input)?;
        let device = self.decoder.embed_tokens.weight.device();
        let positions = Tensor::<B, 3, Int>::from_data(
            TensorData::new(index.positions, [3, index.batch, index.seq]),
            &device,
        );
        self.forward_with_positions(input, positions)
    }

    /// [`QwenVl::forward`] at caller-given positions `[3, batch, seq]` (e.g. 1-D positions
    /// repeated on the three axes, or positions shifted by `rope_deltas` during generation).
    pub fn forward_with_positions(
        &self,
        input: &QwenVlInput<B>,
        positions: Tensor<B, 3, Int>,
    ) -> Result<Tensor<B, 3>, ModelError> {
        let hidden = self.forward_hidden(input, positions, &mut [])?;
        Ok(self.decoder.logits(hidden))
    }

    /// Normalized decoder hidden states `[batch, seq, d_model]` at `positions` `[3, batch, seq]`;
    /// with one empty [`KvCache`] per layer the prompt's keys and values are kept (generation).
    pub fn forward_hidden(
        &self,
        input: &QwenVlInput<B>,
        positions: Tensor<B, 3, Int>,
        caches: &mut [KvCache<B>],
    ) -> Result<Tensor<B, 3>, ModelError> {
        let (embeds, deepstack) = self.embed_with_deepstack(input)?;
        let [batch, seq, _] = embeds.dims();
        let device = embeds.device();
        let rows: Vec<RowLayout> = input
            .attention_mask
            .iter()
            .map(|m| RowLayout {
                key_valid: m.clone(),
                key_segment: vec![0; seq],
            })
            .collect();
        let bias = attention_bias::<B>(&rows, 0, seq, &device);
        debug_assert_eq!(positions.dims(), [3, batch, seq]);
        let tables = self.rope_tables(positions);
        Ok(self
            .decoder
            .forward_tables_with(embeds, &tables, bias, caches, deepstack.as_ref()))
    }

    /// Rotary tables for M-RoPE positions `[3, batch, seq]` (interleaved for Qwen3-VL).
    pub fn rope_tables(&self, positions: Tensor<B, 3, Int>) -> RopeTables<B> {
        let section = &self.config.mrope_section;
        let rope = &self.decoder.rope;
        if self.config.mrope_interleaved {
            rope.mrope_interleaved_tables(positions, section)
        } else {
            rope.mrope_tables(positions, section)
        }
    }

    /// Token embeddings `[batch, seq, d_model]` with the merged image tokens in place of the
    /// image-pad tokens (HF `masked_scatter`).
    pub fn embed(&self, input: &QwenVlInput<B>) -> Result<Tensor<B, 3>, ModelError> {
        Ok(self.embed_with_deepstack(input)?.0)
    }

    /// [`QwenVl::embed`], plus the DeepStack features at the image-pad positions when the model
    /// has them.
    pub(crate) fn embed_with_deepstack(
        &self,
        input: &QwenVlInput<B>,
    ) -> Result<(Tensor<B, 3>, Option<DeepStack<B>>), ModelError> {
        check_shapes(input)?;
        let device = self.decoder.embed_tokens.weight.device();
        let batch = input.input_ids.len();
        let seq = input.input_ids[0].len();
        let embeds = self.decoder.embed(int_tensor(&input.input_ids, &device));
        let image_token = self.config.image_token_id as i64;
        let slots: Vec<usize> = input
            .input_ids
            .iter()
            .flatten()
            .enumerate()
            .filter(|(_, &id)| id == image_token)
            .map(|(i, _)| i)
            .collect();
        let merge = self.config.vision.spatial_merge_size;
        let n_features: usize = input
            .image_grid_thw
            .iter()
            .map(|g| g[0] * g[1] * g[2] / (merge * merge))
            .sum();
        if slots.len() != n_features {
            return Err(ModelError::Input(format!(
                "input_ids has {} image tokens (id {image_token}) but image_grid_thw {:?} gives {n_features} image features (t·h·w / merge² each); build the prompt with one image-pad token per feature",
                slots.len(),
                input.image_grid_thw
            )));
        }
        let Some(pixels) = input.pixel_values.clone() else {
            if n_features > 0 {
                return Err(ModelError::Input(
                    "image_grid_thw names images but pixel_values is missing".into(),
                ));
            }
            return Ok((embeds, None));
        };
        let [n_patches, patch_dim] = pixels.dims();
        let want: usize = input
            .image_grid_thw
            .iter()
            .map(|g| g[0] * g[1] * g[2])
            .sum();
        let vision = &self.config.vision;
        if n_patches != want || patch_dim != vision.patch_dim() {
            return Err(ModelError::Input(format!(
                "pixel_values is [{n_patches}, {patch_dim}]; image_grid_thw {:?} and the vision config need [{want}, {}] (C·T·p·p)",
                input.image_grid_thw,
                vision.patch_dim()
            )));
        }
        if slots.is_empty() {
            return Ok((embeds, None));
        }
        let out = self.visual.forward(pixels, &input.image_grid_thw);
        let features = out.merged;
        // [n_features, d_model]
        let d = self.config.text.d_model;
        let flat = embeds.reshape([batch * seq, d]);
        // Row i of the result is token i's embedding, or the next image feature at image slots.
        let mut source: Vec<i64> = (0..(batch * seq) as i64).collect();
        for (k, &slot) in slots.iter().enumerate() {
            source[slot] = (batch * seq + k) as i64;
        }
        let source =
            Tensor::<B, 1, Int>::from_data(TensorData::new(source, [batch * seq]), &device);
        let embeds = Tensor::cat(vec![flat, features], 0)
            .select(0, source)
            .reshape([batch, seq, d]);
        let deepstack = (!out.deepstack.is_empty()).then_some(DeepStack {
            slots,
            levels: out.deepstack,
        });
        Ok((embeds, deepstack))
    }
}

impl<B: Backend> QwenVl<B> {
    crate::loading::adapter::inherent_lora_methods!();
}

pub(crate) fn check_shapes<B: Backend>(input: &QwenVlInput<B>) -> Result<(), ModelError> {
    let seq = input.input_ids.first().map(Vec::len).unwrap_or(0);
    if seq == 0 {
        return Err(ModelError::Input("input_ids is empty".into()));
    }
    if input.input_ids.iter().any(|r| r.len() != seq) {
        return Err(ModelError::Input(
            "input_ids rows differ in length; pad them".into(),
        ));
    }
    if input.attention_mask.len() != input.input_ids.len()
        || input.attention_mask.iter().any(|r| r.len() != seq)
    {
        return Err(ModelError::Input(
            "attention_mask must have the shape of input_ids".into(),
        ));
    }
    Ok(())
}
