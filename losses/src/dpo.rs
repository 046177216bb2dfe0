//! DPO with the sigmoid loss (Rafailov et al. 2023, "Direct Preference Optimization", Eq. 7).

use burn::tensor::{activation::log_sigmoid, backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::PreferenceBatch;
use crate::error::{require_positive, LossError};
use crate::output::{LossMetrics, LossOutput, Metric};

/// DPO hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DpoConfig {
    /// Inverse temperature `β > 0` of the implicit reward (TRL's `beta`).
    pub beta: f64,
}

impl Default for DpoConfig {
    fn default() -> Self {
        Self { beta: 0.1 }
    }
}

/// `−log σ(chosen − rejected)` per example: the Bradley–Terry negative log-likelihood of
/// preferring `chosen`, computed with a stable log-sigmoid.
pub fn preference_nll<B: Backend>(chosen: Tensor<B, 1>, rejected: Tensor<B, 1>) -> Tensor<B, 1> {
    log_sigmoid(chosen - rejected).neg()
}

impl DpoConfig {
    /// Checks `beta > 0`.
    pub fn validate(&self) -> Result<(), LossError> {
        require_positive("DPO", "beta", self.beta)
    }

    /// DPO loss over all answer tokens:
    ///
    /// `L = −log σ( β Σ_t [log π_θ(y+_t) − log π_ref(y+_t)] − β Σ_t [log π_θ(y−_t) − log π_ref(y−_t)] )`
    ///
    /// Uses `batch.chosen` and `batch.rejected`; ignores corrupted variants and phrase ids.
    ///
    /// # Shapes
    /// - logits `[batch, seq_len, vocab]` per variant → loss `[1]`, per-example `[batch]`
    pub fn loss<B: Backend>(&self, batch: PreferenceBatch<B>) -> Result<LossOutput<B>, LossError> {
        self.validate()?;
        batch.check()?;
        let chosen = batch.chosen.score();
        let rejected = batch.rejected.score();
        let chosen_reward = chosen.reward(self.beta, &chosen.answer_mask);
        let rejected_reward = rejected.reward(self.beta, &rejected.answer_mask);
        let per_example = preference_nll(chosen_reward.clone(), rejected_reward.clone());

        let mut metrics = LossMetrics::default();
        metrics.push_mean(Metric::RankLoss, per_example.clone());
        metrics.push_rewards(&chosen_reward, &rejected_reward);
        metrics.push_mean(Metric::ChosenLogps, chosen.policy_sequence_logp());
        metrics.push_mean(Metric::RejectedLogps, rejected.policy_sequence_logp());
        Ok(LossOutput::new(per_example, metrics))
    }
}
