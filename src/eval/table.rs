//! The results table of a comparison: rows are methods ("SFT", "DPO", "RRPO", "FiRe-MPO", …),
//! columns are metrics, and each cell holds one value per seed, shown as `mean ± std`.
//! Rendered as GitHub markdown and saved as CSV and JSON.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::eval::error::EvalError;
use crate::eval::stats::mean_and_std;

/// One cell: a metric's values across seeds (empty = not measured).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Cell {
    pub values: Vec<f64>,
}

impl Cell {
    /// `x̄ = (1/n) Σ x_i`; `None` for an empty cell.
    pub fn mean(&self) -> Option<f64> {
        mean_and_std(&self.values).map(|(mean, _)| mean)
    }

    /// Sample standard deviation across seeds, `s = sqrt( Σ (x_i − x̄)² / (n − 1) )`; `None` for
    /// fewer than two values.
    pub fn std(&self) -> Option<f64> {
        mean_and_std(&self.values).and_then(|(_, std)| std)
    }

    /// `"61.2"` for one value, `"61.2 ± 1.3"` for several, `"–"` for none.
    pub fn format(&self, decimals: usize) -> String {
        match (self.mean(), self.std()) {
            (None, _) => "–".to_string(),
            (Some(m), None) => format!("{m:.decimals$}"),
            (Some(m), Some(s)) => format!("{m:.decimals$} ± {s:.decimals$}"),
        }
    }
}

/// Methods × metrics; rows keep their insertion order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultsTable {
    metrics: Vec<String>,
    rows: Vec<(String, Vec<Cell>)>,
    /// Metric → the header the markdown shows (e.g. `open_recall (LLaVA-Med)`); CSV and JSON
    /// keep the metric names.
    labels: std::collections::BTreeMap<String, String>,
}

impl ResultsTable {
    /// An empty table with these metric columns.
    pub fn new<S: Into<String>>(metrics: impl IntoIterator<Item = S>) -> Self {
        Self {
            metrics: metrics.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
            labels: Default::default(),
        }
    }

    /// Shows `metric`'s column as `label` in the markdown (saying which metric it is).
    pub fn set_label(&mut self, metric: &str, label: impl Into<String>) {
        self.labels.insert(metric.to_string(), label.into());
    }

    /// Metric names, in column order.
    pub fn metrics(&self) -> &[String] {
        &self.metrics
    }

    /// Method names, in row order.
    pub fn methods(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().map(|(m, _)| m.as_str())
    }

    /// Sets the values (one per seed) of `method` × `metric`, adding the method's row if new.
    pub fn insert(
        &mut self,
        method: &str,
        metric: &str,
        values: Vec<f64>,
    ) -> Result<(), EvalError> {
        let col = self
            .metrics
            .iter()
            .position(|m| m == metric)
            .ok_or_else(|| {
                EvalError::Table(format!(
                    "no metric column `{metric}` (columns: {:?})",
                    self.metrics
                ))
            })?;
        let n_metrics = self.metrics.len();
        let row = match self.rows.iter().position(|(m, _)| m == method) {
            Some(i) => i,
            None => {
                self.rows
                    .push((method.to_string(), vec![Cell::default(); n_metrics]));
                self.rows.len() - 1
            }
        };
        self.rows[row].1[col] = Cell { values };
        Ok(())
    }

    /// The cell of `method` × `metric`, if both exist.
    pub fn cell(&self, method: &str, metric: &str) -> Option<&Cell> {
        let col = self.metrics.iter().position(|m| m == metric)?;
        let (_, cells) = self.rows.iter().find(|(m, _)| m == method)?;
        cells.get(col)
    }

    /// GitHub markdown: a `method` column, then one right-aligned column per metric (headed by
    /// its label, if set), cells as [`Cell::format`] with `decimals` digits.
    pub fn to_markdown(&self, decimals: usize) -> String {
        let escape = |s: &str| s.replace('|', "\\|");
        let mut out = String::from("| method |");
        for m in &self.metrics {
            let _ = write!(out, " {} |", escape(self.labels.get(m).unwrap_or(m)));
        }
        out.push_str("\n| --- |");
        out.push_str(&" ---: |".repeat(self.metrics.len()));
        out.push('\n');
        for (method, cells) in &self.rows {
            let _ = write!(out, "| {} |", escape(method));
            for cell in cells {
                let _ = write!(out, " {} |", cell.format(decimals));
            }
            out.push('\n');
        }
        out
    }

    /// CSV: `method`, then `<metric>` (mean) and `<metric> std` per metric, full precision; empty
    /// fields where a cell is empty or has a single value (no std).
    pub fn to_csv(&self) -> String {
        let mut header = vec![csv_field("method")];
        for m in &self.metrics {
            header.push(csv_field(m));
            header.push(csv_field(&format!("{m} std")));
        }
        let mut out = header.join(",") + "\n";
        for (method, cells) in &self.rows {
            let mut fields = vec![csv_field(method)];
            for cell in cells {
                fields.push(cell.mean().map(|v| v.to_string()).unwrap_or_default());
                fields.push(cell.std().map(|v| v.to_string()).unwrap_or_default());
            }
            out += &(fields.join(",") + "\n");
        }
        out
    }

