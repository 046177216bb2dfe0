//! Finding-level precision / recall / F1 for templated reports of the synthetic lesion benchmark:
//! a finding is a `(side, zone)` lesion statement such as "… a lesion in the left upper zone …".
//! Like CheXbert-style label F1, but the labels come from a deterministic template parser.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::eval::error::EvalError;
use crate::eval::text::words;

/// One lesion statement: which side and which zone.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Finding {
    pub side: String,
    pub zone: String,
}

impl Finding {
    pub fn new(side: impl Into<String>, zone: impl Into<String>) -> Self {
        Self {
            side: side.into(),
            zone: zone.into(),
        }
    }
}

/// Words clause splitting happens on, besides `,`, `;` and `:`, so a negation ("… is clear")
/// only cancels its own clause.
const CLAUSE_BREAKS: [&str; 4] = ["and", "but", "while", "whereas"];

/// The words the finding parser knows.
///
/// Parsing ([`FindingVocabulary::parse`]): the report is split into sentences (`.`, `!`, `?`,
/// newline) and sentences into clauses (`,`, `;`, `:`, and the words `and`, `but`, `while`,
/// `whereas`). A sentence yields findings only if it mentions a lesion word (when
/// `lesion_words` is non-empty). A clause containing a negation phrase yields none. In the others,
/// every side word directly followed by a zone word ("left upper") or zone word directly followed
/// by a side word ("upper left") is a finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FindingVocabulary {
    /// Side words, e.g. `left`, `right`.
    pub sides: Vec<String>,
    /// Zone words, e.g. `upper`, `middle`, `lower`.
    pub zones: Vec<String>,
    /// Words a sentence must contain to state findings (empty: no requirement).
    pub lesion_words: Vec<String>,
    /// Phrases meaning "no finding here", matched as whole-word sequences.
    pub negations: Vec<String>,
}

impl Default for FindingVocabulary {
    /// The synthetic benchmark's template: sides `left`/`right`, zones `upper`/`middle`/`lower`,
    /// lesion words `lesion`/`lesions`, negations `no lesion`/`no lesions`/`clear`.
    fn default() -> Self {
        let owned = |ws: &[&str]| ws.iter().map(|w| w.to_string()).collect();
        Self {
            sides: owned(&["left", "right"]),
            zones: owned(&["upper", "middle", "lower"]),
            lesion_words: owned(&["lesion", "lesions"]),
            negations: owned(&["no lesion", "no lesions", "clear"]),
        }
    }
}

impl FindingVocabulary {
    /// The set of findings stated in `report` (empty for "No lesion." or "Lungs are clear.").
    pub fn parse(&self, report: &str) -> BTreeSet<Finding> {
        let negations: Vec<Vec<String>> = self.negations.iter().map(|n| words(n)).collect();
        let mut found = BTreeSet::new();
        for sentence in report.split(['.', '!', '?', '\n']) {
            let sentence_words = words(sentence);
            if !self.lesion_words.is_empty()
                && !sentence_words.iter().any(|w| self.lesion_words.contains(w))
            {
                continue;
            }
            let before = found.len();
            for clause in clauses(sentence) {
                if negations.iter().any(|n| contains_phrase(&clause, n)) {
                    continue;
                }
                for pair in clause.windows(2) {
                    let (a, b) = (&pair[0], &pair[1]);
                    if self.sides.contains(a) && self.zones.contains(b) {
                        found.insert(Finding::new(a, b));
                    } else if self.zones.contains(a) && self.sides.contains(b) {
                        found.insert(Finding::new(b, a));
                    }
                }
            }
            // Templates that name the side and the zone apart ("a lesion in the right lung,
            // middle zone"): with one side in a non-negated sentence, pair it with its zones.
            if found.len() == before
                && !negations
                    .iter()
                    .any(|n| contains_phrase(&sentence_words, n))
            {
                let sides: Vec<&String> = sentence_words
                    .iter()
                    .filter(|w| self.sides.contains(w))
                    .collect();
                if let [side] = sides.as_slice() {
                    for zone in sentence_words.iter().filter(|w| self.zones.contains(w)) {
                        found.insert(Finding::new(*side, zone));
                    }
                }
            }
        }
        found
    }
}

fn clauses(sentence: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for piece in sentence.split([',', ';', ':']) {
        let mut clause = Vec::new();
        for word in words(piece) {
            if CLAUSE_BREAKS.contains(&word.as_str()) {
                out.push(std::mem::take(&mut clause));
            } else {
                clause.push(word);
            }
        }
        out.push(clause);
    }
    out
}

fn contains_phrase(haystack: &[String], phrase: &[String]) -> bool {
    !phrase.is_empty() && haystack.windows(phrase.len()).any(|w| w == phrase)
}

/// Micro-averaged finding scores: counts summed over all reports, then
/// `P = TP / (TP + FP)`, `R = TP / (TP + FN)`, `F1 = 2PR / (P + R) = 2TP / (2TP + FP + FN)`.
///
/// A ratio with an empty denominator is undefined (`None`), never a perfect score: precision when
/// nothing was predicted, recall when nothing was there, F1 when neither (every report normal
/// and predicted normal: there was nothing to find, and a model that never states a finding would
/// otherwise score 100).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FindingScores {
    pub true_positives: usize,
    pub false_positives: usize,
    pub false_negatives: usize,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

