//! Medical VQA metrics as reported by LLaVA-Med and the FiRe-MPO paper: closed-question accuracy
//! and open-question token recall (SLAKE, VQA-RAD).

use std::collections::BTreeSet;

use crate::eval::error::EvalError;
use crate::eval::text::answer_tokens;

/// Whether `prediction` answers a closed question whose ground truth is `answer`.
///
/// Both are normalized ([`crate::eval::normalize_answer`]). For a yes/no ground truth the first
/// `yes` or `no` word of the prediction is its answer, so `"Yes, there is an effusion."` counts
/// as `yes` and `"There is no effusion"` as `no`; a prediction with neither word is wrong. Any
/// other ground truth (`"left"`, `"ct"`) needs a normalized exact match.
pub fn closed_match(prediction: &str, answer: &str) -> bool {
    closed_rule(prediction, answer).unwrap_or(false)
}

/// What the rules of [`closed_match`] can decide without a judge: for a yes/no ground truth,
/// `Some(right)` when the prediction has a `yes` or `no` word (the first one decides), `None`
/// when it has neither; for any other ground truth `Some(true)` on a normalized exact match,
/// else `None`. `firempo eval --judge-url` asks the judge about the `None`s (the paper's closed
/// accuracy); without a judge they count as wrong.
pub fn closed_rule(prediction: &str, answer: &str) -> Option<bool> {
    let truth = answer_tokens(answer);
    let pred = answer_tokens(prediction);
    match truth.as_slice() {
        [t] if t == "yes" || t == "no" => pred
            .iter()
            .find(|w| *w == "yes" || *w == "no")
            .map(|w| w == t),
        _ => (pred == truth).then_some(true),
    }
}

/// Closed-question accuracy `(1/N) Σ_i 1[closed_match(ŷ_i, y_i)]` over `(prediction, answer)`
/// pairs, in `[0, 1]`.
pub fn closed_accuracy<P: AsRef<str>, A: AsRef<str>>(pairs: &[(P, A)]) -> Result<f64, EvalError> {
    mean(
        "closed accuracy",
        pairs
            .iter()
            .map(|(p, a)| f64::from(u8::from(closed_match(p.as_ref(), a.as_ref())))),
    )
}

/// Token recall of one open answer: `|T(y) ∩ T(ŷ)| / |T(y)|`, where `T` is the *set* of
/// normalized tokens (LLaVA-Med counts each distinct ground-truth word once).
///
/// A ground truth with no tokens (e.g. only punctuation) scores 1 if the prediction has none
/// either, else 0.
pub fn open_recall(prediction: &str, answer: &str) -> f64 {
    let truth: BTreeSet<String> = answer_tokens(answer).into_iter().collect();
    let pred: BTreeSet<String> = answer_tokens(prediction).into_iter().collect();
    if truth.is_empty() {
        return f64::from(u8::from(pred.is_empty()));
    }
    truth.intersection(&pred).count() as f64 / truth.len() as f64
}

/// Open-question recall averaged over questions: `(1/N) Σ_i open_recall(ŷ_i, y_i)`, in `[0, 1]`.
pub fn mean_open_recall<P: AsRef<str>, A: AsRef<str>>(pairs: &[(P, A)]) -> Result<f64, EvalError> {
    mean(
        "open recall",
        pairs
            .iter()
            .map(|(p, a)| open_recall(p.as_ref(), a.as_ref())),
    )
}

fn mean(metric: &'static str, values: impl Iterator<Item = f64>) -> Result<f64, EvalError> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        return Err(EvalError::Empty { metric });
    }
    Ok(sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_no_takes_the_first_yes_or_no_word() {
        assert!(closed_match("Yes, there is a lesion.", "yes"));
        assert!(closed_match("There is no lesion; yes, I am sure.", "No"));
        assert!(!closed_match("No. Yes.", "yes"));
        assert!(!closed_match("There is a lesion.", "yes"));
    }

    #[test]
    fn the_rule_leaves_undecided_what_a_judge_must_decide() {
        assert_eq!(closed_rule("No, it is clear.", "yes"), Some(false));
        assert_eq!(closed_rule("There is a lesion.", "yes"), None);
        assert_eq!(closed_rule("CT", "ct"), Some(true));
        assert_eq!(closed_rule("left lung", "left"), None);
    }

    #[test]
    fn other_closed_answers_need_a_normalized_exact_match() {
        assert!(closed_match("The Left.", "left"));
        assert!(!closed_match("left lung", "left"));
        assert!(closed_match("CT", "ct"));
    }

    #[test]
    fn closed_accuracy_is_the_fraction_of_matches() {
        let pairs = [
            ("Yes, there is.", "yes"),
            ("no", "yes"),
            ("MRI", "mri"),
            ("the liver", "liver"),
        ];
        // matches: 1, 0, 1, 1 → 3/4
        assert_eq!(closed_accuracy(&pairs).unwrap(), 0.75);
        let empty: [(&str, &str); 0] = [];
        assert!(matches!(
            closed_accuracy(&empty),
            Err(EvalError::Empty { .. })
        ));
    }

    #[test]
    fn open_recall_counts_distinct_ground_truth_tokens() {
        // T(y) = {left, lower, lobe}; ŷ contains left and lobe → 2/3.
        assert!((open_recall("In the left lobe", "the left lower lobe") - 2.0 / 3.0).abs() < 1e-12);
        // Repeated truth words count once: T(y) = {lung}.
        assert_eq!(open_recall("lung", "lung lung"), 1.0);
        assert_eq!(open_recall("heart", "lung"), 0.0);
        assert_eq!(open_recall("", "."), 1.0);
        assert_eq!(open_recall("x", "."), 0.0);
    }

    #[test]
    fn mean_open_recall_averages_per_question() {
        let pairs = [("left lobe", "left lower lobe"), ("liver", "liver")];
        // (2/3 + 1) / 2 = 5/6
        assert!((mean_open_recall(&pairs).unwrap() - 5.0 / 6.0).abs() < 1e-12);
    }
}
