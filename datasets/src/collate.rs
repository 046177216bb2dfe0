//! Collation: preference pairs → batch tensors for the losses (prompt ids, answer ids/labels,
//! answer masks, per-token phrase ids, has-corrupted flags, clean and corrupted pixels),
//! right-padded with the tokenizer's pad id.

use std::path::PathBuf;

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::error::DatasetError;
use crate::image::{load_image, preprocess, PixelValues, PreprocessConfig};
use crate::pair::{PhraseSpan, PreferencePair};
use crate::tokenizer::TextTokenizer;

/// Token tensors of one answer variant (chosen or rejected) for a batch.
///
/// # Shapes
/// - `prompt_ids`, `prompt_mask`: `[batch, prompt_len]`
/// - `answer_ids`, `answer_mask`, `phrase_ids`: `[batch, answer_len]`
#[derive(Debug, Clone)]
pub struct AnswerBatch<B: Backend> {
    /// Prompt token ids (BOS + template with the question), right-padded.
    pub prompt_ids: Tensor<B, 2, Int>,
    /// 1 for real prompt tokens, 0 for padding.
    pub prompt_mask: Tensor<B, 2>,
    /// Answer token ids (the labels), EOS appended, right-padded.
    pub answer_ids: Tensor<B, 2, Int>,
    /// 1 for real answer tokens (EOS included), 0 for padding.
    pub answer_mask: Tensor<B, 2>,
    /// Phrase id per answer token: `k` inside divergent phrase `k`, 0 elsewhere and at padding.
    pub phrase_ids: Tensor<B, 2, Int>,
}

/// A collated batch of preference pairs.
///
/// # Shapes
/// - `has_corrupted`: `[batch]` (1 where a corrupted image exists; 0 rows carry the clean pixels)
/// - `clean_pixels`, `corrupted_pixels`: `[batch, channels, height, width]`
#[derive(Debug, Clone)]
pub struct PairBatch<B: Backend> {
    /// Pair ids, batch order.
    pub ids: Vec<String>,
    /// `y+` tokens.
    pub chosen: AnswerBatch<B>,
    /// `y−` tokens.
    pub rejected: AnswerBatch<B>,
    /// 1 where the pair has a corrupted image.
    pub has_corrupted: Tensor<B, 1>,
    /// Preprocessed clean images.
    pub clean_pixels: Tensor<B, 4>,
    /// Preprocessed corrupted images (clean copies where `has_corrupted` is 0).
    pub corrupted_pixels: Tensor<B, 4>,
}

/// Token ids of one example before padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedAnswer {
    /// Prompt ids.
    pub prompt_ids: Vec<u32>,
    /// Answer ids (EOS appended when the tokenizer has one).
    pub answer_ids: Vec<u32>,
    /// Phrase id per answer id.
    pub phrase_ids: Vec<u32>,
}

/// Turns [`PreferencePair`]s into [`PairBatch`]es.
#[derive(Debug, Clone)]
pub struct PairCollator<T> {
    /// The tokenizer.
    pub tokenizer: T,
    /// Image preprocessing.
    pub preprocess: PreprocessConfig,
    /// Prompt text; `{question}` is replaced by the pair's question.
    pub prompt_template: String,
    /// Root that relative image paths resolve against.
    pub root: PathBuf,
}

