//! Batched autoregressive generation with a KV cache: greedy or temperature + nucleus (top-p)
//! sampling, stop tokens, a token budget, left or right padded prompts
//! (HF `GenerationMixin._sample`; llama-burn `generation.rs`).

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::decoder::Decoder;
use crate::error::ModelError;
use crate::kv_cache::KvCache;
use crate::mask::{attention_bias, int_tensor, RowLayout};
use crate::vlm::{Vlm, VlmInput};

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// Most likely token (ties: lowest id).
    Greedy,
    /// Sample from `softmax(logits / temperature)` restricted to the smallest set of tokens whose
    /// probability reaches `top_p`.
    TopP { temperature: f64, top_p: f64 },
}

/// Generation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationConfig {
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seeds the sampler; the same seed and inputs give the same tokens.
    pub seed: u64,
    /// Generation of a row stops after one of these (EOS, `<|im_end|>`, …); it is not returned.
    pub stop_token_ids: Vec<u32>,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: Sampling::Greedy,
            seed: 0,
            stop_token_ids: Vec::new(),
        }
    }
}

/// Generated continuations, one per prompt row.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New tokens of each row, without the stop token.
    pub tokens: Vec<Vec<u32>>,
    /// `log p(token)` under the (untempered) model for each returned token.
    pub log_probs: Vec<Vec<f32>>,
    /// Whether the row ended on a stop token (else it ran out of `max_new_tokens`).
    pub stopped: Vec<bool>,
}

/// Log-softmax of one row of logits, in f64.
fn log_softmax_row(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let lse = logits
        .iter()
        .map(|&l| (l as f64 - max).exp())
        .sum::<f64>()
        .ln()
        + max;
    logits.iter().map(|&l| l as f64 - lse).collect()
}

/// Chooses one token from a row of logits.
fn choose(logits: &[f32], sampling: Sampling, rng: &mut StdRng) -> usize {
    match sampling {
        Sampling::Greedy => {
            logits
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &l)| {
                    if l > best.1 {
                        (i, l)
                    } else {
                        best
                    }
                })
                .0
        }
        Sampling::TopP { temperature, top_p } => {
            let scaled: Vec<f32> = logits
                .iter()
                .map(|&l| (l as f64 / temperature.max(1e-6)) as f32)
                .collect();
            let probs: Vec<f64> = log_softmax_row(&scaled).into_iter().map(f64::exp).collect();
            let mut order: Vec<usize> = (0..probs.len()).collect();
            order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]));
            let mut kept = 0.0;
            let mut n = 0;
            for &i in &order {
                kept += probs[i];
                n += 1;
                if kept >= top_p {
                    break;
                }
            }
            let mut u = rng.random::<f64>() * kept;
            for &i in &order[..n] {
                u -= probs[i];
                if u <= 0.0 {
                    return i;
                }
            }
            order[n - 1]
        }
    }
}

/// Refuses a temperature or `top_p` that does not define a distribution.
pub(crate) fn check_sampling(config: &GenerationConfig) -> Result<(), ModelError> {
    if let Sampling::TopP { temperature, top_p } = config.sampling {
        if !(temperature > 0.0 && temperature.is_finite() && top_p > 0.0 && top_p <= 1.0) {
            return Err(ModelError::InvalidConfig {
                field: "generation.sampling".into(),
                message: format!(
                    "temperature {temperature} must be > 0 and top_p {top_p} in (0, 1]"
                ),
            });
        }
    }
    Ok(())
}

/// Prompt rows re-packed to left padding, so every row's next token sits in the last column.
pub(crate) struct LeftPacked {
    /// `[batch][prompt_len]`, padding id 0.
    pub ids: Vec<Vec<i64>>,
    pub mask: Vec<Vec<bool>>,
    /// Real tokens per row.
    pub n_real: Vec<usize>,
}

/// Moves each row's real tokens (in order) to the end of the row.
pub(crate) fn left_pack(ids: &[Vec<i64>], mask: &[Vec<bool>]) -> Result<LeftPacked, ModelError> {
    let prompt_len = ids.first().map_or(0, Vec::len);
    let mut out = LeftPacked {
        ids: Vec::with_capacity(ids.len()),
        mask: Vec::with_capacity(ids.len()),
        n_real: Vec::with_capacity(ids.len()),
    };
    for (row, m) in ids.iter().zip(mask) {
        let real: Vec<i64> = row
            .iter()
            .zip(m)
            .filter(|(_, &m)| m)
            .map(|(&t, _)| t)
            .collect();
        if real.is_empty() {
            return Err(ModelError::Input(
                "a prompt row has no tokens (attention_mask all 0)".into(),
            ));
        }
        let pad = prompt_len - real.len();
        out.n_real.push(real.len());
        out.mask
            .push([vec![false; pad], vec![true; real.len()]].concat());
        out.ids.push([vec![0; pad], real].concat());
    }
    Ok(out)
}

/// The state after a model ran its (left-packed) prompt once: what [`decode`] continues from.
pub(crate) struct Prefilled<B: Backend> {
    /// Logits of the next token `[batch, 1, vocab]`.
    pub logits: Tensor<B, 3>,
    /// One filled cache per decoder layer.
    pub caches: Vec<KvCache<B>>,
    /// Per row, per cached position: is it a real token.
    pub key_valid: Vec<Vec<bool>>,
    /// Position of each row's first generated token (the same on every M-RoPE axis).
    pub next_positions: Vec<i64>,
}

