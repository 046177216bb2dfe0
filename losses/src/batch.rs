//! Loss inputs: answer-position logits of policy and reference for each answer variant.
//!
//! A preference example has up to four variants: `(v, y+)`, `(v, y−)` under the clean image and
//! `(v', y+)`, `(v', y−)` under the lesion-corrupted image. Each loss takes only the logits at the
//! answer positions (never prompt or image positions), so the model can skip the vocabulary
//! projection everywhere else.

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::error::{require_shape, LossError};
use crate::kl::{forward_kl, reverse_kl};
use crate::logps::{masked_sum, VocabLogProbs};

/// The frozen reference's side of one scored answer variant. Detached inside the loss, so
/// passing autodiff tensors is safe.
#[derive(Debug, Clone)]
pub enum ReferenceScores<B: Backend> {
    /// Reference-model logits at the answer positions, `[batch, seq_len, vocab]`: what every
    /// loss can use.
    Logits(Tensor<B, 3>),
    /// The reference's label log-probs `log π_ref(y_t)`, `[batch, seq_len]` (any finite value
    /// at padding), computed once before training (`firempo align --precompute-reference`).
    /// Enough for the losses that read only the reference's rewards (DPO, mDPO); RRPO and
    /// FiRe-MPO also read its distribution for their KL and refuse this variant
    /// ([`PreferenceLoss::reads_reference_distribution`](crate::PreferenceLoss::reads_reference_distribution)).
    LabelLogProbs(Tensor<B, 2>),
}

/// One answer variant scored by the policy and by the frozen reference.
///
/// `logits[n, t]` predicts `labels[n, t]` (the caller shifts by one).
///
/// # Shapes
/// - `policy_logits`: `[batch, seq_len, vocab]`; `reference`: see [`ReferenceScores`]
/// - `labels`, `phrase_ids`: `[batch, seq_len]` (Int); `answer_mask`: `[batch, seq_len]` (0/1)
#[derive(Debug, Clone)]
pub struct ScoredAnswer<B: Backend> {
    /// Policy logits at the answer positions.
    pub policy_logits: Tensor<B, 3>,
    /// The reference at the same positions: its logits, or its precomputed label log-probs.
    pub reference: ReferenceScores<B>,
    /// Answer token ids; any valid id at padding positions.
    pub labels: Tensor<B, 2, Int>,
    /// 1 for real answer tokens, 0 for padding.
    pub answer_mask: Tensor<B, 2>,
    /// Phrase ids: 0 outside the edited spans, `k >= 1` inside span `k` (aligned across `y+`/`y−`).
    pub phrase_ids: Tensor<B, 2, Int>,
}

impl<B: Backend> ScoredAnswer<B> {
    /// Checks that all tensors agree in shape; returns `[batch, seq_len, vocab]`.
    pub fn check(&self, name: &str) -> Result<[usize; 3], LossError> {
        let dims = self.policy_logits.dims();
        let seq = [dims[0], dims[1]];
        match &self.reference {
            ReferenceScores::Logits(logits) => {
                require_shape(format!("{name}.reference_logits"), &dims, &logits.dims())?
            }
            ReferenceScores::LabelLogProbs(logps) => {
                require_shape(format!("{name}.reference_logps"), &seq, &logps.dims())?
            }
        }
        require_shape(format!("{name}.labels"), &seq, &self.labels.dims())?;
        require_shape(
            format!("{name}.answer_mask"),
            &seq,
            &self.answer_mask.dims(),
        )?;
        require_shape(format!("{name}.phrase_ids"), &seq, &self.phrase_ids.dims())?;
        Ok(dims)
    }

    /// Normalizes both logits once and gathers the label log-probs (the reference's are taken
    /// as given when precomputed).
    pub(crate) fn score(self) -> AnswerScores<B> {
        let policy = VocabLogProbs::from_logits(self.policy_logits);
        let (reference, reference_label_logps) = match self.reference {
            ReferenceScores::Logits(logits) => {
                let reference = VocabLogProbs::from_logits(logits.detach());
                let logps = reference.label_log_probs(self.labels.clone());
                (Some(reference), logps)
            }
            ReferenceScores::LabelLogProbs(logps) => (None, logps.detach()),
        };
        let answer_mask = self.answer_mask;
        let phrase_mask = self.phrase_ids.greater_elem(0).float() * answer_mask.clone();
        AnswerScores {
            policy_logps: policy.label_log_probs(self.labels) * answer_mask.clone(),
            reference_logps: reference_label_logps * answer_mask.clone(),
            policy,
            reference,
            answer_mask,
            phrase_mask,
        }
    }
}

/// The lesion-corrupted variants `(v', y+)` and `(v', y−)` of a batch.
///
/// `rejected` may be `None` for losses that only need `(v', y+)` (mDPO).
#[derive(Debug, Clone)]
pub struct CorruptedAnswers<B: Backend> {
    /// `(v', y+)`: the chosen answer scored under the corrupted image.
    pub chosen: ScoredAnswer<B>,
    /// `(v', y−)`: the rejected answer scored under the corrupted image.
    pub rejected: Option<ScoredAnswer<B>>,
    /// `[batch]`, 1 where the example has a corrupted image, 0 where the term must be skipped.
    pub present: Tensor<B, 1>,
}

