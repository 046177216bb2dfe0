//! LLaVA-style vision-language models on burn, generic over `Backend`: a CLIP/SigLIP-style vision
//! tower, LLaVA's MLP projector and a LLaMA/Mistral/Qwen2 decoder, with HuggingFace loading
//! (`config.json` + safetensors), LoRA with PEFT-compatible adapters, KV-cached generation and
//! shared-prefix answer scoring for preference training.
//!
//! Entry points: [`VlmConfig::init`], [`load_pretrained`], [`Vlm::forward`],
//! [`Vlm::score_answers`], [`Vlm::generate`], [`Vlm::with_lora`] / [`Vlm::with_adapters`],
//! [`save_adapter`] / [`load_adapter`].

mod activation;
mod attention;
mod chat;
mod config;
mod decoder;
mod error;
mod generate;
mod kv_cache;
pub mod loading;
mod lora;
pub mod mask;
mod preprocess;
mod projector;
mod rope;
mod scoring;
mod tokenizer;
mod vision;
mod vlm;

pub use activation::*;
pub use attention::*;
pub use chat::*;
pub use config::*;
pub use decoder::*;
pub use error::*;
pub use generate::*;
pub use kv_cache::*;
pub use loading::adapter::{load_adapter, save_adapter};
pub use loading::load_pretrained;
pub use lora::*;
pub use preprocess::*;
pub use projector::*;
pub use rope::*;
pub use scoring::*;
pub use tokenizer::*;
pub use vision::*;
pub use vlm::*;
