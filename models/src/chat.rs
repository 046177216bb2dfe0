//! Chat templates (LLaVA-1.5 and ChatML/Qwen2) and turning an image file plus a question into
//! model inputs: the `<image>` placeholder is expanded to one token per image feature, as the HF
//! `LlavaProcessor` does.

use std::path::Path;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::config::VlmConfig;
use crate::error::ModelError;
use crate::preprocessor_config::ImagePreprocessor;
use crate::tokenizer::Tokenizer;
use crate::vlm::VlmInput;

/// The image placeholder in prompts.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// Prompt formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatTemplate {
    /// `USER: <image>\n{q} ASSISTANT:` (llava-hf/llava-1.5 `chat_template`).
    Llava15,
    /// `<|im_start|>system … <|im_end|>` turns (Qwen2, HuatuoGPT-Vision-style).
    ChatMl,
}

impl ChatTemplate {
    /// The generation prompt for one user turn; the placeholder precedes the question when
    /// `with_image`.
    pub fn prompt(self, question: &str, with_image: bool) -> String {
        let image = if with_image { "<image>\n" } else { "" };
        match self {
            Self::Llava15 => format!("USER: {image}{question} ASSISTANT:"),
            Self::ChatMl => format!(
                "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{image}{question}<|im_end|>\n<|im_start|>assistant\n"
            ),
        }
    }

    /// The prompt followed by `answer` and the turn terminator (for supervised or preference data).
    pub fn with_answer(self, question: &str, with_image: bool, answer: &str) -> String {
        match self {
            Self::Llava15 => format!("{} {answer}</s>", self.prompt(question, with_image)),
            Self::ChatMl => format!("{}{answer}<|im_end|>", self.prompt(question, with_image)),
        }
    }

    /// Tokens that end the assistant's turn.
    pub fn stop_tokens(self) -> &'static [&'static str] {
        match self {
            Self::Llava15 => &["</s>"],
            Self::ChatMl => &["<|im_end|>", "<|endoftext|>"],
        }
    }
}

/// Expands each image token in `ids` into `per_image` copies; errors if the count of
/// placeholders differs from `n_images`.
pub fn expand_image_tokens(
    ids: &[u32],
    image_token_id: u32,
    per_image: usize,
    n_images: usize,
) -> Result<Vec<u32>, ModelError> {
    let found = ids.iter().filter(|&&t| t == image_token_id).count();
    if found != n_images {
        return Err(ModelError::Input(format!(
            "the prompt has {found} `{IMAGE_PLACEHOLDER}` placeholder(s) (token {image_token_id}) but {n_images} image(s) were given; \
             put one `{IMAGE_PLACEHOLDER}` per image in the prompt (ChatTemplate::prompt does)"
        )));
    }
    Ok(ids
        .iter()
        .flat_map(|&t| {
            let n = if t == image_token_id { per_image } else { 1 };
            std::iter::repeat_n(t, n)
        })
        .collect())
}

/// Builds a one-row [`VlmInput`] from a question and an optional image file.
pub fn prepare_question<B: Backend>(
    config: &VlmConfig,
    tokenizer: &Tokenizer,
    template: ChatTemplate,
    preprocessor: &ImagePreprocessor,
    question: &str,
    image: Option<&Path>,
    device: &B::Device,
) -> Result<VlmInput<B>, ModelError> {
    let prompt = template.prompt(question, image.is_some());
    let ids = tokenizer.encode(&prompt, true)?;
    let ids = expand_image_tokens(
        &ids,
        config.image_token_id as u32,
        config.image_tokens_per_image(),
        usize::from(image.is_some()),
    )?;
    let n = ids.len();
    let ids: Vec<i64> = ids.into_iter().map(i64::from).collect();
    let input = VlmInput::new(Tensor::<B, 2, Int>::from_data(
        TensorData::new(ids, [1, n]),
        device,
    ));
    match image {
        Some(path) => {
            let img = ImagePreprocessor::open(path)?;
            Ok(input.with_pixels(preprocessor.batch(&[img], device)?))
        }
        None => Ok(input),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_and_missing_placeholder() {
        assert_eq!(
            expand_image_tokens(&[1, 9, 2], 9, 3, 1).unwrap(),
            vec![1, 9, 9, 9, 2]
        );
        let err = expand_image_tokens(&[1, 2], 9, 3, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 `<image>` placeholder"), "{err}");
        assert_eq!(
            ChatTemplate::Llava15.prompt("Q?", true),
            "USER: <image>\nQ? ASSISTANT:"
        );
    }
}
