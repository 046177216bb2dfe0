//! FiRe-MPO: fine-grained, on-policy, visually grounded preference optimization for medical LVLMs
//! (arXiv 2606.12590, Eqs. 3–5; companion repository `shayan80emzed/FiRe-MPO`,
//! `fire_mpo/loss/fire_mpo.py`).

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::{CorruptedAnswers, PreferenceBatch};
use crate::dpo::preference_nll;
use crate::error::{require_non_negative, require_positive, require_unit_interval, LossError};
use crate::output::{LossMetrics, LossOutput, Metric};

/// FiRe-MPO hyperparameters. Special cases: `gamma = 0, lambda = 1` is RRPO-like with a
/// phrase-masked forward KL; `gamma = 0, alpha = 0` is Mask-DPO.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FiReMpoConfig {
    /// Inverse temperature `β > 0` of the token rewards.
    pub beta: f64,
    /// Weight `γ >= 0` of the reversed visual rank term under the corrupted image.
    pub gamma: f64,
    /// Mix `λ ∈ [0, 1]`: `λ·FKL + (1−λ)·RKL`.
    pub lambda: f64,
    /// Weight `α >= 0` of the bidirectional KL.
    pub alpha: f64,
}

impl Default for FiReMpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            gamma: 0.1,
            lambda: 0.5,
            alpha: 0.01,
        }
    }
}

impl FiReMpoConfig {
    /// Checks `beta > 0`, `gamma >= 0`, `0 <= lambda <= 1`, `alpha >= 0`.
    pub fn validate(&self) -> Result<(), LossError> {
        require_positive("FiRe-MPO", "beta", self.beta)?;
        require_non_negative("FiRe-MPO", "gamma", self.gamma)?;
        require_unit_interval("FiRe-MPO", "lambda", self.lambda)?;
        require_non_negative("FiRe-MPO", "alpha", self.alpha)
    }

    /// FiRe-MPO loss `L = L_rank + α·L_KL` with
    ///
    /// `L_rank = −log σ( Σ_{i∈M+} r(v, y+_i) − Σ_{i∈M−} r(v, y−_i) )`
    /// `       − γ · log σ( Σ_{i∈M−} r(v', y−_i) − Σ_{i∈M+} r(v', y+_i) )`
    /// `L_KL   = Σ_{t∈M+} [ λ·KL(π_ref ‖ π_θ)_t + (1−λ)·KL(π_θ ‖ π_ref)_t ]` (clean image)
    ///
    /// where `r(·, y_i) = β (log π_θ(y_i) − log π_ref(y_i))` and `M±` are the phrase masks
    /// (phrase id > 0). The visual term is reversed on purpose: once the lesion evidence is
    /// destroyed, the model must no longer prefer the confident correct claim. It is skipped for
    /// examples whose `present` flag is 0, and for the whole batch when `batch.corrupted` is
    /// `None`. With `alpha = 0` the KL is still reported, computed without a graph.
    ///
    /// # Shapes
    /// - logits `[batch, seq_len, vocab]` per variant → loss `[1]`, per-example `[batch]`
    ///
    /// # Errors
    /// Invalid config, mismatched shapes, or `gamma > 0` with corrupted variants lacking `rejected`.
    pub fn loss<B: Backend>(&self, batch: PreferenceBatch<B>) -> Result<LossOutput<B>, LossError> {
        self.validate()?;
        batch.check()?;
        let visual = match batch.corrupted {
            Some(corrupted) => self.visual_term(corrupted)?,
            None => None,
        };
        let chosen = batch.chosen.score();
        let rejected = batch.rejected.score();
        let chosen_reward = chosen.reward(self.beta, &chosen.phrase_mask);
        let rejected_reward = rejected.reward(self.beta, &rejected.phrase_mask);
        let rank = preference_nll(chosen_reward.clone(), rejected_reward.clone());

        let kl_scores = if self.alpha > 0.0 {
            chosen.clone()
        } else {
            chosen.detached()
        };
        let forward_kl = kl_scores.forward_kl_sum(&chosen.phrase_mask, "FiRe-MPO")?;
        let reverse_kl = kl_scores.reverse_kl_sum(&chosen.phrase_mask, "FiRe-MPO")?;
        let kl = forward_kl.clone().mul_scalar(self.lambda)
            + reverse_kl.clone().mul_scalar(1.0 - self.lambda);
        let mut per_example = rank.clone() + kl.clone().mul_scalar(self.alpha);

        let mut metrics = LossMetrics::default();
        metrics.push_mean(Metric::RankLoss, rank);
        if let Some(visual) = visual {
            per_example = per_example + visual.loss.clone().mul_scalar(self.gamma);
            metrics.push_mean(Metric::VisualLoss, visual.loss);
            metrics.push_present_mean(Metric::VisualMargin, visual.margin, visual.present);
        }
        metrics.push_mean(Metric::KlLoss, kl);
        metrics.push_mean(Metric::ForwardKl, forward_kl);
        metrics.push_mean(Metric::ReverseKl, reverse_kl);
        metrics.push_rewards(&chosen_reward, &rejected_reward);
        metrics.push_mean(Metric::ChosenLogps, chosen.policy_sequence_logp());
        metrics.push_mean(Metric::RejectedLogps, rejected.policy_sequence_logp());
        Ok(LossOutput::new(per_example, metrics))
    }

    /// The reversed visual rank term per example, or `None` when the batch's corrupted variants
    /// lack `(v', y−)` and `gamma = 0` (the term would be weighted by zero anyway).
    fn visual_term<B: Backend>(
        &self,
        corrupted: CorruptedAnswers<B>,
    ) -> Result<Option<VisualTerm<B>>, LossError> {
        let Some(corrupted_rejected) = corrupted.rejected else {
            if self.gamma > 0.0 {
                return Err(LossError::MissingInput {
                    loss: "FiRe-MPO",
                    field: "corrupted.rejected",
                    hint: "score (v', y-) too, or set gamma = 0 to drop the visual term",
                });
            }
            return Ok(None);
        };
        let corrupted_chosen = corrupted.chosen.score();
        let corrupted_rejected = corrupted_rejected.score();
        let chosen = corrupted_chosen.reward(self.beta, &corrupted_chosen.phrase_mask);
        let rejected = corrupted_rejected.reward(self.beta, &corrupted_rejected.phrase_mask);
        Ok(Some(VisualTerm {
            loss: preference_nll(rejected.clone(), chosen.clone()) * corrupted.present.clone(),
            margin: (rejected - chosen).detach(),
            present: corrupted.present,
        }))
    }
}

/// The visual rank term of a batch under the corrupted image.
struct VisualTerm<B: Backend> {
    /// `−log σ(r(v',y−) − r(v',y+))`, zero where no corrupted image exists, `[batch]`.
    loss: Tensor<B, 1>,
    /// `r(v',y−) − r(v',y+)`, detached, `[batch]`.
    margin: Tensor<B, 1>,
    /// Which examples have a corrupted image, `[batch]`.
    present: Tensor<B, 1>,
}
