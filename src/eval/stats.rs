//! Statistics for comparing methods on the same questions: the paired bootstrap confidence interval
//! of a difference of means (Efron & Tibshirani 1993, ch. 13, percentile interval; resampling
//! questions, as Koehn 2004 does for MT systems), McNemar's exact test for paired binary outcomes
//! (McNemar 1947; the exact binomial form of Edwards 1948), and mean ± sample standard deviation
//! over seeds.
//!
//! Pure, deterministic host-side code: the bootstrap draws from a seeded SplitMix64 stream, so the
//! same inputs and seed give the same interval on every machine.

use serde::{Deserialize, Serialize};

use crate::eval::error::EvalError;

/// `(x̄, s)`: the mean and the sample standard deviation `s = sqrt(Σ (x_i − x̄)² / (n − 1))` of
/// values over seeds; `None` for no values, `s = None` for a single one.
pub fn mean_and_std(values: &[f64]) -> Option<(f64, Option<f64>)> {
    let n = values.len();
    if n == 0 {
        return None;
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n >= 2).then(|| {
        let ss: f64 = values.iter().map(|x| (x - mean).powi(2)).sum();
        (ss / (n - 1) as f64).sqrt()
    });
    Some((mean, std))
}

/// The difference `mean(a) − mean(b)` of a per-question metric of two methods on the same
/// questions, with its paired bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairedDifference {
    /// `(1/n) Σ_i (a_i − b_i)`.
    pub mean: f64,
    /// Lower end of the percentile interval.
    pub low: f64,
    /// Upper end of the percentile interval.
    pub high: f64,
    /// Coverage of the interval, e.g. 0.95.
    pub level: f64,
    /// Questions `n`.
    pub n: usize,
}

impl PairedDifference {
    /// Whether the interval excludes 0 (the difference is distinguishable from none at `level`).
    pub fn excludes_zero(&self) -> bool {
        self.low > 0.0 || self.high < 0.0
    }

    /// `"+1.23 [+0.40, +2.05]"`.
    pub fn format(&self, decimals: usize) -> String {
        format!(
            "{:+.decimals$} [{:+.decimals$}, {:+.decimals$}]",
            self.mean, self.low, self.high
        )
    }
}

/// Settings of the paired bootstrap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bootstrap {
    /// Resamples `B`.
    pub resamples: usize,
    /// Coverage of the interval (0.95: the 2.5th and 97.5th percentiles).
    pub level: f64,
    /// Seed of the resampling.
    pub seed: u64,
}

impl Default for Bootstrap {
    fn default() -> Self {
        Self {
            resamples: 2000,
            level: 0.95,
            seed: 0,
        }
    }
}

impl Bootstrap {
    /// Paired bootstrap of `mean(a) − mean(b)`: `B` times, draw `n` question indices uniformly
    /// with replacement and take the mean of `d_i = a_i − b_i` over them; the interval is the
    /// `(1 − level)/2` and `(1 + level)/2` quantiles of those `B` means (linear interpolation
    /// between order statistics). Resampling questions, not the two methods separately, keeps
    /// each question's pairing, so what both methods get right or wrong cancels.
    pub fn paired_difference(&self, a: &[f64], b: &[f64]) -> Result<PairedDifference, EvalError> {
        if a.len() != b.len() {
            return Err(EvalError::Stats(format!(
                "paired bootstrap needs one value per question for both methods; got {} and {}",
                a.len(),
                b.len()
            )));
        }
        if a.is_empty() {
            return Err(EvalError::Empty {
                metric: "paired bootstrap",
            });
        }
        if self.resamples == 0 || !(self.level > 0.0 && self.level < 1.0) {
            return Err(EvalError::Stats(format!(
                "bootstrap needs resamples > 0 and level in (0, 1); got {} and {}",
                self.resamples, self.level
            )));
        }
        let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
        if let Some(i) = d.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::Stats(format!(
                "question {i} has a non-finite value ({} vs {})",
                a[i], b[i]
            )));
        }
        let n = d.len();
        let mut rng = SplitMix64::new(self.seed);
        let mut means: Vec<f64> = (0..self.resamples)
            .map(|_| (0..n).map(|_| d[rng.below(n)]).sum::<f64>() / n as f64)
            .collect();
        means.sort_by(f64::total_cmp);
        let tail = (1.0 - self.level) / 2.0;
        Ok(PairedDifference {
            mean: d.iter().sum::<f64>() / n as f64,
            low: quantile(&means, tail),
            high: quantile(&means, 1.0 - tail),
            level: self.level,
            n,
        })
    }
}

