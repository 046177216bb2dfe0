//! The alignment pipeline's stages and the pieces they share: tokenizer training, the model's
//! processor (tokens and pixels), scoring batches, and the SFT and preference objectives.

pub mod align;
pub mod base_model;
pub mod batch;
pub mod demo_model;
pub mod file_processor;
pub mod hf_checkpoint;
pub mod image_check;
pub mod model;
pub mod model_dir;
pub mod reference_cache;
pub mod sft;
pub mod tensor_file;
pub mod tokenizer;
