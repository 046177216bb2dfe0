//! Visual sensitivity: how much a model's answers and confidence depend on the lesion evidence,
//! measured by re-asking each question on the lesion-corrupted image `v'` (METHOD.md,
//! "Lesion-targeted corruption"). A grounded model changes its answer and loses confidence when
//! the lesion is destroyed; a model answering from language priors does neither.

use serde::{Deserialize, Serialize};

use crate::eval::error::EvalError;
use crate::eval::text::normalize_answer;

/// One question asked on the clean image `v` and on its corrupted copy `v'`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensitivityRecord {
    /// Greedy answer on the clean image.
    pub clean_answer: String,
    /// Greedy answer on the corrupted image.
    pub corrupted_answer: String,
    /// `log π(y_clean | v, q)`: summed log-prob of the clean answer under the clean image.
    pub clean_logp_clean_image: f64,
    /// `log π(y_clean | v', q)`: the same answer scored under the corrupted image.
    pub clean_logp_corrupted_image: f64,
}

/// Aggregated visual sensitivity over a set of questions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VisualSensitivity {
    /// `(1/N) Σ_i 1[norm(y_i) ≠ norm(y'_i)]`: answers that change once the lesion is corrupted
    /// (compared after [`normalize_answer`]).
    pub answer_change_rate: f64,
    /// `(1/N) Σ_i [log π(y_i | v, q_i) − log π(y_i | v', q_i)]`: mean confidence lost in the clean
    /// answer; positive when the model relies on the image.
    pub mean_logp_drop: f64,
    /// `N`, the number of questions.
    pub n: usize,
}

/// Aggregates per-question [`SensitivityRecord`]s into a [`VisualSensitivity`].
pub fn visual_sensitivity(records: &[SensitivityRecord]) -> Result<VisualSensitivity, EvalError> {
    if records.is_empty() {
        return Err(EvalError::Empty {
            metric: "visual sensitivity",
        });
    }
    let n = records.len() as f64;
    let changed = records
        .iter()
        .filter(|r| normalize_answer(&r.clean_answer) != normalize_answer(&r.corrupted_answer))
        .count();
    let drop: f64 = records
        .iter()
        .map(|r| r.clean_logp_clean_image - r.clean_logp_corrupted_image)
        .sum();
    Ok(VisualSensitivity {
        answer_change_rate: changed as f64 / n,
        mean_logp_drop: drop / n,
        n: records.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(clean: &str, corrupted: &str, lp_clean: f64, lp_corrupted: f64) -> SensitivityRecord {
        SensitivityRecord {
            clean_answer: clean.into(),
            corrupted_answer: corrupted.into(),
            clean_logp_clean_image: lp_clean,
            clean_logp_corrupted_image: lp_corrupted,
        }
    }

    #[test]
    fn hand_computed_change_rate_and_logp_drop() {
        let records = [
            record("Yes.", "yes", -0.5, -1.5), // same after normalization; drop 1.0
            record("yes", "no", -0.2, -3.2),   // changed; drop 3.0
            record("left lung", "Right lung", -1.0, -0.5), // changed; drop −0.5
            record("the liver", "liver", -2.0, -2.0), // same; drop 0
        ];
        let s = visual_sensitivity(&records).unwrap();
        assert_eq!(s.n, 4);
        assert_eq!(s.answer_change_rate, 0.5); // 2 of 4
        assert!((s.mean_logp_drop - 3.5 / 4.0).abs() < 1e-12); // (1 + 3 − 0.5 + 0) / 4
    }

    #[test]
    fn empty_input_is_an_error() {
        assert!(matches!(
            visual_sensitivity(&[]),
            Err(EvalError::Empty { .. })
        ));
    }
}