/// The decode loop shared by every model family: chooses a token per row from the prefill's
/// logits, then runs one cached decoder step per new token until every row stopped or
/// `config.max_new_tokens` is reached. `banned` (the image placeholder) is never chosen: fed
/// back, it would be read as an image slot. Steps use 1-D positions, which for text tokens
/// equal M-RoPE with all three axes at that position ([`crate::Rope::mrope_tables`]).
pub(crate) fn decode<B: Backend>(
    decoder: &Decoder<B>,
    prefilled: Prefilled<B>,
    banned: Option<usize>,
    config: &GenerationConfig,
) -> Generation {
    let Prefilled {
        mut logits,
        mut caches,
        mut key_valid,
        mut next_positions,
    } = prefilled;
    let device = logits.device();
    let batch = key_valid.len();
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut out = Generation {
        tokens: vec![Vec::new(); batch],
        log_probs: vec![Vec::new(); batch],
        stopped: vec![false; batch],
    };
    let mut done = vec![false; batch];
    for step in 0..config.max_new_tokens {
        let vocab = logits.dims()[2];
        let host: Vec<f32> = logits
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap_or_default();
        let mut next = vec![0i64; batch];
        for b in 0..batch {
            let row = &host[b * vocab..(b + 1) * vocab];
            let token = match banned {
                Some(image) if image < vocab => {
                    let mut allowed = row.to_vec();
                    allowed[image] = f32::NEG_INFINITY;
                    choose(&allowed, config.sampling, &mut rng)
                }
                _ => choose(row, config.sampling, &mut rng),
            };
            next[b] = token as i64;
            if done[b] {
                continue;
            }
            if config.stop_token_ids.contains(&(token as u32)) {
                done[b] = true;
                out.stopped[b] = true;
            } else {
                out.tokens[b].push(token as u32);
                out.log_probs[b].push(log_softmax_row(row)[token] as f32);
            }
        }
        if done.iter().all(|&d| d) || step + 1 == config.max_new_tokens {
            break;
        }
        for valid in key_valid.iter_mut() {
            valid.push(true);
        }
        let past = caches[0].len();
        let rows: Vec<RowLayout> = key_valid
            .iter()
            .map(|v| RowLayout {
                key_valid: v.clone(),
                key_segment: vec![0; v.len()],
            })
            .collect();
        let bias = attention_bias::<B>(&rows, past, 1, &device);
        let positions: Vec<Vec<i64>> = next_positions.iter().map(|&p| vec![p]).collect();
        for p in next_positions.iter_mut() {
            *p += 1;
        }
        let tokens = Tensor::<B, 2, Int>::from_data(TensorData::new(next, [batch, 1]), &device);
        let embeds = decoder.embed(tokens);
        let hidden = decoder.forward(
            embeds,
            int_tensor::<B>(&positions, &device),
            bias,
            &mut caches,
        );
        logits = decoder.logits(hidden);
    }
    out
}

impl<B: Backend> Vlm<B> {
    /// Generates up to `config.max_new_tokens` tokens after each prompt row.
    ///
    /// Prompts may be left- or right-padded (`input.attention_mask`); they are re-packed to left
    /// padding so every row's next token sits in the last column, and positions follow HF
    /// (`cumsum(mask) - 1`). The prompt (with its image) runs once; each new token then costs one
    /// cached decoder step (the decode loop every family shares).
    pub fn generate(
        &self,
        input: VlmInput<B>,
        config: &GenerationConfig,
    ) -> Result<Generation, ModelError> {
        let device = input.input_ids.device();
        let (ids, mask) = input.host();
        self.generate_host(ids, mask, input.pixel_values, config, &device)
    }

    /// [`Vlm::generate`] on host ids and mask `[batch][seq]` (true = token): the prompt's ids
    /// are never read back from the device.
    pub fn generate_host(
        &self,
        ids: Vec<Vec<i64>>,
        mask: Vec<Vec<bool>>,
        pixel_values: Option<Tensor<B, 4>>,
        config: &GenerationConfig,
        device: &B::Device,
    ) -> Result<Generation, ModelError> {
        check_sampling(config)?;
        // Original-LLaVA placeholders (-200) expand before the re-pack below.
        let (ids, mask) = self.expand_host_ids(ids, mask)?;
        let packed = left_pack(&ids, &mask)?;
        let prompt_len = ids.first().map_or(0, Vec::len);
        let mut caches = KvCache::for_layers(self.decoder.layers.len());
        let hidden =
            self.forward_hidden_host(&packed.ids, &packed.mask, pixel_values, &mut caches, device)?;
        let prefilled = Prefilled {
            logits: self.decoder.logits(hidden.narrow(1, prompt_len - 1, 1)),
            caches,
            key_valid: packed.mask,
            next_positions: packed.n_real.iter().map(|&n| n as i64).collect(),
        };
        let banned = self
            .config
            .vision
            .as_ref()
            .map(|_| self.config.image_token_id);
        Ok(decode(&self.decoder, prefilled, banned, config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_nucleus() {
        let mut rng = StdRng::seed_from_u64(3);
        let logits = [0.0f32, 5.0, 1.0, 4.9];
        assert_eq!(choose(&logits, Sampling::Greedy, &mut rng), 1);
        for _ in 0..50 {
            let t = choose(
                &logits,
                Sampling::TopP {
                    temperature: 1.0,
                    top_p: 0.6,
                },
                &mut rng,
            );
            assert!(t == 1 || t == 3, "{t} is outside the nucleus");
            let t = choose(
                &logits,
                Sampling::TopP {
                    temperature: 1.0,
                    top_p: 1e-9,
                },
                &mut rng,
            );
            assert_eq!(t, 1);
        }
    }
}
