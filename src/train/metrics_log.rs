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

/// The rows of a run's log with `step <= keep_through`, in order. A line that is not a row (torn
/// by a crash or a full disk during an append) is an error only while rows up to the checkpoint
/// are still missing; after them it and the rest are dropped, since they will be recomputed.
fn read_rows_through(jsonl: &Path, keep_through: usize) -> anyhow::Result<Vec<MetricRow>> {
    let reader = BufReader::new(File::open(jsonl)?);
    let mut rows = Vec::new();
    let mut last_step = 0;
    for (line_no, line) in reader.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading {}", jsonl.display()))?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // serde_json writes non-finite values as `null`; read them back as NaN.
        let parsed: Result<BTreeMap<String, Option<f64>>, _> = serde_json::from_slice(&line);
        let row: MetricRow = match parsed {
            Ok(row) => row
                .into_iter()
                .map(|(k, v)| (k, v.unwrap_or(f64::NAN)))
                .collect(),
            Err(_) if last_step >= keep_through => {
                eprintln!(
                    "warning: {}:{}: dropping a damaged metrics line after the checkpoint's step \
                     {keep_through} (it will be recomputed)",
                    jsonl.display(),
                    line_no + 1
                );
                break;
            }
            Err(e) => anyhow::bail!(
                "{}:{}: not a metrics row ({e}), before the checkpoint's step {keep_through}; \
                 the log is damaged: restore it or start a new run",
                jsonl.display(),
                line_no + 1
            ),
        };
        let step = row.get("step").map_or(0, |s| *s as usize);
        last_step = last_step.max(step);
        if step <= keep_through {
            rows.push(row);
        }
    }
    Ok(rows)
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
            rows = read_rows_through(&jsonl, keep_through)?;
        }
        // Rewrite through a temporary file and a rename: a crash here keeps the old log.
        let tmp = run_dir.join("metrics.jsonl.tmp");
        let mut file = File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
        for row in &rows {
            writeln!(file, "{}", serde_json::to_string(row)?)
                .with_context(|| format!("writing {}", tmp.display()))?;
        }
        file.sync_all()
            .with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, &jsonl).with_context(|| format!("replacing {}", jsonl.display()))?;
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
