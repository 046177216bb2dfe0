//! Per-step metrics written as JSONL (appended each step) and CSV (rewritten at checkpoints and
//! at the end), so curves survive crashes and can be plotted by any tool.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// One logged row: the step and named values.
pub type MetricRow = BTreeMap<String, f64>;

/// Appends metric rows to `metrics.jsonl` and mirrors them to `metrics.csv`.
pub struct MetricsLog {
    jsonl: PathBuf,
    csv: PathBuf,
    rows: Vec<MetricRow>,
    file: File,
}

impl MetricsLog {
    /// Opens the log of `run_dir`, keeping only rows with `step <= keep_through` (earlier rows of a
    /// resumed run; rows after its checkpoint are dropped since they will be recomputed).
    pub fn open(run_dir: &Path, keep_through: usize) -> anyhow::Result<Self> {
        fs::create_dir_all(run_dir)
            .with_context(|| format!("creating run directory {}", run_dir.display()))?;
        let jsonl = run_dir.join("metrics.jsonl");
        let mut rows = Vec::new();
        if jsonl.exists() && keep_through > 0 {
            let reader = BufReader::new(File::open(&jsonl)?);
            for (line_no, line) in reader.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                // serde_json writes non-finite values as `null`; read them back as NaN.
                let row: BTreeMap<String, Option<f64>> =
                    serde_json::from_str(&line).with_context(|| {
                        format!("{}:{}: not a metrics row", jsonl.display(), line_no + 1)
                    })?;
                let row: MetricRow = row
                    .into_iter()
                    .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
                    .collect();
                if row.get("step").is_some_and(|s| *s as usize <= keep_through) {
                    rows.push(row);
                }
            }
        }
        let mut file =
            File::create(&jsonl).with_context(|| format!("writing {}", jsonl.display()))?;
        for row in &rows {
            writeln!(file, "{}", serde_json::to_string(row)?)?;
        }
        let file = OpenOptions::new().append(true).open(&jsonl)?;
        Ok(Self {
            jsonl,
            csv: run_dir.join("metrics.csv"),
            rows,
            file,
        })
    }

    /// Appends a row (flushed, so a crash keeps it).
    pub fn push(&mut self, row: MetricRow) -> anyhow::Result<()> {
        writeln!(self.file, "{}", serde_json::to_string(&row)?)
            .and_then(|_| self.file.flush())
            .with_context(|| format!("appending to {}", self.jsonl.display()))?;
        self.rows.push(row);
        Ok(())
    }

    /// All rows so far.
    pub fn rows(&self) -> &[MetricRow] {
        &self.rows
    }

    /// Rewrites `metrics.csv` from all rows (columns: union of names, `step` first).
    pub fn write_csv(&self) -> anyhow::Result<()> {
        let mut columns: Vec<&String> = self.rows.iter().flat_map(|r| r.keys()).collect();
        columns.sort();
        columns.dedup();
        columns.sort_by_key(|c| c.as_str() != "step");
        let mut out = columns
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for row in &self.rows {
            let cells: Vec<String> = columns
                .iter()
                .map(|c| row.get(*c).map(|v| v.to_string()).unwrap_or_default())
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
        fs::write(&self.csv, out).with_context(|| format!("writing {}", self.csv.display()))
    }
}
