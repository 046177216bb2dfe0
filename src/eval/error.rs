//! Errors of the evaluation layer: unreadable or malformed inputs, and plots that failed to draw.

use std::path::PathBuf;

use thiserror::Error;

/// Why an evaluation, table or plot could not be produced. Variants name the file, line or
/// metric at fault.
#[derive(Debug, Error)]
pub enum EvalError {
    /// A metric was asked for over zero examples (its mean would be undefined).
    #[error("cannot compute {metric} over an empty set of examples")]
    Empty { metric: &'static str },
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A line of a `metrics.jsonl` file is not a JSON object of numbers.
    #[error("{path}:{line}: not a metrics row: {reason}")]
    BadMetricsLine {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// A results-table cell was given for a metric the table has no column for, or similar.
    #[error("results table: {0}")]
    Table(String),
    /// A statistical comparison got inputs it cannot compare (unpaired, non-finite, bad settings).
    #[error("statistics: {0}")]
    Stats(String),
    /// A judge request failed (endpoint down, a reply that cannot be read after the retries).
    #[error("judge at {url}: {source}")]
    Judge {
        url: String,
        #[source]
        source: Box<firempo_datasets::DatasetError>,
    },
    /// The plotting backend failed (drawing or PNG encoding).
    #[error("plot {path}: {reason}")]
    Plot { path: PathBuf, reason: String },
}

impl EvalError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
