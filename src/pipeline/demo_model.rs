//! The tiny from-scratch VLM of the demo: small enough to SFT and align on two CPU cores in
//! minutes, large enough to see 64×64 grayscale lesions (8×8 patches, 64 image tokens).

use firempo_datasets::{PreprocessConfig, Record};
use firempo_models::{FeatureSelect, VlmConfig};

use super::processor::{Processor, PromptFormat};
use super::tokenizer::train_word_level;

/// Image side the demo model sees (the synthetic benchmark's default size).
pub const DEMO_IMAGE_SIZE: usize = 64;

/// `VlmConfig::tiny()` resized for one-channel 64×64 images and the demo tokenizer.
pub fn demo_config(vocab_size: usize, image_token_id: usize) -> VlmConfig {
    let mut config = VlmConfig::tiny();
    if let Some(vision) = config.vision.as_mut() {
        vision.image_size = DEMO_IMAGE_SIZE;
        vision.patch_size = 8;
        vision.num_channels = 1;
    }
    // Use the last layer's patch features (no class token) for the small tower.
    config.vision_feature_layers = vec![-1];
    config.vision_feature_select = FeatureSelect::Default;
    config.text.vocab_size = vocab_size;
    config.text.max_position_embeddings = 512;
    config.image_token_id = image_token_id;
    config
}

/// The demo's model config and processor for `records`: a word-level tokenizer trained on their
/// prompts and answers, grayscale 64×64 preprocessing, the LLaVA-1.5 prompt format.
pub fn demo_processor(records: &[Record]) -> anyhow::Result<(VlmConfig, Processor)> {
    let format = PromptFormat::llava15();
    let corpus = records
        .iter()
        .flat_map(|r| [format.prompt(&r.question), r.answer.clone()]);
    let tokenizer = train_word_level(corpus, 1)?;
    let image_token = tokenizer
        .token_to_id("<image>")
        .expect("the demo tokenizer has <image>") as usize;
    let config = demo_config(tokenizer.get_vocab_size(true), image_token);
    let preprocess = PreprocessConfig::grayscale(DEMO_IMAGE_SIZE as u32);
    let processor = Processor::new(&config, tokenizer, preprocess, format)?;
    Ok((config, processor))
}
