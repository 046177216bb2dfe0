//! Token log-probabilities of answer labels, from answer-position logits.
//!
//! The log-softmax over the vocabulary is computed once per logits tensor ([`VocabLogProbs`]) and
//! reused for the label log-probs and for the token-wise KL terms (see [`crate::kl`]).

use burn::tensor::{activation::log_softmax, backend::Backend, Int, Tensor};

/// Full-vocabulary log-probabilities `log softmax(logits)` at every answer position.
///
/// Computed with the max-shifted log-sum-exp, so logits of ±80 (or more) stay finite.
///
/// # Shapes
/// - `log_probs`: `[batch, seq_len, vocab]`
#[derive(Debug, Clone)]
pub struct VocabLogProbs<B: Backend> {
    /// `log π(· | context)` for every position and vocabulary entry.
    pub log_probs: Tensor<B, 3>,
}

impl<B: Backend> VocabLogProbs<B> {
    /// Normalizes `logits` `[batch, seq_len, vocab]` over the vocabulary.
    pub fn from_logits(logits: Tensor<B, 3>) -> Self {
        Self {
            log_probs: log_softmax(logits, 2),
        }
    }

    /// Log-probability of each label, `log π(y_t | y_<t)`, as `[batch, seq_len]`.
    ///
    /// `labels[n, t]` is the token that `logits[n, t]` predicts (already shifted by the caller);
    /// padding positions must still hold a valid token id (any, e.g. 0) and are masked later.
    pub fn label_log_probs(&self, labels: Tensor<B, 2, Int>) -> Tensor<B, 2> {
        let index = labels.unsqueeze_dim::<3>(2); // [batch, seq_len, 1]
        self.log_probs.clone().gather(2, index).squeeze_dim::<2>(2)
    }

    /// Detached copy (no autograd graph), e.g. for the reference model or for metrics.
    pub fn detach(&self) -> Self {
        Self {
            log_probs: self.log_probs.clone().detach(),
        }
    }
}

/// Per-token label log-probs `[batch, seq_len]` from logits `[batch, seq_len, vocab]`, zero where
/// `mask` `[batch, seq_len]` is zero.
pub fn token_log_probs<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
) -> Tensor<B, 2> {
    VocabLogProbs::from_logits(logits).label_log_probs(labels) * mask
}

/// Sum over the sequence of `values * mask`: `[batch, seq_len]` → `[batch]`.
pub fn masked_sum<B: Backend>(values: Tensor<B, 2>, mask: Tensor<B, 2>) -> Tensor<B, 1> {
    (values * mask).sum_dim(1).squeeze_dim::<1>(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f64>;

    #[test]
    fn label_log_probs_match_closed_form() {
        let device = Default::default();
        // Row 0: logits [0, ln 3] → p = [1/4, 3/4]; row 1: uniform over 2.
        let logits = Tensor::<B, 3>::from_data(
            TensorData::new(vec![0.0, 3f64.ln(), 0.0, 0.0], [2, 1, 2]),
            &device,
        );
        let labels =
            Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 0], [2, 1]), &device);
        let mask = Tensor::<B, 2>::ones([2, 1], &device);
        let got: Vec<f64> = token_log_probs(logits, labels, mask)
            .into_data()
            .to_vec()
            .unwrap();
        assert!((got[0] - 0.75f64.ln()).abs() < 1e-12, "{got:?}");
        assert!((got[1] - 0.5f64.ln()).abs() < 1e-12, "{got:?}");
    }

    #[test]
    fn large_logits_stay_finite() {
        let device = Default::default();
        let logits =
            Tensor::<B, 3>::from_data(TensorData::new(vec![80.0, -80.0, 80.0], [1, 1, 3]), &device);
        let labels = Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64], [1, 1]), &device);
        let got: f64 = token_log_probs(logits, labels, Tensor::ones([1, 1], &device)).into_scalar();
        // log p(1) = -160 - ln 2 exactly.
        assert!((got - (-160.0 - 2f64.ln())).abs() < 1e-9, "{got}");
    }

    #[test]
    fn masked_sum_ignores_masked_positions() {
        let device = Default::default();
        let values =
            Tensor::<B, 2>::from_data(TensorData::new(vec![1.0, 2.0, 4.0, 8.0], [2, 2]), &device);
        let mask =
            Tensor::<B, 2>::from_data(TensorData::new(vec![1.0, 0.0, 1.0, 1.0], [2, 2]), &device);
        let got: Vec<f64> = masked_sum(values, mask).into_data().to_vec().unwrap();
        assert_eq!(got, vec![1.0, 12.0]);
    }
}
