//! RRPO: Refined Regularized Preference Optimization (Sarkar et al. 2025, `pritamqu/RRPO`,
//! `llava/losses.py`): phrase-level rewards plus a token-wise forward-KL regularizer.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::batch::PreferenceBatch;
use crate::dpo::preference_nll;
use crate::error::{require_non_negative, require_positive, LossError};
use crate::output::{LossMetrics, LossOutput, Metric};

/// RRPO hyperparameters (authors' ranges: β 0.1–0.9, α 0.01–0.1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RrpoConfig {
    /// Inverse temperature `β > 0` of the phrase rewards.
    pub beta: f64,
    /// Weight `α >= 0` of the token-wise forward KL over the chosen answer.
    pub alpha: f64,
}

impl Default for RrpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            alpha: 0.01,
        }
    }
}

impl RrpoConfig {
    /// Checks `beta > 0`, `alpha >= 0`.
    pub fn validate(&self) -> Result<(), LossError> {
        require_positive("RRPO", "beta", self.beta)?;
        require_non_negative("RRPO", "alpha", self.alpha)
    }

    /// RRPO loss:
    ///
    /// `L = −log σ( Σ_k [R+_k − R−_k] ) + α Σ_{t ∈ y+} KL(π_ref ‖ π_θ)_t`,
    /// `R_k = β Σ_{t ∈ phrase k} [log π_θ(y_t) − log π_ref(y_t)]`.
    ///
    /// Since every phrase id `k >= 1` appears in the sum, `Σ_k [R+_k − R−_k]` equals the difference of
    /// the rewards summed over all phrase tokens of `y+` and of `y−`; that is how it is computed.
    /// The KL covers every answer token of `y+`, not only the phrases.
    ///
    /// # Shapes
    /// - logits `[batch, seq_len, vocab]` per variant → loss `[1]`, per-example `[batch]`
    pub fn loss<B: Backend>(&self, batch: PreferenceBatch<B>) -> Result<LossOutput<B>, LossError> {
        self.validate()?;
        batch.check()?;
        let chosen = batch.chosen.score();
        let rejected = batch.rejected.score();
        let chosen_reward = chosen.reward(self.beta, &chosen.phrase_mask);
        let rejected_reward = rejected.reward(self.beta, &rejected.phrase_mask);
        let rank = preference_nll(chosen_reward.clone(), rejected_reward.clone());
        let forward_kl = chosen.forward_kl_sum(&chosen.answer_mask, "RRPO")?;
        let per_example = rank.clone() + forward_kl.clone().mul_scalar(self.alpha);

        let mut metrics = LossMetrics::default();
        metrics.push_mean(Metric::RankLoss, rank);
        metrics.push_mean(Metric::KlLoss, forward_kl.clone());
        metrics.push_mean(Metric::ForwardKl, forward_kl);
        metrics.push_rewards(&chosen_reward, &rejected_reward);
        metrics.push_mean(Metric::ChosenLogps, chosen.policy_sequence_logp());
        metrics.push_mean(Metric::RejectedLogps, rejected.policy_sequence_logp());
        Ok(LossOutput::new(per_example, metrics))
    }
}
