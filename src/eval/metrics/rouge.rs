//! ROUGE-L (Lin 2004, "ROUGE: A Package for Automatic Evaluation of Summaries", §3.1): the
//! longest common subsequence F-measure with β = 1.2, as `pycocoevalcap`'s `Rouge` scorer used in
//! radiology report generation (IU-Xray, MIMIC-CXR) reports it.

use crate::eval::error::EvalError;
use crate::eval::text::words;

/// β of `pycocoevalcap` (recall weighted 1.2× precision). `1.0` gives the plain F1.
pub const ROUGE_L_BETA: f64 = 1.2;

/// ROUGE-L precision, recall and F-measure of one candidate against one reference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RougeL {
    /// `P = LCS / |candidate|`.
    pub precision: f64,
    /// `R = LCS / |reference|`.
    pub recall: f64,
    /// `F_β = (1 + β²) P R / (R + β² P)`; 0 when `P = R = 0`.
    pub f_measure: f64,
}

impl RougeL {
    /// Scores `candidate` against `reference` over [`words`] with the given `beta`.
    pub fn score(candidate: &str, reference: &str, beta: f64) -> Self {
        let cand = words(candidate);
        let refs = words(reference);
        let lcs = lcs_len(&cand, &refs) as f64;
        let ratio = |len: usize| if len == 0 { 0.0 } else { lcs / len as f64 };
        let (precision, recall) = (ratio(cand.len()), ratio(refs.len()));
        let b2 = beta * beta;
        let denom = recall + b2 * precision;
        let f_measure = if denom > 0.0 {
            (1.0 + b2) * precision * recall / denom
        } else {
            0.0
        };
        Self {
            precision,
            recall,
            f_measure,
        }
    }
}

/// Corpus ROUGE-L as `pycocoevalcap`: the mean over pairs of the sentence `F_β`, β = 1.2.
pub fn corpus_rouge_l<C: AsRef<str>, R: AsRef<str>>(pairs: &[(C, R)]) -> Result<f64, EvalError> {
    if pairs.is_empty() {
        return Err(EvalError::Empty { metric: "ROUGE-L" });
    }
    let sum: f64 = pairs
        .iter()
        .map(|(c, r)| RougeL::score(c.as_ref(), r.as_ref(), ROUGE_L_BETA).f_measure)
        .sum();
    Ok(sum / pairs.len() as f64)
}

/// Length of the longest common subsequence, `O(|a|·|b|)` time and `O(|b|)` memory.
pub fn lcs_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    let mut row = vec![0usize; b.len() + 1];
    for x in a {
        let mut diagonal = 0;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = if x == y {
                diagonal + 1
            } else {
                above.max(row[j])
            };
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    #[test]
    fn identical_texts_score_one_and_disjoint_zero() {
        let text = "no acute cardiopulmonary abnormality";
        let same = RougeL::score(text, text, ROUGE_L_BETA);
        assert!((same.f_measure - 1.0).abs() < EPS);
        assert_eq!(
            RougeL::score("heart enlarged", "lungs clear", ROUGE_L_BETA).f_measure,
            0.0
        );
        assert_eq!(
            RougeL::score("", "lungs clear", ROUGE_L_BETA).f_measure,
            0.0
        );
    }

    #[test]
    fn hand_computed_lcs_and_f_measure() {
        // LCS("w x y", "w q x r y s") = "w x y" = 3: P = 3/3 = 1, R = 3/6 = 1/2.
        // F_1.2 = (1 + 1.44) · 1 · 0.5 / (0.5 + 1.44 · 1) = 1.22 / 1.94 ≈ 0.628866.
        let s = RougeL::score("w x y", "w q x r y s", ROUGE_L_BETA);
        assert_eq!((s.precision, s.recall), (1.0, 0.5));
        assert!((s.f_measure - 1.22 / 1.94).abs() < EPS);
        // F1 (β = 1): 2 · 1 · 0.5 / 1.5 = 2/3.
        assert!((RougeL::score("w x y", "w q x r y s", 1.0).f_measure - 2.0 / 3.0).abs() < EPS);
    }

    #[test]
    fn lcs_is_order_sensitive() {
        let a = ["the", "cat", "sat", "on", "the", "mat"];
        let b = ["the", "cat", "is", "on", "the", "mat"];
        assert_eq!(lcs_len(&a, &b), 5);
        assert_eq!(lcs_len(&["a", "b", "c"], &["c", "b", "a"]), 1);
        assert_eq!(lcs_len::<&str>(&[], &["a"]), 0);
    }

    #[test]
    fn corpus_rouge_l_is_the_mean_of_sentence_scores() {
        let pairs = [("w x y", "w q x r y s"), ("a b", "a b")];
        let expected = (1.22 / 1.94 + 1.0) / 2.0;
        assert!((corpus_rouge_l(&pairs).unwrap() - expected).abs() < EPS);
    }
}
