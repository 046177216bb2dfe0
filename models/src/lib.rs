//! LLaVA-style vision-language models on burn, generic over `Backend`: a CLIP/SigLIP-style vision
//! tower, LLaVA's MLP projector and a LLaMA/Mistral/Qwen2 decoder, with HuggingFace loading
//! (`config.json` + safetensors), LoRA with PEFT-compatible adapters, KV-cached generation and
//! shared-prefix answer scoring for preference training.
//!
//! Entry points: [`VlmConfig::init`], [`load_pretrained`], [`Vlm::forward`],
//! [`Vlm::score_answers`], [`Vlm::generate`], [`Vlm::with_lora`] / [`Vlm::with_adapters`],
//! [`save_adapter`] / [`load_adapter`]. Qwen2-VL, Qwen2.5-VL and Qwen3-VL ([`qwen_vl`]) have
//! the same operations ([`QwenVl::score_answers`], [`QwenVl::generate`], [`QwenVl::with_lora`]);
//! both families' adapters go through [`AdaptedModel`].
//!
//! ```no_run
//! use std::path::Path;
//! use burn::backend::NdArray;
//! use firempo_models::{
//!     load_pretrained, prepare_question, ChatTemplate, GenerationConfig, ImagePreprocessor, Tokenizer,
//! };
//!
//! # fn main() -> Result<(), firempo_models::ModelError> {
//! let dir = Path::new("checkpoints/llava-1.5-7b-hf");
//! let device = Default::default();
//! let model = load_pretrained::<NdArray>(dir, &device)?;
//! let tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
//! let preprocessor = ImagePreprocessor::from_file(&dir.join("preprocessor_config.json"))?;
//! let template = ChatTemplate::Llava15;
//! let input = prepare_question(&model.config, &tokenizer, template, &preprocessor,
//!     "Is there a pleural effusion?", Some(Path::new("xray.png")), &device)?;
//! let stop = template.stop_tokens().iter().filter_map(|t| tokenizer.token_id(t)).collect();
//! let config = GenerationConfig { max_new_tokens: 64, stop_token_ids: stop, ..Default::default() };
//! let answer = model.generate(input, &config)?;
//! println!("{}", tokenizer.decode(&answer.tokens[0], true)?);
//! # Ok(())
//! # }
//! ```

mod activation;
mod attention;
mod attention_op;
pub mod causal_attention;
mod checkpoint;
mod chat;
mod chat_template;
mod config;
mod decoder;
mod error;
mod generate;
mod kv_cache;
pub mod loading;
mod lora;
pub mod mask;
pub mod precision;
mod preprocess;
mod preprocessor_config;
mod projector;
pub mod qwen_vl;
mod rope;
mod scoring;
mod tokenizer;
mod vision;
mod vlm;

pub use activation::*;
pub use attention::*;
pub use attention_op::*;
pub use checkpoint::*;
pub use chat::*;
pub use chat_template::*;
pub use config::*;
pub use decoder::*;
pub use error::*;
pub use generate::*;
pub use kv_cache::*;
pub use loading::adapter::{load_adapter, save_adapter, AdaptedModel};
pub use loading::record::load_record_file;
pub use loading::{image_preprocessor, load_pretrained, load_pretrained_with, LoadOptions};
pub use lora::*;
pub use precision::{check_backend_dtype, check_full_finetune, WeightDType};
pub use preprocess::*;
pub use preprocessor_config::*;
pub use projector::*;
pub use qwen_vl::{
    is_qwen_vl_config, load_qwen_vl, read_qwen_vl_config, QwenImageProcessor, QwenImages,
    QwenScoringInput, QwenVl, QwenVlConfig, QwenVlFamily, QwenVlInput,
};
pub use rope::*;
pub use scoring::*;
pub use tokenizer::*;
pub use vision::*;
pub use vlm::*;
