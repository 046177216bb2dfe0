//! The tiny from-scratch VLM of the demo: small enough to SFT and align on two CPU cores in
//! minutes, large enough to see 64×64 grayscale lesions (8×8 patches, 64 image tokens).

use firempo_models::{FeatureSelect, VlmConfig};

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
