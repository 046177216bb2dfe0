//! Evaluation and reporting: answer normalization, VQA / report / finding metrics, visual
//! sensitivity, paired comparisons (bootstrap CIs, McNemar), results tables (markdown, CSV, JSON)
//! and PNG plots.
//!
//! Pure host-side Rust with no model dependency: callers feed model answers and log-probs in
//! (the judged metrics of [`judge`] send them to an OpenAI-compatible endpoint).
//! Metric definitions follow LLaVA-Med (closed accuracy, open recall), Papineni et al. 2002
//! (BLEU-4) and Lin 2004 / `pycocoevalcap` (ROUGE-L, β = 1.2); formulas are in each item's docs
//! and in the README's "Evaluation" section.

pub mod comparison;
mod error;
pub mod judge;
pub mod metrics;
mod metrics_file;
pub mod plots;
pub mod stats;
mod table;
pub mod text;

pub use comparison::{
    compare, differences_markdown, DifferenceRow, QuestionScores, PER_QUESTION_METRICS,
};
pub use error::EvalError;
pub use metrics::*;
pub use metrics_file::read_metrics_jsonl;
pub use plots::{
    plot_differences_forest, plot_results_bars, plot_training_curves, CurvePanel, PlotSize,
};
pub use stats::{discordant, mcnemar_exact, mean_and_std, Bootstrap, PairedDifference};
pub use table::{Cell, ResultsTable};
pub use text::{answer_tokens, normalize_answer, words};