impl FindingScores {
    /// Scores from summed counts.
    pub fn from_counts(
        true_positives: usize,
        false_positives: usize,
        false_negatives: usize,
    ) -> Self {
        let ratio = |num: usize, den: usize| (den > 0).then(|| num as f64 / den as f64);
        Self {
            true_positives,
            false_positives,
            false_negatives,
            precision: ratio(true_positives, true_positives + false_positives),
            recall: ratio(true_positives, true_positives + false_negatives),
            f1: ratio(
                2 * true_positives,
                2 * true_positives + false_positives + false_negatives,
            ),
        }
    }
}

/// Micro-averaged finding precision / recall / F1 over `(predicted report, ground-truth report)`
/// pairs, both parsed with `vocabulary`.
pub fn finding_scores<P: AsRef<str>, G: AsRef<str>>(
    vocabulary: &FindingVocabulary,
    pairs: &[(P, G)],
) -> Result<FindingScores, EvalError> {
    if pairs.is_empty() {
        return Err(EvalError::Empty {
            metric: "finding F1",
        });
    }
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (pred, truth) in pairs {
        let pred = vocabulary.parse(pred.as_ref());
        let truth = vocabulary.parse(truth.as_ref());
        let hits = pred.intersection(&truth).count();
        tp += hits;
        fp += pred.len() - hits;
        fn_ += truth.len() - hits;
    }
    Ok(FindingScores::from_counts(tp, fp, fn_))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(findings: &[(&str, &str)]) -> BTreeSet<Finding> {
        findings.iter().map(|(s, z)| Finding::new(*s, *z)).collect()
    }

    #[test]
    fn parses_templated_statements() {
        let v = FindingVocabulary::default();
        assert_eq!(
            v.parse("There is a lesion in the left upper zone."),
            set(&[("left", "upper")])
        );
        assert_eq!(
            v.parse("Lesions in the Right lower zone and the upper left zone."),
            set(&[("right", "lower"), ("left", "upper")])
        );
        assert_eq!(v.parse("No lesion."), set(&[]));
        assert_eq!(v.parse("The lungs are clear."), set(&[]));
        // Negation only cancels its own clause.
        assert_eq!(
            v.parse("A lesion in the left middle zone, the right lung is clear."),
            set(&[("left", "middle")])
        );
        assert_eq!(
            v.parse("No lesion in the left upper zone; lesion in the right middle zone."),
            set(&[("right", "middle")])
        );
        // A side/zone mention without a lesion word is not a finding.
        assert_eq!(v.parse("The left upper zone is well aerated."), set(&[]));
    }

    #[test]
    fn custom_vocabulary() {
        let v = FindingVocabulary {
            sides: vec!["anterior".into()],
            zones: vec!["apical".into()],
            lesion_words: vec![],
            negations: vec!["normal".into()],
        };
        assert_eq!(
            v.parse("Anterior apical opacity."),
            set(&[("anterior", "apical")])
        );
        assert_eq!(v.parse("Anterior apical segment normal."), set(&[]));
    }

    #[test]
    fn hand_computed_micro_scores() {
        let v = FindingVocabulary::default();
        let pairs = [
            // pred {LU, RL}, truth {LU}: TP 1, FP 1.
            (
                "Lesions in the left upper zone and the right lower zone.",
                "Lesion in the left upper zone.",
            ),
            // pred {}, truth {RM}: FN 1.
            ("No lesion.", "Lesion in the right middle zone."),
            // pred {LL}, truth {LL}: TP 1.
            (
                "Lesion in the left lower zone.",
                "Lesion in the left lower zone.",
            ),
            // both normal: nothing counted.
            ("Clear.", "No lesion."),
        ];
        // TP 2, FP 1, FN 1: P = 2/3, R = 2/3, F1 = 2/3.
        let s = finding_scores(&v, &pairs).unwrap();
        assert_eq!(
            (s.true_positives, s.false_positives, s.false_negatives),
            (2, 1, 1)
        );
        assert!((s.precision.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.recall.unwrap() - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.f1.unwrap() - 2.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn empty_denominators_are_undefined_not_perfect() {
        // All normal, all predicted normal: nothing to score (it used to read as F1 = 1).
        let s = FindingScores::from_counts(0, 0, 0);
        assert_eq!((s.precision, s.recall, s.f1), (None, None, None));
        let v = FindingVocabulary::default();
        let silent = finding_scores(&v, &[("garbage garbage", "No lesion.")]).unwrap();
        assert_eq!(silent.f1, None);
        // Nothing predicted, one missed: precision undefined, recall and F1 zero.
        let s = FindingScores::from_counts(0, 0, 1);
        assert_eq!((s.precision, s.recall, s.f1), (None, Some(0.0), Some(0.0)));
        // TP 3, FP 1, FN 0: P = 3/4, R = 1, F1 = 2·0.75/1.75 = 6/7.
        let s = FindingScores::from_counts(3, 1, 0);
        assert!((s.f1.unwrap() - 6.0 / 7.0).abs() < 1e-12);
    }

    #[test]
    fn synthetic_report_templates_are_parsed() {
        let vocab = FindingVocabulary::default();
        let one = vocab.parse(
            "There is a large lesion in the right lung, middle zone. The left lung is clear.",
        );
        assert_eq!(one, BTreeSet::from([Finding::new("right", "middle")]));
        let many = vocab.parse("There are 3 lesions in the left lung; the largest is medium, in the upper zone. The right lung is clear.");
        assert_eq!(many, BTreeSet::from([Finding::new("left", "upper")]));
        assert!(vocab
            .parse("Both lungs are clear. No lesion is seen.")
            .is_empty());
    }
}
