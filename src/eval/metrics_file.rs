//! Reads a training run's `metrics.jsonl` (written by [`crate::train::metrics_log::MetricsLog`])
//! back into rows for plotting and tables.

use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::eval::error::EvalError;
use crate::train::metrics_log::MetricRow;

/// Parses `path`, one JSON object of numbers per line; blank lines are skipped.
///
/// `null` values (serde_json writes a NaN or ±∞ metric as `null`) become NaN, so a diverged step
/// keeps its row and plots as a gap. Any other non-number, or a line that is not a JSON object, is
/// an [`EvalError::BadMetricsLine`] naming the file and the 1-based line.
pub fn read_metrics_jsonl(path: impl AsRef<Path>) -> Result<Vec<MetricRow>, EvalError> {
    let path = path.as_ref();
    let text = fs::read_to_string(path).map_err(|e| EvalError::io("reading", path, e))?;
    let bad = |line: usize, reason: String| EvalError::BadMetricsLine {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line).map_err(|e| bad(index + 1, e.to_string()))?;
        let Value::Object(object) = value else {
            return Err(bad(index + 1, "expected a JSON object".into()));
        };
        let mut row = MetricRow::new();
        for (key, value) in object {
            let number = match value {
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                Value::Null => f64::NAN,
                other => return Err(bad(index + 1, format!("`{key}` is {other}, not a number"))),
            };
            row.insert(key, number);
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("firempo-eval-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.jsonl");
        fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn reads_rows_and_maps_null_to_nan() {
        let path = temp_file(
            "ok",
            "{\"step\":1,\"loss\":0.69}\n\n{\"step\":2,\"loss\":null,\"kl/forward\":0.01}\n",
        );
        let rows = read_metrics_jsonl(&path).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["loss"], 0.69);
        assert!(rows[1]["loss"].is_nan());
        assert_eq!(rows[1]["kl/forward"], 0.01);
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let path = temp_file("bad", "{\"step\":1}\n{\"step\":\"two\"}\n");
        let err = read_metrics_jsonl(&path).unwrap_err();
        assert!(
            matches!(err, EvalError::BadMetricsLine { line: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("metrics.jsonl:2"), "{err}");
        let path = temp_file("garbage", "not json\n");
        assert!(matches!(
            read_metrics_jsonl(&path),
            Err(EvalError::BadMetricsLine { line: 1, .. })
        ));
        assert!(matches!(
            read_metrics_jsonl(path.with_file_name("missing.jsonl")),
            Err(EvalError::Io { .. })
        ));
    }
}