/// Everything a preference loss consumes for one batch.
#[derive(Debug, Clone)]
pub struct PreferenceBatch<B: Backend> {
    /// `(v, y+)`: the chosen (corrected) answer under the clean image.
    pub chosen: ScoredAnswer<B>,
    /// `(v, y−)`: the rejected (model's own) answer under the clean image.
    pub rejected: ScoredAnswer<B>,
    /// The corrupted-image variants, for FiRe-MPO's visual term and mDPO's conditional term.
    pub corrupted: Option<CorruptedAnswers<B>>,
}

impl<B: Backend> PreferenceBatch<B> {
    /// Checks shapes across all variants; returns `[batch, vocab]`.
    pub fn check(&self) -> Result<[usize; 2], LossError> {
        let chosen = self.chosen.check("chosen")?;
        let rejected = self.rejected.check("rejected")?;
        require_shape(
            "rejected.policy_logits (batch)",
            &[chosen[0]],
            &[rejected[0]],
        )?;
        require_shape(
            "rejected.policy_logits (vocab)",
            &[chosen[2]],
            &[rejected[2]],
        )?;
        if let Some(corrupted) = &self.corrupted {
            require_shape(
                "corrupted.chosen",
                &chosen,
                &corrupted.chosen.check("corrupted.chosen")?,
            )?;
            if let Some(corrupted_rejected) = &corrupted.rejected {
                let found = corrupted_rejected.check("corrupted.rejected")?;
                require_shape("corrupted.rejected", &rejected, &found)?;
            }
            require_shape("corrupted.present", &[chosen[0]], &corrupted.present.dims())?;
        }
        Ok([chosen[0], chosen[2]])
    }
}

/// Per-token quantities of one scored answer variant, shared by all losses.
#[derive(Debug, Clone)]
pub(crate) struct AnswerScores<B: Backend> {
    pub policy: VocabLogProbs<B>,
    /// The reference's distribution; `None` when only its label log-probs were given.
    pub reference: Option<VocabLogProbs<B>>,
    /// `log π_θ(y_t)`, zero outside the answer, `[batch, seq_len]`.
    pub policy_logps: Tensor<B, 2>,
    /// `log π_ref(y_t)`, zero outside the answer, `[batch, seq_len]`.
    pub reference_logps: Tensor<B, 2>,
    pub answer_mask: Tensor<B, 2>,
    /// 1 inside edited phrases (phrase id > 0) of real answer tokens.
    pub phrase_mask: Tensor<B, 2>,
}

impl<B: Backend> AnswerScores<B> {
    /// Implicit reward `β Σ_t mask_t (log π_θ(y_t) − log π_ref(y_t))`, `[batch]`.
    pub fn reward(&self, beta: f64, mask: &Tensor<B, 2>) -> Tensor<B, 1> {
        masked_sum(
            self.policy_logps.clone() - self.reference_logps.clone(),
            mask.clone(),
        )
        .mul_scalar(beta)
    }

    /// Sequence log-prob of the answer under the policy, `[batch]`.
    pub fn policy_sequence_logp(&self) -> Tensor<B, 1> {
        masked_sum(self.policy_logps.clone(), self.answer_mask.clone())
    }

    /// The reference's distribution, which `loss` reads for its KL: an error when the batch
    /// brought only precomputed label log-probs.
    fn reference_distribution(&self, loss: &'static str) -> Result<&VocabLogProbs<B>, LossError> {
        self.reference.as_ref().ok_or(LossError::MissingInput {
            loss,
            field: "reference logits",
            hint: "its KL term reads the reference's distribution over the whole vocabulary, \
                   which precomputed label log-probs lack; pass ReferenceScores::Logits",
        })
    }

    /// `Σ_t mask_t KL(π_ref ‖ π_θ)_t`, `[batch]` (`loss` names the caller in the error).
    pub fn forward_kl_sum(
        &self,
        mask: &Tensor<B, 2>,
        loss: &'static str,
    ) -> Result<Tensor<B, 1>, LossError> {
        self.masked_kl_sum(forward_kl, mask, loss)
    }

    /// `Σ_t mask_t KL(π_θ ‖ π_ref)_t`, `[batch]` (`loss` names the caller in the error).
    pub fn reverse_kl_sum(
        &self,
        mask: &Tensor<B, 2>,
        loss: &'static str,
    ) -> Result<Tensor<B, 1>, LossError> {
        self.masked_kl_sum(reverse_kl, mask, loss)
    }

    /// `Σ_t mask_t kl(policy, reference)_t`, `[batch]`, for either direction of the KL.
    fn masked_kl_sum(
        &self,
        kl: fn(&VocabLogProbs<B>, &VocabLogProbs<B>) -> Tensor<B, 2>,
        mask: &Tensor<B, 2>,
        loss: &'static str,
    ) -> Result<Tensor<B, 1>, LossError> {
        let reference = self.reference_distribution(loss)?;
        Ok(masked_sum(kl(&self.policy, reference), mask.clone()))
    }

    /// The same scores with the policy side detached (for metrics that must not train).
    pub fn detached(&self) -> Self {
        Self {
            policy: self.policy.detach(),
            reference: self.reference.clone(),
            policy_logps: self.policy_logps.clone().detach(),
            reference_logps: self.reference_logps.clone(),
            answer_mask: self.answer_mask.clone(),
            phrase_mask: self.phrase_mask.clone(),
        }
    }
}
