//! The processor of a model (HF's term): its tokenizer, prompt format and image processing.
//! Turns questions, answers and decoded images into the token ids and pixels the model
//! consumes, and generated ids back into text, for every family firempo runs (LLaVA-style
//! square images, Qwen-VL patches). It reads no files besides the tokenizer: callers decode
//! images (the pipeline through the datasets crate's checked reader) and keep what they cache.

mod format;
mod images;
mod special;

use std::path::Path;

use image::DynamicImage;
use tokenizers::Tokenizer;

pub use format::{PromptFormat, QWEN_IMAGE_PAD};
pub use images::{batch, check_square_preprocess, ImageProcessing, Pixels, ProcessedImage};
pub use special::SpecialIds;

use crate::config::{TextConfig, VlmConfig};
use crate::error::ModelError;
use crate::preprocess::PreprocessConfig;
use crate::qwen_vl::{QwenImageProcessor, QwenVlConfig};

/// The image placeholder in prompts.
pub const IMAGE_PLACEHOLDER: &str = "<image>";

/// Reads a `tokenizer.json` (HF fast-tokenizer format); the error names the file.
pub fn read_tokenizer(path: &Path) -> Result<Tokenizer, ModelError> {
    Tokenizer::from_file(path).map_err(|e| ModelError::Tokenizer {
        path: path.into(),
        message: format!(
            "{e}; a `tokenizer.json` (fast tokenizer) is needed, not `tokenizer.model`: write \
             one with `AutoTokenizer.from_pretrained(dir).save_pretrained(dir)` in Python"
        ),
    })
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
            "the prompt has {found} `{IMAGE_PLACEHOLDER}` placeholder(s) (token {image_token_id}) \
             but {n_images} image(s) were given; put one `{IMAGE_PLACEHOLDER}` per image in the \
             prompt"
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

/// Everything needed to talk to a model, except the model.
#[derive(Debug, Clone)]
pub struct Processor {
    /// The tokenizer (with the format's special tokens and the image token).
    pub tokenizer: Tokenizer,
    /// Image preprocessing matching the vision tower.
    pub images: ImageProcessing,
    /// Prompt template and special tokens.
    pub format: PromptFormat,
    /// Token ids of the special tokens.
    pub special: SpecialIds,
    /// Positions the model reads: prompt plus answer (`text.max_position_embeddings`).
    pub context: usize,
}

impl Processor {
    /// Bundles a tokenizer, preprocessing and prompt format for the LLaVA-style model `config`;
    /// checks they agree.
    pub fn new(
        config: &VlmConfig,
        tokenizer: Tokenizer,
        preprocess: PreprocessConfig,
        format: PromptFormat,
    ) -> Result<Self, ModelError> {
        if let Some(vision) = &config.vision {
            check_square_preprocess(&preprocess, vision)?;
        }
        let images = ImageProcessing::Square {
            preprocess,
            tokens: config.image_tokens_per_image(),
        };
        Self::assemble(
            &config.text,
            config.image_token_id,
            None,
            tokenizer,
            images,
            format,
        )
    }

    /// [`Self::new`] for a Qwen-VL model: images as `images` patches them, the image token
    /// `<|image_pad|>`.
    pub fn for_qwen_vl(
        config: &QwenVlConfig,
        tokenizer: Tokenizer,
        images: QwenImageProcessor,
        format: PromptFormat,
    ) -> Result<Self, ModelError> {
        let vision = &config.vision;
        if images.patch_size != vision.patch_size
            || images.merge_size != vision.spatial_merge_size
            || images.temporal_patch_size != vision.temporal_patch_size
        {
            return Err(ModelError::Processor(format!(
                "the image processor makes {p}×{p} patches merged {m}×{m} over {t} frames, but \
                 the vision tower takes patch_size {}, spatial_merge_size {} and \
                 temporal_patch_size {}; fix: use the preprocessor_config.json of the model's \
                 checkpoint",
                vision.patch_size,
                vision.spatial_merge_size,
                vision.temporal_patch_size,
                p = images.patch_size,
                m = images.merge_size,
                t = images.temporal_patch_size,
            )));
        }
        Self::assemble(
            &config.text,
            config.image_token_id,
            Some(QWEN_IMAGE_PAD),
            tokenizer,
            ImageProcessing::Patches(images),
            format,
        )
    }

    fn assemble(
        text: &TextConfig,
        image_token_id: usize,
        image_token: Option<&str>,
        tokenizer: Tokenizer,
        images: ImageProcessing,
        format: PromptFormat,
    ) -> Result<Self, ModelError> {
        format.validate()?;
        let special = SpecialIds::from_tokenizer(&tokenizer, &format, image_token_id, image_token)?;
        let vocab = tokenizer.get_vocab_size(true);
        if vocab > text.vocab_size {
            return Err(ModelError::Processor(format!(
                "the tokenizer has {vocab} tokens but the model's vocabulary only {}",
                text.vocab_size
            )));
        }
        Ok(Self {
            context: text.max_position_embeddings,
            tokenizer,
            images,
            format,
            special,
        })
    }

    /// Image-feature positions an image of `width × height` pixels takes in a prompt (see
    /// [`ImageProcessing::tokens`]); `origin` names it in errors.
    pub fn image_tokens(
        &self,
        width: u32,
        height: u32,
        origin: &Path,
    ) -> Result<usize, ModelError> {
        self.images.tokens(width, height, origin)
    }

    /// Preprocesses one decoded image for the model; `origin` names it in errors.
    pub fn process_image(
        &self,
        image: &DynamicImage,
        origin: &Path,
    ) -> Result<ProcessedImage, ModelError> {
        self.images.process(image, origin)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Input(format!("tokenizing {text:?}: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Prompt ids of `question` about an image of `image_tokens` positions: the begin token (if
    /// any), the template with the question, `<image>` expanded to that many image ids. A
    /// prompt that leaves no room in the model's context for one answer token is an error.
    pub fn prompt_ids(&self, question: &str, image_tokens: usize) -> Result<Vec<i64>, ModelError> {
        let text = self.format.prompt(question);
        let in_prompt = |e: ModelError| ModelError::Input(format!("the prompt {text:?}: {e}"));
        let expanded = if self.special.image_in_tokenizer {
            let ids = self.encode(&text)?;
            expand_image_tokens(&ids, self.special.image as u32, image_tokens, 1)
                .map_err(in_prompt)?
        } else {
            self.encode_around_image(&text, image_tokens)?
        };
        let prompt: Vec<i64> = self
            .special
            .bos
            .into_iter()
            .chain(expanded.into_iter().map(i64::from))
            .collect();
        self.check_fits(prompt.len(), 1)?;
        Ok(prompt)
    }

    /// Ids of a prompt for a tokenizer without `<image>`: the text before and after the
    /// placeholder tokenized separately, the image ids between them. This is LLaVA's
    /// `tokenizer_image_token` (each piece is tokenized as a text of its own; the begin token is
    /// the format's, added once by [`Self::prompt_ids`]).
    fn encode_around_image(&self, text: &str, image_tokens: usize) -> Result<Vec<u32>, ModelError> {
        let pieces: Vec<&str> = text.split(IMAGE_PLACEHOLDER).collect();
        if pieces.len() != 2 {
            return Err(ModelError::Input(format!(
                "the prompt {text:?} has {} `{IMAGE_PLACEHOLDER}` placeholders; it needs exactly one",
                pieces.len() - 1
            )));
        }
        let mut ids = self.encode(pieces[0])?;
        ids.extend(std::iter::repeat_n(self.special.image as u32, image_tokens));
        ids.extend(self.encode(pieces[1])?);
        Ok(ids)
    }

    /// Checks that a prompt of `prompt_len` ids followed by `answer_len` answer ids fits the
    /// model's context: beyond `max_position_embeddings` the model was never trained, and its
    /// scores and answers there mean nothing.
    pub fn check_fits(&self, prompt_len: usize, answer_len: usize) -> Result<(), ModelError> {
        let total = prompt_len + answer_len;
        if total <= self.context {
            return Ok(());
        }
        Err(ModelError::Input(format!(
            "the prompt ({prompt_len} tokens with the image's) and the answer ({answer_len} \
             tokens) need {total} positions, but the model's context is {} tokens \
             (text.max_position_embeddings); fix: shorten the question or answer (or, when \
             generating, lower --max-new-tokens; for Qwen-VL, lower max_pixels in \
             preprocessor_config.json)",
            self.context
        )))
    }

    /// Answer ids followed by the end token (what SFT teaches and preference losses score).
    pub fn answer_ids(&self, answer: &str) -> Result<Vec<i64>, ModelError> {
        Ok(self.answer_ids_with_phrases(answer, &[])?.0)
    }

    /// Answer ids followed by the end token, and for each id its phrase id: the id of the byte
    /// range in `spans` (`(start..end, id)`) that the token overlaps, 0 outside every span (and
    /// for the end token).
    pub fn answer_ids_with_phrases(
        &self,
        answer: &str,
        spans: &[(std::ops::Range<usize>, u32)],
    ) -> Result<(Vec<i64>, Vec<i64>), ModelError> {
        let encoding = self
            .tokenizer
            .encode(answer, false)
            .map_err(|e| ModelError::Input(format!("tokenizing {answer:?}: {e}")))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
        let mut phrases: Vec<i64> = encoding
            .get_offsets()
            .iter()
            .map(|&(start, end)| {
                spans
                    .iter()
                    .find(|(span, _)| start < span.end && span.start < end)
                    .map_or(0, |(_, id)| i64::from(*id))
            })
            .collect();
        ids.push(self.special.eos);
        phrases.push(0);
        Ok((ids, phrases))
    }

    /// Text of generated ids, up to the first end token.
    pub fn decode(&self, ids: &[i64]) -> Result<String, ModelError> {
        let end = ids
            .iter()
            .position(|&id| id == self.special.eos)
            .unwrap_or(ids.len());
        let ids: Vec<u32> = ids[..end].iter().map(|&id| id as u32).collect();
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| ModelError::Input(format!("decoding {ids:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tokens_expand_and_a_missing_placeholder_is_named() {
        assert_eq!(
            expand_image_tokens(&[1, 9, 2], 9, 3, 1).unwrap(),
            vec![1, 9, 9, 9, 2]
        );
        let err = expand_image_tokens(&[1, 2], 9, 3, 1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 `<image>` placeholder"), "{err}");
        assert_eq!(
            PromptFormat::llava15().prompt(" Q? "),
            "USER: <image>\nQ? ASSISTANT:"
        );
    }
}
