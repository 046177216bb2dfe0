//! Paired comparison of methods on the same questions: per-question scores read back from `firempo
//! eval`'s `predictions.jsonl`, and a table of differences `method − baseline` with their paired
//! bootstrap 95% CIs (and McNemar's exact p for closed accuracy), as [`crate::eval::stats`]
//! computes them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::eval::error::EvalError;
use crate::eval::metrics::{closed_match, open_recall, RougeL, ROUGE_L_BETA};
use crate::eval::stats::{discordant, mcnemar_exact, Bootstrap, PairedDifference};
use crate::eval::text::normalize_answer;

/// The per-question metrics: each is the mean of its per-question values over the questions it
/// covers (closed, open, report, all), so it can be compared question by question.
pub const PER_QUESTION_METRICS: [&str; 5] = [
    "closed_acc",
    "open_recall",
    "rouge_l",
    "answer_change",
    "logp_drop",
];

/// The fields of a `predictions.jsonl` line that scoring needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PredictionRow {
    pub record_id: String,
    /// `closed`, `open` or `report`.
    pub answer_type: String,
    pub truth: String,
    pub answer: String,
    pub corrupted_answer: String,
    pub logp_clean: f64,
    pub logp_corrupted: f64,
}

/// Per-question values of one evaluation: metric → `(record id, value)` in file order
/// (percentages, except `logp_drop` in nats), computed as `firempo eval` aggregates them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct QuestionScores {
    pub metrics: BTreeMap<&'static str, Vec<(String, f64)>>,
}

impl QuestionScores {
    /// Scores of the rows: closed accuracy (`closed_match`), open recall, ROUGE-L F (reports),
    /// and on every question the answer change (normalized answers differ) and the log-prob drop.
    pub fn of_rows(rows: &[PredictionRow]) -> Self {
        let mut metrics: BTreeMap<&'static str, Vec<(String, f64)>> = BTreeMap::new();
        let mut push = |metric: &'static str, id: &str, value: f64| {
            metrics
                .entry(metric)
                .or_default()
                .push((id.to_string(), value));
        };
        for row in rows {
            let id = row.record_id.as_str();
            match row.answer_type.as_str() {
                "closed" => push(
                    "closed_acc",
                    id,
                    100.0 * f64::from(u8::from(closed_match(&row.answer, &row.truth))),
                ),
                "open" => push(
                    "open_recall",
                    id,
                    100.0 * open_recall(&row.answer, &row.truth),
                ),
                "report" => push(
                    "rouge_l",
                    id,
                    100.0 * RougeL::score(&row.answer, &row.truth, ROUGE_L_BETA).f_measure,
                ),
                _ => {}
            }
            let changed = normalize_answer(&row.answer) != normalize_answer(&row.corrupted_answer);
            push("answer_change", id, 100.0 * f64::from(u8::from(changed)));
            push("logp_drop", id, row.logp_clean - row.logp_corrupted);
        }
        Self { metrics }
    }

    /// Reads `predictions.jsonl` (one JSON object per line) and scores it.
    pub fn read(path: &Path) -> Result<Self, EvalError> {
        let text = std::fs::read_to_string(path).map_err(|e| EvalError::io("reading", path, e))?;
        let rows = text
            .lines()
            .enumerate()
            .filter(|(_, line)| !line.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| EvalError::BadMetricsLine {
                    path: path.to_path_buf(),
                    line: i + 1,
                    reason: format!("not a prediction: {e}"),
                })
            })
            .collect::<Result<Vec<PredictionRow>, _>>()?;
        Ok(Self::of_rows(&rows))
    }

    /// The values of `metric` averaged question by question over several evaluations of the same
    /// questions (e.g. one per alignment seed); `None` when the metric is absent. Evaluations of
    /// different questions (ids or order) are an error.
    pub fn mean_over(runs: &[Self], metric: &str) -> Result<Option<Vec<f64>>, EvalError> {
        let Some(first) = runs.first().and_then(|r| r.metrics.get(metric)) else {
            return Ok(None);
        };
        let mut sum = vec![0.0; first.len()];
        for run in runs {
            let values = run.metrics.get(metric).map(Vec::as_slice).unwrap_or(&[]);
            let same = values.len() == first.len()
                && values.iter().zip(first).all(|((a, _), (b, _))| a == b);
            if !same {
                return Err(EvalError::Stats(format!(
                    "{metric}: the evaluations being averaged did not score the same questions in \
                     the same order"
                )));
            }
            for (s, (_, v)) in sum.iter_mut().zip(values) {
                *s += v;
            }
        }
        Ok(Some(
            sum.into_iter().map(|s| s / runs.len() as f64).collect(),
        ))
    }

    /// Closed answers right (`true`) by majority over several evaluations of the same questions
    /// (with an odd number of runs there is no tie; a tie counts as wrong).
    pub fn closed_majority(runs: &[Self]) -> Result<Option<Vec<bool>>, EvalError> {
        Ok(Self::mean_over(runs, "closed_acc")?
            .map(|mean| mean.into_iter().map(|m| m > 50.0).collect()))
    }
}

/// One row of the difference table: `method − baseline` per metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DifferenceRow {
    pub method: String,
    pub baseline: String,
    /// Metric → difference of the per-question means with its bootstrap CI.
    pub differences: BTreeMap<String, PairedDifference>,
    /// McNemar's exact p of closed answers right/wrong (majority over seeds), when compared.
    pub mcnemar_p: Option<f64>,
}

