//! The processor of a model (HF's term): its tokenizer, image preprocessing and prompt template.
//! Turns questions, answers and image files into the token ids and pixels the model consumes,
//! and generated ids back into text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use firempo_datasets::{load_image, preprocess, PhraseSpan, PixelValues, PreprocessConfig};
use firempo_models::VlmConfig;
use tokenizers::Tokenizer;

/// The LLaVA-1.5 conversation template; `{question}` is replaced, `<image>` expanded to the
/// model's image-token count.
pub const LLAVA_TEMPLATE: &str = "USER: <image>\n{question} ASSISTANT:";

/// Everything needed to talk to a model, except the model.
pub struct Processor {
    /// The tokenizer (with `<s>`, `</s>`, `<pad>` and `<image>` tokens).
    pub tokenizer: Tokenizer,
    /// Image preprocessing matching the vision tower.
    pub preprocess: PreprocessConfig,
    /// Prompt template with `{question}` and one `<image>`.
    pub template: String,
    /// Token ids of the special tokens.
    pub special: SpecialIds,
    /// Image-feature positions per image in the model (`<image>` expands to this many ids).
    pub image_tokens: usize,
    pixel_cache: Mutex<HashMap<PathBuf, PixelValues>>,
}

/// Ids of the special tokens the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Padding (never attended or scored).
    pub pad: i64,
    /// Begin of sequence, prepended to every prompt.
    pub bos: i64,
    /// End of sequence, appended to every answer; generation stops there.
    pub eos: i64,
    /// Image placeholder, expanded to one id per image feature.
    pub image: i64,
}

impl SpecialIds {
    /// Looks the special tokens up in `tokenizer`, naming any that is missing.
    pub fn from_tokenizer(tokenizer: &Tokenizer) -> anyhow::Result<Self> {
        let id = |token: &str| -> anyhow::Result<i64> {
            tokenizer
                .token_to_id(token)
                .map(i64::from)
                .with_context(|| {
                    format!("the tokenizer has no `{token}` token; add it as a special token")
                })
        };
        Ok(Self {
            pad: id("<pad>").or_else(|_| id("<unk>"))?,
            bos: id("<s>")?,
            eos: id("</s>")?,
            image: id("<image>")?,
        })
    }
}

impl Processor {
    /// Bundles a tokenizer, preprocessing and template for the model `config`; checks they agree.
    pub fn new(
        config: &VlmConfig,
        tokenizer: Tokenizer,
        preprocess: PreprocessConfig,
        template: &str,
    ) -> anyhow::Result<Self> {
        let special = SpecialIds::from_tokenizer(&tokenizer)?;
        anyhow::ensure!(
            special.image as usize == config.image_token_id,
            "the tokenizer's <image> id {} differs from the model's image_token_id {}",
            special.image,
            config.image_token_id
        );
        let vocab = tokenizer.get_vocab_size(true);
        anyhow::ensure!(
            vocab <= config.text.vocab_size,
            "the tokenizer has {vocab} tokens but the model's vocabulary only {}",
            config.text.vocab_size
        );
        anyhow::ensure!(
            template.contains("{question}") && template.matches("<image>").count() == 1,
            "the prompt template must contain `{{question}}` and exactly one `<image>`: {template:?}"
        );
        Ok(Self {
            image_tokens: config.image_tokens_per_image(),
            tokenizer,
            preprocess,
            template: template.to_string(),
            special,
            pixel_cache: Mutex::new(HashMap::new()),
        })
    }

    fn encode(&self, text: &str) -> anyhow::Result<Vec<i64>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
        Ok(encoding.get_ids().iter().map(|&id| i64::from(id)).collect())
    }

    /// Prompt ids: `<s>`, the template with the question, `<image>` expanded to the model's
    /// image-token count.
    pub fn prompt_ids(&self, question: &str) -> anyhow::Result<Vec<i64>> {
        let text = self.template.replace("{question}", question.trim());
        let mut ids = vec![self.special.bos];
        for id in self.encode(&text)? {
            if id == self.special.image {
                ids.extend(std::iter::repeat_n(id, self.image_tokens));
            } else {
                ids.push(id);
            }
        }
        Ok(ids)
    }

    /// Answer ids followed by `</s>` (what SFT teaches and preference losses score).
    pub fn answer_ids(&self, answer: &str) -> anyhow::Result<Vec<i64>> {
        Ok(self.answer_ids_with_phrases(answer, &[])?.0)
    }

    /// Answer ids followed by `</s>`, and for each id its phrase id: the id of the byte span in
    /// `spans` that the token overlaps, 0 outside every span (and for `</s>`).
    pub fn answer_ids_with_phrases(
        &self,
        answer: &str,
        spans: &[PhraseSpan],
    ) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
        let encoding = self
            .tokenizer
            .encode(answer, false)
            .map_err(|e| anyhow::anyhow!("tokenizing {answer:?}: {e}"))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
        let mut phrases: Vec<i64> = encoding
            .get_offsets()
            .iter()
            .map(|&(start, end)| {
                spans
                    .iter()
                    .find(|span| start < span.end && span.start < end)
                    .map_or(0, |span| i64::from(span.id))
            })
            .collect();
        ids.push(self.special.eos);
        phrases.push(0);
        Ok((ids, phrases))
    }

    /// Text of generated ids, up to the first `</s>`.
    pub fn decode(&self, ids: &[i64]) -> anyhow::Result<String> {
        let end = ids
            .iter()
            .position(|&id| id == self.special.eos)
            .unwrap_or(ids.len());
        let ids: Vec<u32> = ids[..end].iter().map(|&id| id as u32).collect();
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| anyhow::anyhow!("decoding {ids:?}: {e}"))
    }

    /// Preprocessed pixels `[n, C, H, W]` of image files (each file decoded once, then cached).
    pub fn pixels<B: Backend>(
        &self,
        paths: &[&Path],
        device: &B::Device,
    ) -> anyhow::Result<Tensor<B, 4>> {
        let mut data = Vec::new();
        let mut shape = [0usize; 3];
        let mut cache = self.pixel_cache.lock().expect("pixel cache");
        for path in paths {
            if !cache.contains_key(*path) {
                let image = load_image(path)?;
                let values = preprocess(&image, &self.preprocess)
                    .with_context(|| format!("preprocessing {}", path.display()))?;
                cache.insert(path.to_path_buf(), values);
            }
            let values = &cache[*path];
            shape = [values.channels, values.height, values.width];
            data.extend_from_slice(&values.data);
        }
        let [c, h, w] = shape;
        Ok(Tensor::from_data(
            TensorData::new(data, [paths.len(), c, h, w]),
            device,
        ))
    }
}
