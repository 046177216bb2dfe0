//! mDPO: conditional preference optimization for multimodal models (Wang et al. 2024,
//! "mDPO: Conditional Preference Optimization for Multimodal Large Language Models", Eqs. 3–5).

use burn::tensor::{backend::Backend, Tensor};
use serde::{Deserialize, Serialize};

use crate::batch::PreferenceBatch;
use crate::dpo::preference_nll;
use crate::error::{require_finite, require_non_negative, require_positive, LossError};
use crate::output::{LossMetrics, LossOutput, Metric};

/// mDPO hyperparameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MdpoConfig {
    /// Inverse temperature `β > 0`.
    pub beta: f64,
    /// Anchor threshold `δ`: the chosen reward is pushed above it (0 in the paper).
    pub anchor_delta: f64,
    /// Weight of the image-conditional term (1 in the paper).
    pub conditional_weight: f64,
    /// Weight of the anchor term (1 in the paper).
    pub anchor_weight: f64,
}

impl Default for MdpoConfig {
    fn default() -> Self {
        Self {
            beta: 0.1,
            anchor_delta: 0.0,
            conditional_weight: 1.0,
            anchor_weight: 1.0,
        }
    }
}

impl MdpoConfig {
    /// Checks `beta > 0`, finite `anchor_delta`, non-negative weights.
    pub fn validate(&self) -> Result<(), LossError> {
        require_positive("mDPO", "beta", self.beta)?;
        require_finite("mDPO", "anchor_delta", self.anchor_delta)?;
        require_non_negative("mDPO", "conditional_weight", self.conditional_weight)?;
        require_non_negative("mDPO", "anchor_weight", self.anchor_weight)
    }

    /// mDPO loss = DPO + conditional + anchor:
    ///
    /// `L = −log σ(r(v,y+) − r(v,y−))`
    /// `  − w_c · log σ( β[(ℓθ(y+|v) − ℓθ(y+|v')) − (ℓref(y+|v) − ℓref(y+|v'))] )`
    /// `  − w_a · log σ( r(v,y+) − δ )`
    ///
    /// with `r = β Σ_t (ℓθ − ℓref)` over all answer tokens. The conditional term equals
    /// `−log σ(r(v,y+) − r(v',y+))`; it is skipped (zero) for examples whose `present` flag is 0,
    /// and for the whole batch when `batch.corrupted` is `None`. Needs only `corrupted.chosen`.
    pub fn loss<B: Backend>(&self, batch: PreferenceBatch<B>) -> Result<LossOutput<B>, LossError> {
        self.validate()?;
        batch.check()?;
        let chosen = batch.chosen.score();
        let rejected = batch.rejected.score();
        let chosen_reward = chosen.reward(self.beta, &chosen.answer_mask);
        let rejected_reward = rejected.reward(self.beta, &rejected.answer_mask);
        let dpo = preference_nll(chosen_reward.clone(), rejected_reward.clone());
        let anchor = preference_nll(
            chosen_reward.clone(),
            chosen_reward.zeros_like().add_scalar(self.anchor_delta),
        );
        let mut per_example = dpo.clone() + anchor.clone().mul_scalar(self.anchor_weight);

        let mut metrics = LossMetrics::default();
        metrics.push_mean(Metric::RankLoss, dpo);
        if let Some(corrupted) = batch.corrupted {
            let corrupted_chosen = corrupted.chosen.score();
            let corrupted_reward =
                corrupted_chosen.reward(self.beta, &corrupted_chosen.answer_mask);
            let conditional: Tensor<B, 1> =
                preference_nll(chosen_reward.clone(), corrupted_reward.clone())
                    * corrupted.present.clone();
            per_example = per_example + conditional.clone().mul_scalar(self.conditional_weight);
            metrics.push_mean(Metric::VisualLoss, conditional);
            let margin = (chosen_reward.clone() - corrupted_reward).detach();
            metrics.push_present_mean(Metric::VisualMargin, margin, corrupted.present);
        }
        metrics.push_mean(Metric::AnchorLoss, anchor);
        metrics.push_rewards(&chosen_reward, &rejected_reward);
        metrics.push_mean(Metric::ChosenLogps, chosen.policy_sequence_logp());
        metrics.push_mean(Metric::RejectedLogps, rejected.policy_sequence_logp());
        Ok(LossOutput::new(per_example, metrics))
    }
}
