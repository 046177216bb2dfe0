//! The ids of the special tokens a prompt format and a model need, looked up in the tokenizer.

use tokenizers::Tokenizer;

use super::{PromptFormat, IMAGE_PLACEHOLDER};
use crate::error::ModelError;

/// Ids of the special tokens the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Padding (never attended or scored): `<pad>`, else `<unk>`, else `<|endoftext|>`, else
    /// the end token.
    pub pad: i64,
    /// Begin of sequence, prepended to every prompt, if the format has one.
    pub bos: Option<i64>,
    /// End of answer, appended to every answer; generation stops there.
    pub eos: i64,
    /// The image id the model reads at image-feature positions (its `image_token_id`): the
    /// tokenizer's `<image>`, or, for original-LLaVA checkpoints whose tokenizer has none
    /// (LLaVA-Med, HuatuoGPT-Vision), an id past the vocabulary.
    pub image: i64,
    /// Whether `<image>` is a token of the tokenizer. When it is not, prompts are tokenized
    /// around the placeholder, a piece at a time, as LLaVA's `tokenizer_image_token` does.
    pub image_in_tokenizer: bool,
}

impl SpecialIds {
    /// Looks the special tokens of `format` up in `tokenizer`, naming any that is missing;
    /// `image_token_id` is the model's, `image_token` the text of its token when the family
    /// names one other than `<image>` (Qwen-VL's [`super::QWEN_IMAGE_PAD`]).
    pub fn from_tokenizer(
        tokenizer: &Tokenizer,
        format: &PromptFormat,
        image_token_id: usize,
        image_token: Option<&str>,
    ) -> Result<Self, ModelError> {
        let lookup = |token: &str| tokenizer.token_to_id(token).map(i64::from);
        let id = |token: &str| -> Result<i64, ModelError> {
            lookup(token).ok_or_else(|| {
                ModelError::Processor(format!(
                    "the tokenizer has no `{token}` token; add it as a special token"
                ))
            })
        };
        let refuse = |message: String| Err(ModelError::Processor(message));
        let eos = id(&format.eos_token)?;
        let image = match image_token.map(|token| (token, lookup(token))) {
            Some((token, found)) => {
                if found != Some(image_token_id as i64) {
                    return refuse(format!(
                        "the model's image token {token} has id {image_token_id}, but the \
                         tokenizer gives it {}; fix: use the tokenizer.json of the model's checkpoint",
                        found.map_or("no id".to_string(), |id| format!("id {id}"))
                    ));
                }
                image_token_id as i64
            }
            None => match lookup(IMAGE_PLACEHOLDER) {
                Some(image) if image as usize != image_token_id => {
                    return refuse(format!(
                        "the tokenizer's {IMAGE_PLACEHOLDER} id {image} differs from the model's \
                         image_token_id {image_token_id}"
                    ));
                }
                Some(image) => image,
                None => {
                    let vocab = tokenizer.get_vocab_size(true);
                    if image_token_id < vocab {
                        return refuse(format!(
                            "the tokenizer has no `{IMAGE_PLACEHOLDER}` token and the model's \
                             image_token_id {image_token_id} is one of its {vocab} text tokens, \
                             so images and text would mix; fix: add `{IMAGE_PLACEHOLDER}` to the \
                             tokenizer as a special token with id {image_token_id}"
                        ));
                    }
                    image_token_id as i64
                }
            },
        };
        Ok(Self {
            pad: ["<pad>", "<unk>", "<|endoftext|>"]
                .into_iter()
                .find_map(lookup)
                .unwrap_or(eos),
            bos: format.bos_token.as_deref().map(id).transpose()?,
            eos,
            image,
            image_in_tokenizer: lookup(IMAGE_PLACEHOLDER).is_some(),
        })
    }
}
