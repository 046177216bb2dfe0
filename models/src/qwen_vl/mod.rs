//! Qwen2-VL, Qwen2.5-VL and Qwen3-VL on burn, generic over `Backend` (HF `modeling_qwen2_vl.py`,
//! `modeling_qwen2_5_vl.py`, `modeling_qwen3_vl.py`): a native-resolution vision tower with 2-D
//! rotary attention per image (Qwen2.5-VL: per window; Qwen3-VL: plus interpolated learned
//! position embeddings and DeepStack), a 2×2 patch merger, and the Qwen2/Qwen3
//! [`crate::Decoder`] with multimodal RoPE positions built as `get_rope_index` builds them.
//!
//! Entry points: [`is_qwen_vl_config`] (dispatch on `config.json`), [`load_qwen_vl`],
//! [`QwenImageProcessor`] (`preprocessor_config.json` → patches + grids), [`QwenVl::forward`],
//! [`QwenVl::score_answers`], [`QwenVl::generate`], [`QwenVl::with_lora`] (adapters saved and
//! loaded with [`crate::save_adapter`] / [`crate::load_adapter`]).
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use burn::backend::NdArray;
//! use firempo_models::{load_qwen_vl, QwenImageProcessor, QwenVlInput};
//!
//! # fn main() -> Result<(), firempo_models::ModelError> {
//! let dir = Path::new("checkpoints/Qwen2.5-VL-7B-Instruct");
//! let device = Default::default();
//! let model = load_qwen_vl::<NdArray>(dir, &device)?;
//! let processor = QwenImageProcessor::from_file(&dir.join("preprocessor_config.json"))?;
//! let images = processor.process_files(&[PathBuf::from("xray.png")])?;
//! // ids from the tokenizer, with `n_image_tokens(grid)` image-pad tokens per image.
//! let input_ids: Vec<Vec<i64>> = vec![/* ... */];
//! let input = QwenVlInput {
//!     attention_mask: input_ids.iter().map(|r| vec![true; r.len()]).collect(),
//!     input_ids,
//!     pixel_values: Some(images.tensor(&device)),
//!     image_grid_thw: images.image_grid_thw.clone(),
//! };
//! let logits = model.forward(&input)?; // [batch, seq, vocab]
//! # Ok(())
//! # }
//! ```

mod config;
mod generate;
mod image_processor;
mod loading;
mod model;
mod patch_merger;
mod position_embedding;
mod resample;
mod rope_index;
mod scoring;
mod vision;
mod vision_attention;
mod vision_block;
mod vision_rope;
mod window;

pub use config::*;
pub use image_processor::*;
pub use loading::load_qwen_vl;
pub use model::*;
pub use patch_merger::*;
pub use position_embedding::*;
pub use resample::resize_bicubic_antialias;
pub use rope_index::*;
pub use scoring::QwenScoringInput;
pub use vision::*;
pub use vision_attention::*;
pub use vision_block::*;
pub use vision_rope::*;
pub use window::*;