/// Compares `method` with `baseline` on every metric both have: the paired bootstrap CI of the
/// difference of per-question means (each method's values averaged over its seeds first), and
/// McNemar's exact p on the closed answers' majority outcomes.
pub fn compare(
    method: (&str, &[QuestionScores]),
    baseline: (&str, &[QuestionScores]),
    metrics: &[&str],
    bootstrap: &Bootstrap,
) -> Result<DifferenceRow, EvalError> {
    let mut differences = BTreeMap::new();
    for &metric in metrics {
        let (Some(a), Some(b)) = (
            QuestionScores::mean_over(method.1, metric)?,
            QuestionScores::mean_over(baseline.1, metric)?,
        ) else {
            continue;
        };
        differences.insert(metric.to_string(), bootstrap.paired_difference(&a, &b)?);
    }
    let mcnemar_p = match (
        QuestionScores::closed_majority(method.1)?,
        QuestionScores::closed_majority(baseline.1)?,
    ) {
        (Some(a), Some(b)) if metrics.contains(&"closed_acc") => {
            let (b_, c_) = discordant(&a, &b)?;
            Some(mcnemar_exact(b_, c_))
        }
        _ => None,
    };
    Ok(DifferenceRow {
        method: method.0.to_string(),
        baseline: baseline.0.to_string(),
        differences,
        mcnemar_p,
    })
}

/// GitHub markdown of difference rows: one row per comparison, one column per metric, cells
/// `+1.23 [+0.40, +2.05]` (bold when the 95% CI excludes 0), closed accuracy with `p = …`.
pub fn differences_markdown(rows: &[DifferenceRow], metrics: &[&str], decimals: usize) -> String {
    let mut out = String::from("| comparison |");
    for m in metrics {
        let _ = write!(out, " Δ {m} |");
    }
    out.push_str("\n| --- |");
    out.push_str(&" ---: |".repeat(metrics.len()));
    out.push('\n');
    for row in rows {
        let _ = write!(out, "| {} − {} |", row.method, row.baseline);
        for m in metrics {
            let cell = match row.differences.get(*m) {
                None => "–".to_string(),
                Some(d) => {
                    let text = d.format(decimals);
                    let text = if d.excludes_zero() {
                        format!("**{text}**")
                    } else {
                        text
                    };
                    match (row.mcnemar_p, *m == "closed_acc") {
                        (Some(p), true) => format!("{text} p={p:.3}"),
                        _ => text,
                    }
                }
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: &str, kind: &str, truth: &str, answer: &str, corrupted: &str) -> PredictionRow {
        PredictionRow {
            record_id: id.into(),
            answer_type: kind.into(),
            truth: truth.into(),
            answer: answer.into(),
            corrupted_answer: corrupted.into(),
            logp_clean: -1.0,
            logp_corrupted: -3.0,
        }
    }

    #[test]
    fn per_question_scores_follow_the_eval_metrics() {
        let scores = QuestionScores::of_rows(&[
            row("a", "closed", "yes", "Yes, there is.", "no"),
            row("b", "closed", "left", "right", "right"),
            row("c", "open", "left lung", "left", "left"),
        ]);
        let values = |m: &str| -> Vec<f64> { scores.metrics[m].iter().map(|(_, v)| *v).collect() };
        assert_eq!(values("closed_acc"), [100.0, 0.0]);
        assert_eq!(values("open_recall"), [50.0]);
        assert_eq!(values("answer_change"), [100.0, 0.0, 0.0]);
        assert_eq!(values("logp_drop"), [2.0, 2.0, 2.0]);
        assert!(!scores.metrics.contains_key("rouge_l"));
    }

    #[test]
    fn seeds_are_averaged_per_question_and_compared_pairwise() {
        let run = |answers: [&str; 7]| {
            let rows: Vec<PredictionRow> = answers
                .iter()
                .enumerate()
                .map(|(i, a)| row(&format!("q{i}"), "closed", "yes", a, a))
                .collect();
            QuestionScores::of_rows(&rows)
        };
        // baseline right on q0 only; method right on q0..q5 in 2 of 3 seeds, wrong on q6.
        let base = [run(["yes", "no", "no", "no", "no", "no", "no"])];
        let method = [
            run(["yes", "yes", "yes", "yes", "yes", "yes", "no"]),
            run(["yes", "yes", "yes", "yes", "yes", "yes", "no"]),
            run(["no", "no", "no", "no", "no", "no", "no"]),
        ];
        let mean = QuestionScores::mean_over(&method, "closed_acc")
            .unwrap()
            .unwrap();
        assert!((mean[1] - 200.0 / 3.0).abs() < 1e-9);
        let row = compare(
            ("M", &method),
            ("B", &base),
            &PER_QUESTION_METRICS,
            &Bootstrap::default(),
        )
        .unwrap();
        // Majority: method right on q0..q5, baseline on q0: b = 5, c = 0 → p = 2 / 2^5.
        assert!((row.mcnemar_p.unwrap() - 0.0625).abs() < 1e-12);
        let d = row.differences["closed_acc"];
        // mean over questions of (mean over seeds − baseline): (−100/3 + 5 · 200/3 + 0) / 7
        assert!((d.mean - (-100.0 / 3.0 + 5.0 * 200.0 / 3.0) / 7.0).abs() < 1e-9);
        let md = differences_markdown(&[row], &["closed_acc", "rouge_l"], 1);
        assert!(md.contains("| M − B |") && md.contains("p=0.062"), "{md}");
        assert!(md.contains("| – |"), "absent metric: {md}");

        let other = [QuestionScores::of_rows(&[row_q("z")])];
        assert!(compare(
            ("M", &method),
            ("B", &other),
            &["closed_acc"],
            &Bootstrap::default()
        )
        .is_err());
    }

    fn row_q(id: &str) -> PredictionRow {
        row(id, "closed", "yes", "yes", "yes")
    }
}