/// The `q`-quantile of sorted values, interpolating linearly between order statistics (Hyndman
/// & Fan type 7, numpy's default): position `q (n − 1)`.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let position = q * (sorted.len() - 1) as f64;
    let (below, above) = (position.floor() as usize, position.ceil() as usize);
    let weight = position - below as f64;
    sorted[below] + weight * (sorted[above] - sorted[below])
}

/// McNemar's exact test of paired binary outcomes (e.g. closed answers right or wrong under two
/// methods): with `b` questions only the first method gets right and `c` only the second, under
/// the null each discordant question is a fair coin, so `p = min(1, 2 Σ_{i ≤ min(b,c)} C(b+c, i)
/// / 2^(b+c))` (two-sided); `p = 1` without discordant questions.
pub fn mcnemar_exact(b: usize, c: usize) -> f64 {
    let n = b + c;
    let k = b.min(c);
    // Σ_{i ≤ k} C(n, i) 2^-n, each term built from the last in log space so large n stays finite.
    let mut log_term = -(n as f64) * std::f64::consts::LN_2; // i = 0: C(n,0) 2^-n
    let mut tail = log_term.exp();
    for i in 1..=k {
        log_term += ((n - i + 1) as f64).ln() - (i as f64).ln();
        tail += log_term.exp();
    }
    (2.0 * tail).min(1.0)
}

/// The discordant counts `(b, c)` of paired outcomes: `b` = questions `a` gets right and `b`
/// wrong, `c` = the reverse.
pub fn discordant(a: &[bool], b: &[bool]) -> Result<(usize, usize), EvalError> {
    if a.len() != b.len() {
        return Err(EvalError::Stats(format!(
            "McNemar needs one outcome per question for both methods; got {} and {}",
            a.len(),
            b.len()
        )));
    }
    Ok(a.iter().zip(b).fold((0, 0), |(b_, c_), (&x, &y)| {
        (b_ + usize::from(x && !y), c_ + usize::from(!x && y))
    }))
}

/// SplitMix64 (Steele, Lea & Flood 2014): a tiny, fast, seedable generator, enough for resampling
/// indices; fixed here so intervals do not change with a dependency's version.
struct SplitMix64(u64);

