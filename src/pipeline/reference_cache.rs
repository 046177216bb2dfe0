//! `firempo align --precompute-reference`: the frozen reference's per-token label log-probs of
//! every training pair, scored once before training and kept in the run directory, so the steps
//! of DPO and mDPO (whose losses read only these: [`ReferenceScores::LabelLogProbs`]) run the
//! policy alone. RRPO and FiRe-MPO also read the reference's distribution over the vocabulary
//! for their KL, which is not cached (the stage refuses the flag for them).
//!
//! `RUN/reference_logps/` holds
//! - `run.json`: what was scored, in a run identity's format: digests of the pairs, the ground
//!   truth and the model, the image root, the base-weight dtype, the prompt format, the images
//!   scored (`clean`, and `corrupted` for mDPO), the pair and answer-token counts and the format
//!   version. A cache whose identity differs from the run's is scored again from scratch (with a
//!   warning naming the differences), never reused.
//! - `label_logps.f32`: little-endian f32, pair after pair in the pairs' order; per pair, per
//!   scored image, the chosen answer's tokens, then the rejected answer's. Appended after every
//!   batch of pairs, so an interrupted precompute continues after the last whole pair it wrote
//!   (a torn tail is cut off).
//!
//! [`ReferenceScores::LabelLogProbs`]: firempo_losses::ReferenceScores::LabelLogProbs

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use firempo_losses::PreferenceLoss;

use super::align::{answer_label_logps, AlignExample, PairImage};
use super::file_processor::FileProcessor;
use super::model::Model;
use crate::train::interrupt;
use crate::train::RunIdentity;

/// The cache's folder inside a run directory.
pub const REFERENCE_LOGPS_DIR: &str = "reference_logps";
/// The values file inside [`REFERENCE_LOGPS_DIR`].
pub const LABEL_LOGPS_FILE: &str = "label_logps.f32";
/// Version of the layout of [`LABEL_LOGPS_FILE`], recorded in the cache's identity.
const FORMAT: u32 = 1;

/// The reference's label log-probs `log π_ref(y_t)` of every pair, per scored image.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceLogps {
    images: Vec<PairImage>,
    /// `rows[pair][k]`: `[chosen, rejected]` per-token log-probs after image `images[k]`.
    rows: Vec<Vec<[Vec<f32>; 2]>>,
}

impl ReferenceLogps {
    /// Pairs covered.
    pub fn pairs(&self) -> usize {
        self.rows.len()
    }

    /// `[chosen, rejected]` per-token log-probs of pair `pair` after `image`.
    pub fn of(&self, pair: usize, image: PairImage) -> anyhow::Result<&[Vec<f32>; 2]> {
        let k = self
            .images
            .iter()
            .position(|&i| i == image)
            .with_context(|| {
                format!(
                    "the precomputed reference log-probs hold no {} image scores",
                    image.name()
                )
            })?;
        let row = self.rows.get(pair).with_context(|| {
            format!(
                "pair {pair} is past the {} pairs of the precomputed reference",
                self.rows.len()
            )
        })?;
        Ok(&row[k])
    }

    /// The log-probs of the pairs `indices` after `image` as a loss input, `[n, 2, answer_len]`
    /// (chosen, rejected), zero past each answer's end (where the answer mask is zero).
    pub fn label_logps<B: Backend>(
        &self,
        indices: &[usize],
        image: PairImage,
        answer_len: usize,
        device: &B::Device,
    ) -> anyhow::Result<Tensor<B, 3>> {
        let mut data = Vec::with_capacity(indices.len() * 2 * answer_len);
        for &pair in indices {
            for answer in self.of(pair, image)? {
                anyhow::ensure!(
                    answer.len() <= answer_len,
                    "pair {pair}: {} precomputed reference log-probs for an answer of at most {answer_len} tokens",
                    answer.len()
                );
                data.extend(answer.iter().copied());
                data.extend(std::iter::repeat_n(0.0, answer_len - answer.len()));
            }
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [indices.len(), 2, answer_len]),
            device,
        ))
    }
}

/// Where and how a run's reference log-probs are precomputed.
#[derive(Debug, Clone)]
pub struct ReferenceCache {
    /// The cache folder (`RUN/reference_logps`).
    pub dir: PathBuf,
    /// What the scores depend on besides the pairs' tokens (pairs, model, dtype, ...); the cache
    /// adds the scored images, counts and format.
    pub inputs: RunIdentity,
    /// The images the loss scores.
    pub images: Vec<PairImage>,
    /// Pairs per reference forward pass.
    pub batch: usize,
}

impl ReferenceCache {
    /// The cache of the run in `run_dir` for `loss`, scoring `batch` pairs per forward pass.
    pub fn new(run_dir: &Path, inputs: RunIdentity, loss: &PreferenceLoss, batch: usize) -> Self {
        Self {
            dir: run_dir.join(REFERENCE_LOGPS_DIR),
            inputs,
            images: PairImage::scored_by(loss),
            batch: batch.max(1),
        }
    }

    /// The identity of the scores of `examples`.
    fn identity(&self, examples: &[AlignExample]) -> RunIdentity {
        let names: Vec<&str> = self.images.iter().map(|i| i.name()).collect();
        let tokens: usize = examples
            .iter()
            .map(|e| e.chosen.0.len() + e.rejected.0.len())
            .sum();
        self.inputs
            .clone()
            .with("format", FORMAT)
            .with("images", names)
            .with("pairs_count", examples.len())
            .with("answer_tokens", tokens)
    }

