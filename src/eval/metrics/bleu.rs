//! BLEU-4 (Papineni et al. 2002, "BLEU: a Method for Automatic Evaluation of Machine
//! Translation", Eqs. 1–2) over [`words`], one reference per candidate.

use std::collections::HashMap;

use crate::eval::error::EvalError;
use crate::eval::text::words;

/// Maximum n-gram order of BLEU-4.
pub const BLEU_MAX_ORDER: usize = 4;

/// How zero n-gram counts are handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BleuSmoothing {
    /// The standard definition: any `p_n = 0` makes BLEU 0.
    #[default]
    None,
    /// Add-one for orders `n ≥ 2`: `p_n = (m_n + 1) / (l_n + 1)` (Lin & Och 2004; "smoothing 2"
    /// of Chen & Cherry 2014). Meant for sentence-level BLEU, where 4-gram matches are rare.
    AddOne,
}

/// Clipped n-gram statistics of one or more (candidate, reference) pairs, summed.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BleuStats {
    /// `m_n`: candidate n-grams matched in the reference, each clipped to its reference count.
    pub matches: [usize; BLEU_MAX_ORDER],
    /// `l_n`: candidate n-grams.
    pub totals: [usize; BLEU_MAX_ORDER],
    /// `c`: candidate length in words.
    pub candidate_len: usize,
    /// `r`: reference length in words.
    pub reference_len: usize,
}

impl BleuStats {
    /// Statistics of one pair.
    pub fn of_pair(candidate: &str, reference: &str) -> Self {
        let cand = words(candidate);
        let refs = words(reference);
        let mut stats = Self {
            candidate_len: cand.len(),
            reference_len: refs.len(),
            ..Self::default()
        };
        for n in 1..=BLEU_MAX_ORDER {
            let ref_counts = ngram_counts(&refs, n);
            for (gram, count) in ngram_counts(&cand, n) {
                stats.totals[n - 1] += count;
                stats.matches[n - 1] += count.min(ref_counts.get(gram).copied().unwrap_or(0));
            }
        }
        stats
    }

    fn add(mut self, other: Self) -> Self {
        for n in 0..BLEU_MAX_ORDER {
            self.matches[n] += other.matches[n];
            self.totals[n] += other.totals[n];
        }
        self.candidate_len += other.candidate_len;
        self.reference_len += other.reference_len;
        self
    }

    /// `BLEU = BP · exp( Σ_{n=1..4} ¼ log p_n )`, `p_n = m_n / l_n`,
    /// `BP = 1 if c > r else exp(1 − r/c)`; 0 when `c = 0` or (unsmoothed) any `m_n = 0`.
    pub fn score(&self, smoothing: BleuSmoothing) -> f64 {
        if self.candidate_len == 0 {
            return 0.0;
        }
        let mut log_precision = 0.0;
        for n in 0..BLEU_MAX_ORDER {
            let (m, l) = match smoothing {
                BleuSmoothing::AddOne if n > 0 => (self.matches[n] + 1, self.totals[n] + 1),
                _ => (self.matches[n], self.totals[n]),
            };
            if m == 0 {
                return 0.0;
            }
            log_precision += (m as f64 / l as f64).ln() / BLEU_MAX_ORDER as f64;
        }
        let (c, r) = (self.candidate_len as f64, self.reference_len as f64);
        let brevity_penalty = if c > r { 1.0 } else { (1.0 - r / c).exp() };
        brevity_penalty * log_precision.exp()
    }
}

/// Corpus-level BLEU-4: n-gram matches, n-gram totals and lengths are summed over all pairs
/// *before* the precisions and the brevity penalty are taken (not a mean of sentence scores).
pub fn corpus_bleu<C: AsRef<str>, R: AsRef<str>>(
    pairs: &[(C, R)],
    smoothing: BleuSmoothing,
) -> Result<f64, EvalError> {
    if pairs.is_empty() {
        return Err(EvalError::Empty { metric: "BLEU" });
    }
    let stats = pairs
        .iter()
        .map(|(c, r)| BleuStats::of_pair(c.as_ref(), r.as_ref()))
        .fold(BleuStats::default(), BleuStats::add);
    Ok(stats.score(smoothing))
}

/// Sentence-level BLEU-4 of one pair; use [`BleuSmoothing::AddOne`] for short texts.
pub fn sentence_bleu(candidate: &str, reference: &str, smoothing: BleuSmoothing) -> f64 {
    BleuStats::of_pair(candidate, reference).score(smoothing)
}