impl SplitMix64 {
    fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias for `n` ≪ 2^64 is negligible).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcnemar_exact_matches_hand_computed_binomial_tails() {
        // n = 7, k = 1: 2 (C(7,0) + C(7,1)) / 2^7 = 2 · 8 / 128 = 0.125.
        assert!((mcnemar_exact(1, 6) - 0.125).abs() < 1e-12);
        assert_eq!(mcnemar_exact(6, 1), mcnemar_exact(1, 6), "two-sided");
        // n = 10, k = 0: 2 / 1024.
        assert!((mcnemar_exact(0, 10) - 2.0 / 1024.0).abs() < 1e-15);
        // n = 4, k = 2: 2 (1 + 4 + 6) / 16 = 1.375 → capped at 1.
        assert_eq!(mcnemar_exact(2, 2), 1.0);
        assert_eq!(mcnemar_exact(0, 0), 1.0, "no discordant question");
        // n = 20, k = 5: 2 (1 + 20 + 190 + 1140 + 4845 + 15504) / 2^20 = 43400 / 1048576.
        assert!((mcnemar_exact(5, 15) - 43400.0 / 1_048_576.0).abs() < 1e-12);
        // Large n stays finite: 2000 vs 2000 is no evidence at all.
        let p = mcnemar_exact(2000, 2000);
        assert!(p > 0.9 && p <= 1.0, "{p}");
    }

    #[test]
    fn discordant_counts() {
        let a = [true, true, false, false, true];
        let b = [true, false, true, false, false];
        assert_eq!(discordant(&a, &b).unwrap(), (2, 1));
        assert!(discordant(&a, &b[..2]).is_err());
    }

    #[test]
    fn mean_and_sample_std() {
        assert_eq!(mean_and_std(&[]), None);
        assert_eq!(mean_and_std(&[2.0]), Some((2.0, None)));
        // mean 70, s = sqrt((1 + 0 + 1) / 2) = 1
        assert_eq!(mean_and_std(&[69.0, 70.0, 71.0]), Some((70.0, Some(1.0))));
    }

    #[test]
    fn bootstrap_excludes_zero_for_a_consistent_gain_and_contains_it_for_none() {
        let boot = Bootstrap::default();
        // a beats b on 60 of 200 questions and never loses: mean +0.3; every resample of 200
        // questions has a positive mean unless it draws no winning question (probability 0.7^200).
        let b = vec![0.0; 200];
        let a: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 10 < 3))).collect();
        let gain = boot.paired_difference(&a, &b).unwrap();
        assert!((gain.mean - 0.3).abs() < 1e-12);
        assert!(
            gain.excludes_zero() && gain.low > 0.2 && gain.high < 0.4,
            "{gain:?}"
        );
        // Standard error sqrt(0.3 · 0.7 / 200) ≈ 0.0324: the 95% interval spans about ±1.96 SE.
        let half_width = (gain.high - gain.low) / 2.0;
        assert!((half_width - 1.96 * 0.0324).abs() < 0.01, "{half_width}");

        // Wins and losses balanced: mean 0, interval around it.
        let c: Vec<f64> = (0..200).map(|i| f64::from(u8::from(i % 10 < 3))).collect();
        let d: Vec<f64> = (0..200)
            .map(|i| f64::from(u8::from((3..6).contains(&(i % 10)))))
            .collect();
        let none = boot.paired_difference(&c, &d).unwrap();
        assert_eq!(none.mean, 0.0);
        assert!(!none.excludes_zero(), "{none:?}");
        assert!(none.low < -0.05 && none.high > 0.05, "{none:?}");

        // Identical methods: every resample's difference is 0.
        let same = boot.paired_difference(&a, &a).unwrap();
        assert_eq!((same.low, same.high), (0.0, 0.0));
    }

    #[test]
    fn bootstrap_is_deterministic_in_its_seed() {
        let a: Vec<f64> = (0..50).map(|i| (i * 37 % 11) as f64).collect();
        let b: Vec<f64> = (0..50).map(|i| (i * 13 % 7) as f64).collect();
        let boot = Bootstrap {
            seed: 7,
            ..Bootstrap::default()
        };
        assert_eq!(
            boot.paired_difference(&a, &b).unwrap(),
            boot.paired_difference(&a, &b).unwrap()
        );
        let other = Bootstrap { seed: 8, ..boot };
        assert_ne!(
            boot.paired_difference(&a, &b).unwrap(),
            other.paired_difference(&a, &b).unwrap()
        );
    }

    #[test]
    fn bootstrap_refuses_unpaired_or_empty_inputs() {
        let boot = Bootstrap::default();
        assert!(matches!(
            boot.paired_difference(&[1.0, 2.0], &[1.0]),
            Err(EvalError::Stats(_))
        ));
        assert!(matches!(
            boot.paired_difference(&[], &[]),
            Err(EvalError::Empty { .. })
        ));
        assert!(boot.paired_difference(&[f64::NAN], &[0.0]).is_err());
    }

    #[test]
    fn quantile_interpolates_between_order_statistics() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.975), 4.9); // position 3.9
    }
}