    /// Values per pair in the file.
    fn pair_len(&self, example: &AlignExample) -> usize {
        self.images.len() * (example.chosen.0.len() + example.rejected.0.len())
    }

    /// The reference log-probs of `examples`: those already in the cache when it was scored
    /// for the same inputs, the rest scored with `reference` (graph-free: an inner-backend
    /// model) and appended batch by batch.
    pub fn load_or_score<B: Backend>(
        &self,
        reference: &Model<B>,
        processor: &FileProcessor,
        examples: &[AlignExample],
        device: &B::Device,
    ) -> anyhow::Result<ReferenceLogps> {
        let values_path = self.dir.join(LABEL_LOGPS_FILE);
        let kept = self.kept_values(examples, &values_path)?;
        let mut rows = Vec::with_capacity(examples.len());
        let mut offset = 0;
        for example in examples {
            let len = self.pair_len(example);
            if offset + len > kept.len() {
                break;
            }
            rows.push(self.split_pair(example, &kept[offset..offset + len]));
            offset += len;
        }
        // Cut a torn tail (a pair half written when the precompute stopped).
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&values_path)
            .with_context(|| format!("opening {}", values_path.display()))?;
        file.set_len((offset * 4) as u64)
            .with_context(|| format!("truncating {}", values_path.display()))?;
        let done = rows.len();
        if done < examples.len() {
            eprintln!(
                "scoring the reference on {} pairs ({done} already in {}) for --precompute-reference",
                examples.len() - done,
                self.dir.display()
            );
        }
        let started = Instant::now();
        for chunk in examples[done..].chunks(self.batch) {
            let chunk: Vec<&AlignExample> = chunk.iter().collect();
            let mut scored = Vec::with_capacity(self.images.len());
            for &image in &self.images {
                scored.push(answer_label_logps(
                    reference, processor, &chunk, image, device,
                )?);
            }
            let mut bytes = Vec::new();
            for pair in 0..chunk.len() {
                let row: Vec<[Vec<f32>; 2]> = scored.iter().map(|s| s[pair].clone()).collect();
                for value in row.iter().flatten().flatten() {
                    bytes.extend_from_slice(&value.to_le_bytes());
                }
                rows.push(row);
            }
            file.write_all(&bytes)
                .and_then(|()| file.flush())
                .with_context(|| format!("appending to {}", values_path.display()))?;
            anyhow::ensure!(
                rows.len() == examples.len() || !interrupt::take_stop_request(),
                "interrupted while precomputing the reference log-probs, after {} of {} pairs \
                 (kept in {}); run the same command again to continue",
                rows.len(),
                examples.len(),
                self.dir.display()
            );
        }
        if done < examples.len() {
            eprintln!(
                "reference log-probs of {} pairs scored in {:.1} s",
                examples.len() - done,
                started.elapsed().as_secs_f64()
            );
        }
        Ok(ReferenceLogps {
            images: self.images.clone(),
            rows,
        })
    }

    /// The values already in the cache that may be reused: all of them when its identity is
    /// this one's, none otherwise (a stale cache is removed, with a warning naming why, and the
    /// new identity written).
    fn kept_values(&self, examples: &[AlignExample], values: &Path) -> anyhow::Result<Vec<f32>> {
        let identity = self.identity(examples);
        let saved = match RunIdentity::load(&self.dir) {
            Ok(saved) => saved,
            Err(err) => {
                eprintln!("warning: {err:#}; scoring the reference log-probs again");
                None
            }
        };
        let stale = match &saved {
            Some(saved) => {
                let differences = saved.differences(&identity);
                if differences.is_empty() {
                    let bytes = match fs::read(values) {
                        Ok(bytes) => bytes,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                        Err(e) => {
                            return Err(e).with_context(|| format!("reading {}", values.display()))
                        }
                    };
                    let total: usize = examples.iter().map(|e| self.pair_len(e)).sum();
                    if bytes.len() <= total * 4 {
                        return Ok(bytes
                            .chunks_exact(4)
                            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                            .collect());
                    }
                    vec![format!(
                        "{} holds more values than the pairs have answer tokens",
                        values.display()
                    )]
                } else {
                    differences
                }
            }
            None => Vec::new(),
        };
        if values.exists() {
            let why = if stale.is_empty() {
                "it has no readable run.json saying what was scored".to_string()
            } else {
                stale.join("; ")
            };
            eprintln!(
                "warning: the reference log-probs in {} do not belong to this run ({why}); \
                 scoring them again",
                self.dir.display()
            );
            fs::remove_file(values)
                .with_context(|| format!("removing the stale {}", values.display()))?;
        }
        identity.save(&self.dir)?;
        Ok(Vec::new())
    }

    /// One pair's values, image by image, as `[chosen, rejected]` rows.
    fn split_pair(&self, example: &AlignExample, values: &[f32]) -> Vec<[Vec<f32>; 2]> {
        let (c, r) = (example.chosen.0.len(), example.rejected.0.len());
        (0..self.images.len())
            .map(|k| {
                let image = &values[k * (c + r)..(k + 1) * (c + r)];
                [image[..c].to_vec(), image[c..].to_vec()]
            })
            .collect()
    }
}