impl<T: TextTokenizer> PairCollator<T> {
    /// A collator with the plain `{question}` prompt and paths relative to the working directory.
    pub fn new(tokenizer: T, preprocess: PreprocessConfig) -> Self {
        Self {
            tokenizer,
            preprocess,
            prompt_template: "{question}".into(),
            root: PathBuf::new(),
        }
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>, DatasetError> {
        self.tokenizer
            .encode(text)
            .map_err(|e| DatasetError::Tokenizer {
                pair: String::new(),
                message: format!("{e} (text {text:?})"),
            })
    }

    /// Encodes the prompt for `question`.
    pub fn encode_prompt(&self, question: &str) -> Result<Vec<u32>, DatasetError> {
        let mut ids: Vec<u32> = self.tokenizer.bos_id().into_iter().collect();
        ids.extend(self.encode(&self.prompt_template.replace("{question}", question))?);
        Ok(ids)
    }

    /// Encodes an answer segment by segment so every token gets its phrase id.
    ///
    /// A phrase segment starts at the whitespace before the phrase, so BPE tokenizers see the
    /// word with its leading space, as in the running text.
    pub fn encode_answer(
        &self,
        answer: &str,
        spans: &[PhraseSpan],
    ) -> Result<(Vec<u32>, Vec<u32>), DatasetError> {
        let mut sorted = spans.to_vec();
        sorted.sort_by_key(|s| s.start);
        let mut segments: Vec<(usize, usize, u32)> = Vec::new();
        let mut at = 0;
        for span in &sorted {
            let bad = span.start < at
                || span.end > answer.len()
                || span.start >= span.end
                || !answer.is_char_boundary(span.start)
                || !answer.is_char_boundary(span.end);
            if bad {
                return Err(DatasetError::Edit {
                    record: String::new(),
                    message: format!(
                        "phrase span {}..{} (id {}) does not fit {answer:?}",
                        span.start, span.end, span.id
                    ),
                    hint: "spans must be ordered, non-overlapping byte ranges of the answer".into(),
                });
            }
            let lead = answer[at..span.start].trim_end().len() + at;
            segments.push((at, lead, 0));
            segments.push((lead, span.end, span.id));
            at = span.end;
        }
        segments.push((at, answer.len(), 0));
        let (mut ids, mut phrase_ids) = (Vec::new(), Vec::new());
        for (start, end, id) in segments {
            if start == end {
                continue;
            }
            let piece = self.encode(&answer[start..end])?;
            phrase_ids.extend(std::iter::repeat_n(id, piece.len()));
            ids.extend(piece);
        }
        if let Some(eos) = self.tokenizer.eos_id() {
            ids.push(eos);
            phrase_ids.push(0);
        }
        Ok((ids, phrase_ids))
    }

    /// Encodes both answers of a pair.
    pub fn encode_pair(
        &self,
        pair: &PreferencePair,
    ) -> Result<(EncodedAnswer, EncodedAnswer), DatasetError> {
        let with_record = |e: DatasetError| match e {
            DatasetError::Edit { message, hint, .. } => DatasetError::Edit {
                record: pair.id.clone(),
                message,
                hint,
            },
            DatasetError::Tokenizer { message, .. } => DatasetError::Tokenizer {
                pair: pair.id.clone(),
                message,
            },
            other => other,
        };
        let prompt_ids = self.encode_prompt(&pair.question).map_err(with_record)?;
        let (answer_ids, phrase_ids) = self
            .encode_answer(&pair.chosen, &pair.chosen_spans)
            .map_err(with_record)?;
        let chosen = EncodedAnswer {
            prompt_ids: prompt_ids.clone(),
            answer_ids,
            phrase_ids,
        };
        let (answer_ids, phrase_ids) = self
            .encode_answer(&pair.rejected, &pair.rejected_spans)
            .map_err(with_record)?;
        let rejected = EncodedAnswer {
            prompt_ids,
            answer_ids,
            phrase_ids,
        };
        Ok((chosen, rejected))
    }

    fn pixels(&self, path: &std::path::Path) -> Result<PixelValues, DatasetError> {
        preprocess(&load_image(&self.root.join(path))?, &self.preprocess)
    }

    /// Collates `pairs` (at least one) into tensors on `device`.
    pub fn collate<B: Backend>(
        &self,
        pairs: &[PreferencePair],
        device: &B::Device,
    ) -> Result<PairBatch<B>, DatasetError> {
        if pairs.is_empty() {
            return Err(DatasetError::InvalidConfig {
                field: "pairs",
                value: "[]".into(),
                requirement: "at least one pair per batch",
            });
        }
        let mut chosen = Vec::new();
        let mut rejected = Vec::new();
        let (mut clean, mut corrupted, mut flags) = (Vec::new(), Vec::new(), Vec::new());
        let mut shape: Option<[usize; 3]> = None;
        for pair in pairs {
            let (c, r) = self.encode_pair(pair)?;
            chosen.push(c);
            rejected.push(r);
            let clean_px = self.pixels(&pair.image)?;
            let dims = [clean_px.channels, clean_px.height, clean_px.width];
            if *shape.get_or_insert(dims) != dims {
                return Err(DatasetError::Image {
                    path: self.root.join(&pair.image),
                    message: format!(
                        "preprocessed to {dims:?} but the batch is {:?}; fix: resize to a fixed size (Resize::Square or a center crop)",
                        shape.unwrap()
                    ),
                });
            }
            let corrupted_px = match &pair.corrupted_image {
                Some(path) => {
                    let px = self.pixels(path)?;
                    if [px.channels, px.height, px.width] != dims {
                        return Err(DatasetError::Image {
                            path: self.root.join(path),
                            message: "corrupted image size differs from the clean image".into(),
                        });
                    }
                    flags.push(1.0f32);
                    px.data
                }
                None => {
                    flags.push(0.0);
                    clean_px.data.clone()
                }
            };
            clean.extend(clean_px.data);
            corrupted.extend(corrupted_px);
        }
        let [c, h, w] = shape.expect("at least one pair");
        let n = pairs.len();
        let pixels =
            |data: Vec<f32>| Tensor::<B, 4>::from_data(TensorData::new(data, [n, c, h, w]), device);
        Ok(PairBatch {
            ids: pairs.iter().map(|p| p.id.clone()).collect(),
            chosen: self.answer_batch(&chosen, device),
            rejected: self.answer_batch(&rejected, device),
            has_corrupted: Tensor::from_data(TensorData::new(flags, [n]), device),
            clean_pixels: pixels(clean),
            corrupted_pixels: pixels(corrupted),
        })
    }

    fn answer_batch<B: Backend>(
        &self,
        encoded: &[EncodedAnswer],
        device: &B::Device,
    ) -> AnswerBatch<B> {
        let pad = self.tokenizer.pad_id();
        let (prompt_ids, prompt_mask) =
            pad_rows(encoded.iter().map(|e| &e.prompt_ids), pad, device);
        let (answer_ids, answer_mask) =
            pad_rows(encoded.iter().map(|e| &e.answer_ids), pad, device);
        let (phrase_ids, _) = pad_rows(encoded.iter().map(|e| &e.phrase_ids), 0, device);
        AnswerBatch {
            prompt_ids,
            prompt_mask,
            answer_ids,
            answer_mask,
            phrase_ids,
        }
    }
}

/// Right-pads rows to the longest; returns `[rows, len]` ids and the 0/1 mask.
fn pad_rows<'a, B: Backend>(
    rows: impl Iterator<Item = &'a Vec<u32>> + Clone,
    pad: u32,
    device: &B::Device,
) -> (Tensor<B, 2, Int>, Tensor<B, 2>) {
    let n = rows.clone().count();
    let len = rows.clone().map(Vec::len).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(n * len);
    let mut mask = Vec::with_capacity(n * len);
    for row in rows {
        ids.extend(row.iter().map(|&t| t as i64));
        ids.extend(std::iter::repeat_n(pad as i64, len - row.len()));
        mask.extend(std::iter::repeat_n(1.0f32, row.len()));
        mask.extend(std::iter::repeat_n(0.0f32, len - row.len()));
    }
    (
        Tensor::from_data(TensorData::new(ids, [n, len]), device),
        Tensor::from_data(TensorData::new(mask, [n, len]), device),
    )
}
