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
//!     load_pretrained, processor, read_tokenizer, GenerationConfig, HfChatTemplate,
//!     ImagePreprocessor, Pixels, Processor, PromptFormat,
//! };
//!
//! # fn main() -> Result<(), firempo_models::ModelError> {
//! let dir = Path::new("checkpoints/llava-1.5-7b-hf");
//! let device = Default::default();
//! let model = load_pretrained::<NdArray>(dir, &device)?;
//! // The processor: tokenizer, the checkpoint's chat template, its image preprocessing.
//! let tokenizer = read_tokenizer(&dir.join("tokenizer.json"))?;
//! let format = PromptFormat::from_chat_template(&HfChatTemplate::for_checkpoint(dir, None)?, &tokenizer)?;
//! let preprocess = ImagePreprocessor::from_file(&dir.join("preprocessor_config.json"))?.config()?;
//! let processor = Processor::new(&model.config, tokenizer, preprocess, format)?;
//! let path = Path::new("xray.png");
//! let image = ImagePreprocessor::open(path)?;
//! let tokens = processor.image_tokens(image.width(), image.height(), path)?;
//! let prompt = processor.prompt_ids("Is there a pleural effusion?", tokens)?;
//! let Pixels::Square(pixels) = processor::batch(&[&processor.process_image(&image, path)?], &device)? else {
//!     unreachable!("a LLaVA processor makes square images")
//! };
//! let stop = vec![processor.special.eos as u32];
//! let config = GenerationConfig { max_new_tokens: 64, stop_token_ids: stop, ..Default::default() };
//! let mask = vec![vec![true; prompt.len()]];
//! let answer = model.generate_host(vec![prompt], mask, Some(pixels), &config, &device)?;
//! let ids: Vec<i64> = answer.tokens[0].iter().map(|&t| i64::from(t)).collect();
//! println!("{}", processor.decode(&ids)?);
//! # Ok(())
//! # }
//! ```

mod activation;
mod attention;
mod attention_op;
pub mod causal_attention;
mod chat_template;
mod checkpoint;
mod config;
mod decoder;
mod dropout;
mod error;
mod generate;
pub mod host_attention;
mod host_math;
mod host_rope;
mod host_tensor;
mod kernel_registry;
mod kv_cache;
pub mod loading;
mod lora;
pub mod mask;
pub mod precision;
mod preprocess;
mod preprocessor_config;
pub mod processor;
mod projector;
pub mod qwen_vl;
mod rope;
mod scoring;
mod swiglu;
mod vision;
mod vlm;

pub use activation::*;
pub use attention::*;
pub use attention_op::*;
pub use chat_template::*;
pub use checkpoint::*;
pub use config::*;
pub use decoder::*;
pub use dropout::{
    host_dropout_registered, lora_dropout, register_host_dropout, register_host_dropout_with,
    seed_host_dropout,
};
pub use error::*;
pub use generate::*;
pub use host_rope::{host_rope_registered, register_host_rope, register_host_rope_with};
pub use kv_cache::*;
pub use loading::adapter::{load_adapter, save_adapter, AdaptedModel};
pub use loading::record::load_record_file;
pub use loading::{image_preprocessor, load_pretrained, load_pretrained_with, LoadOptions};
pub use lora::*;
pub use precision::{check_backend_dtype, check_full_finetune, WeightDType};
pub use preprocess::*;
pub use preprocessor_config::*;
pub use processor::{
    expand_image_tokens, read_tokenizer, ImageProcessing, Pixels, ProcessedImage, Processor,
    PromptFormat, SpecialIds, IMAGE_PLACEHOLDER, QWEN_IMAGE_PAD,
};
pub use projector::*;
pub use qwen_vl::{
    is_qwen_vl_config, load_qwen_vl, read_qwen_vl_config, QwenImageProcessor, QwenImages,
    QwenScoringInput, QwenVl, QwenVlConfig, QwenVlFamily, QwenVlInput,
};
pub use rope::*;
pub use scoring::*;
pub use swiglu::{host_swiglu_registered, register_host_swiglu, register_host_swiglu_with, swiglu};
pub use vision::*;
pub use vlm::*;
