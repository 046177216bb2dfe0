//! Token-wise KL divergence over the full vocabulary, as used by RRPO and FiRe-MPO.
//!
//! Forward KL `KL(π_ref ‖ π_θ)` is mean-seeking (keeps every reference mode covered); reverse KL
//! `KL(π_θ ‖ π_ref)` is mode-seeking (penalizes mass the reference considers unlikely). FiRe-MPO
//! mixes both: `λ·FKL + (1−λ)·RKL` (METHOD.md, paper Eq. 4).

use burn::tensor::{backend::Backend, Tensor};

use crate::logps::VocabLogProbs;

/// Per-position `KL(p ‖ q) = Σ_v p_v (log p_v − log q_v)` from log-probabilities.
///
/// # Shapes
/// - `p`, `q`: `[batch, seq_len, vocab]` log-probabilities
/// - returns `[batch, seq_len]`
pub fn token_kl<B: Backend>(p: &VocabLogProbs<B>, q: &VocabLogProbs<B>) -> Tensor<B, 2> {
    let log_p = p.log_probs.clone();
    let log_q = q.log_probs.clone();
    (log_p.clone().exp() * (log_p - log_q))
        .sum_dim(2)
        .squeeze_dim::<2>(2)
}

/// Forward KL `KL(π_ref ‖ π_θ)` per position, `[batch, seq_len]`.
pub fn forward_kl<B: Backend>(
    policy: &VocabLogProbs<B>,
    reference: &VocabLogProbs<B>,
) -> Tensor<B, 2> {
    token_kl(reference, policy)
}

/// Reverse KL `KL(π_θ ‖ π_ref)` per position, `[batch, seq_len]`.
pub fn reverse_kl<B: Backend>(
    policy: &VocabLogProbs<B>,
    reference: &VocabLogProbs<B>,
) -> Tensor<B, 2> {
    token_kl(policy, reference)
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f64>;

    fn probs(values: Vec<f64>) -> VocabLogProbs<NdArray<f64>> {
        let n = values.len();
        VocabLogProbs::from_logits(Tensor::from_data(
            TensorData::new(values, [1, 1, n]),
            &Default::default(),
        ))
    }

    #[test]
    fn hand_derived_forward_and_reverse_kl() {
        // π = [1/4, 3/4] (logits [0, ln 3]), ref = [1/2, 1/2].
        let policy = probs(vec![0.0, 3f64.ln()]);
        let reference = probs(vec![0.0, 0.0]);
        let fkl: f64 = forward_kl(&policy, &reference).into_scalar();
        let rkl: f64 = reverse_kl(&policy, &reference).into_scalar();
        let fkl_expected = 0.5 * (4.0f64 / 3.0).ln();
        let rkl_expected = 0.25 * 0.5f64.ln() + 0.75 * 1.5f64.ln();
        assert!(
            (fkl - fkl_expected).abs() < 1e-12,
            "{fkl} vs {fkl_expected}"
        );
        assert!(
            (rkl - rkl_expected).abs() < 1e-12,
            "{rkl} vs {rkl_expected}"
        );
    }

    #[test]
    fn identical_distributions_have_zero_kl() {
        let p = probs(vec![1.0, -2.0, 0.5, 3.0]);
        let kl: f64 = token_kl(&p, &p.clone()).into_scalar();
        assert_eq!(kl, 0.0);
    }

    #[test]
    fn kl_is_finite_for_extreme_logits() {
        let policy = probs(vec![80.0, -80.0, 0.0]);
        let reference = probs(vec![-80.0, 80.0, 0.0]);
        let fkl: f64 = forward_kl::<B>(&policy, &reference).into_scalar();
        let rkl: f64 = reverse_kl::<B>(&policy, &reference).into_scalar();
        // Both are ≈ 160 (all mass moves between the two extreme tokens).
        assert!((fkl - 160.0).abs() < 1e-6, "{fkl}");
        assert!((rkl - 160.0).abs() < 1e-6, "{rkl}");
    }
}