fn ngram_counts(tokens: &[String], n: usize) -> HashMap<&[String], usize> {
    let mut counts = HashMap::new();
    for gram in tokens.windows(n) {
        *counts.entry(gram).or_insert(0) += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    const EPS: f64 = 1e-12;

    #[test]
    fn identical_texts_score_one_and_disjoint_zero() {
        let text = "the heart size is normal and the lungs are clear";
        assert!((sentence_bleu(text, text, BleuSmoothing::None) - 1.0).abs() < EPS);
        assert!((corpus_bleu(&[(text, text)], BleuSmoothing::None).unwrap() - 1.0).abs() < EPS);
        assert_eq!(
            sentence_bleu("cardiomegaly present", "lungs clear", BleuSmoothing::None),
            0.0
        );
        assert_eq!(
            sentence_bleu("w x y z", "a b c d", BleuSmoothing::AddOne),
            0.0
        );
        assert_eq!(sentence_bleu("", "a b c d", BleuSmoothing::AddOne), 0.0);
    }

    #[test]
    fn hand_computed_corpus_bleu() {
        // Pair 1: "a b c d" vs itself: m = (4, 3, 2, 1), l = (4, 3, 2, 1).
        // Pair 2: "a b c e" vs "a b c d f": unigrams a b c match (3/4); bigrams ab, bc of
        // ab, bc, ce (2/3); trigram abc of abc, bce (1/2); 4-gram abce (0/1).
        // Corpus: p = (7/8, 5/6, 3/4, 1/2), c = 8, r = 9, BP = exp(1 − 9/8).
        // BLEU = exp(−1/8) · (7/8 · 5/6 · 3/4 · 1/2)^(1/4) = exp(−1/8) · (105/384)^(1/4) ≈ 0.63816.
        let pairs = [("a b c d", "a b c d"), ("a b c e", "a b c d f")];
        let expected = (-0.125f64).exp() * (105.0f64 / 384.0).powf(0.25);
        let bleu = corpus_bleu(&pairs, BleuSmoothing::None).unwrap();
        assert!((bleu - expected).abs() < EPS, "{bleu} vs {expected}");
        assert!((bleu - 0.638_157).abs() < 1e-6);
        // The corpus score is not the mean of sentence scores (pair 2 alone is 0 unsmoothed).
        assert_eq!(
            sentence_bleu("a b c e", "a b c d f", BleuSmoothing::None),
            0.0
        );
    }

    #[test]
    fn hand_computed_smoothed_sentence_bleu() {
        // "the cat sat on the mat" vs "the cat is on the mat": m = (5, 3, 1, 0),
        // l = (6, 5, 4, 3), c = r = 6 so BP = 1. Unsmoothed: 0 (no 4-gram match).
        // Add-one for n ≥ 2: p = (5/6, 4/6, 2/5, 1/4), product 1/18, BLEU = (1/18)^(1/4) ≈ 0.4855.
        let (c, r) = ("the cat sat on the mat", "the cat is on the mat");
        let stats = BleuStats::of_pair(c, r);
        assert_eq!(stats.matches, [5, 3, 1, 0]);
        assert_eq!(stats.totals, [6, 5, 4, 3]);
        assert_eq!(sentence_bleu(c, r, BleuSmoothing::None), 0.0);
        let smoothed = sentence_bleu(c, r, BleuSmoothing::AddOne);
        assert!((smoothed - (1.0f64 / 18.0).powf(0.25)).abs() < EPS);
    }

    #[test]
    fn brevity_penalty_applies_to_short_candidates_only() {
        // Candidate "a b c d" against "a b c d e f g h": all p_n = 1, BP = exp(1 − 8/4) = e^−1.
        let short = sentence_bleu("a b c d", "a b c d e f g h", BleuSmoothing::None);
        assert!((short - (-1.0f64).exp()).abs() < EPS);
        // Longer candidate: no brevity penalty, but precision drops (m = (4,3,2,1), l = (5,4,3,2)).
        let long = sentence_bleu("a b c d x", "a b c d", BleuSmoothing::None);
        let expected = (4.0f64 / 5.0 * 3.0 / 4.0 * 2.0 / 3.0 * 1.0 / 2.0).powf(0.25);
        assert!((long - expected).abs() < EPS);
    }

    #[test]
    fn clipping_limits_repeated_words() {
        // "the the the the" vs "the cat": unigram matches clipped to 1 of 4.
        let stats = BleuStats::of_pair("the the the the", "the cat");
        assert_eq!(stats.matches[0], 1);
        assert_eq!(stats.totals[0], 4);
    }
}