    /// JSON: `{"metrics": [...], "rows": [{"method": ..., "cells": {metric: {"values": [...],
    /// "mean": x̄, "std": s}}}]}` (`mean`/`std` are `null` where undefined).
    pub fn to_json(&self) -> Value {
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|(method, cells)| {
                let cells: Map<String, Value> = self
                    .metrics
                    .iter()
                    .zip(cells)
                    .map(|(m, c)| {
                        (
                            m.clone(),
                            json!({"values": c.values, "mean": c.mean(), "std": c.std()}),
                        )
                    })
                    .collect();
                json!({"method": method, "cells": cells})
            })
            .collect();
        json!({"metrics": self.metrics, "rows": rows})
    }

    /// Reads a table written by [`ResultsTable::to_json`] (only `values` are read back).
    pub fn from_json(value: &Value) -> Result<Self, EvalError> {
        #[derive(Deserialize)]
        struct Row {
            method: String,
            cells: std::collections::BTreeMap<String, Cell>,
        }
        #[derive(Deserialize)]
        struct Table {
            metrics: Vec<String>,
            rows: Vec<Row>,
        }
        let parsed: Table = serde_json::from_value(value.clone())
            .map_err(|e| EvalError::Table(format!("not a results table: {e}")))?;
        let mut table = Self::new(parsed.metrics);
        for row in parsed.rows {
            for (metric, cell) in row.cells {
                table.insert(&row.method, &metric, cell.values)?;
            }
        }
        Ok(table)
    }

    /// Writes `<dir>/<stem>.md`, `.csv` and `.json`, creating `dir`; returns the three paths.
    pub fn save(&self, dir: &Path, stem: &str, decimals: usize) -> Result<[PathBuf; 3], EvalError> {
        fs::create_dir_all(dir).map_err(|e| EvalError::io("creating", dir, e))?;
        let json = serde_json::to_string_pretty(&self.to_json())
            .map_err(|e| EvalError::Table(e.to_string()))?;
        let files = [
            (dir.join(format!("{stem}.md")), self.to_markdown(decimals)),
            (dir.join(format!("{stem}.csv")), self.to_csv()),
            (dir.join(format!("{stem}.json")), json + "\n"),
        ];
        for (path, contents) in &files {
            fs::write(path, contents).map_err(|e| EvalError::io("writing", path, e))?;
        }
        let [(md, _), (csv, _), (json, _)] = files;
        Ok([md, csv, json])
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> ResultsTable {
        let mut t = ResultsTable::new(["SLAKE closed", "IU-Xray BLEU-4"]);
        t.insert("SFT", "SLAKE closed", vec![61.2]).unwrap();
        // mean 70, sample std sqrt(((−1)² + 0 + 1²) / 2) = 1
        t.insert("FiRe-MPO", "SLAKE closed", vec![69.0, 70.0, 71.0])
            .unwrap();
        t.insert("FiRe-MPO", "IU-Xray BLEU-4", vec![10.0, 12.0])
            .unwrap();
        t
    }

    #[test]
    fn cells_format_mean_and_sample_std() {
        assert_eq!(
            Cell {
                values: vec![61.24]
            }
            .format(1),
            "61.2"
        );
        assert_eq!(
            Cell {
                values: vec![69.0, 70.0, 71.0]
            }
            .format(1),
            "70.0 ± 1.0"
        );
        // values 10, 12: mean 11, s = sqrt((1 + 1) / 1) = √2 ≈ 1.414
        assert_eq!(
            Cell {
                values: vec![10.0, 12.0]
            }
            .format(2),
            "11.00 ± 1.41"
        );
        assert_eq!(Cell::default().format(1), "–");
    }

    #[test]
    fn markdown_rendering() {
        let md = table().to_markdown(1);
        let expected = "| method | SLAKE closed | IU-Xray BLEU-4 |\n\
                        | --- | ---: | ---: |\n\
                        | SFT | 61.2 | – |\n\
                        | FiRe-MPO | 70.0 ± 1.0 | 11.0 ± 1.4 |\n";
        assert_eq!(md, expected);
    }

    #[test]
    fn labels_head_the_markdown_columns_only() {
        let mut t = ResultsTable::new(["open_recall"]);
        t.insert("SFT", "open_recall", vec![40.0]).unwrap();
        t.set_label("open_recall", "open_recall (LLaVA-Med)");
        assert!(t
            .to_markdown(1)
            .starts_with("| method | open_recall (LLaVA-Med) |\n"));
        assert!(t.to_csv().starts_with("method,open_recall,"));
        assert_eq!(t.to_json()["metrics"][0], "open_recall");
    }

    #[test]
    fn csv_rendering_quotes_and_leaves_gaps() {
        let mut t = ResultsTable::new(["acc"]);
        t.insert("DPO (GT chosen), v2", "acc", vec![50.0]).unwrap();
        assert_eq!(
            t.to_csv(),
            "method,acc,acc std\n\"DPO (GT chosen), v2\",50,\n"
        );
    }

    #[test]
    fn json_round_trip_and_files() {
        let t = table();
        let json = t.to_json();
        assert_eq!(json["rows"][1]["cells"]["SLAKE closed"]["mean"], 70.0);
        assert_eq!(json["rows"][1]["cells"]["SLAKE closed"]["std"], 1.0);
        assert!(json["rows"][0]["cells"]["IU-Xray BLEU-4"]["mean"].is_null());
        assert_eq!(ResultsTable::from_json(&json).unwrap(), t);

        let dir = std::env::temp_dir().join(format!("firempo-table-{}", std::process::id()));
        let [md, csv, js] = t.save(&dir, "results", 1).unwrap();
        assert_eq!(fs::read_to_string(md).unwrap(), t.to_markdown(1));
        assert_eq!(fs::read_to_string(csv).unwrap(), t.to_csv());
        let back: Value = serde_json::from_str(&fs::read_to_string(js).unwrap()).unwrap();
        assert_eq!(ResultsTable::from_json(&back).unwrap(), t);
    }

    #[test]
    fn unknown_metric_is_an_error() {
        let mut t = ResultsTable::new(["acc"]);
        assert!(matches!(
            t.insert("SFT", "recall", vec![1.0]),
            Err(EvalError::Table(_))
        ));
        assert_eq!(t.cell("SFT", "acc"), None);
    }
}
