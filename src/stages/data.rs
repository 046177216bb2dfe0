//! Reading records for a stage: firempo JSONL with image paths relative to the file's folder.

use std::path::{Path, PathBuf};

use anyhow::Context;
use firempo_datasets::{read_jsonl_numbered, BadRecordPolicy, Record};

/// Records of a JSONL file and the folder their relative paths start from.
pub struct RecordFile {
    /// The records (bad lines skipped and reported, or an error, as the policy says).
    pub records: Vec<Record>,
    /// The 1-based line of each record in the file (for messages that point at it).
    pub lines: Vec<usize>,
    /// Folder that relative image and mask paths are resolved against.
    pub root: PathBuf,
}

/// Reads `path`; at most `limit` records when given. Skipped bad lines are logged with a count.
pub fn read_records(
    path: &Path,
    policy: BadRecordPolicy,
    limit: Option<usize>,
) -> anyhow::Result<RecordFile> {
    let loaded = read_jsonl_numbered::<Record>(path, policy)
        .with_context(|| format!("reading records from {}", path.display()))?;
    if loaded.skipped > 0 {
        tracing::warn!(
            "{}: skipped {} bad records (first: {})",
            path.display(),
            loaded.skipped,
            loaded.problems[0]
        );
        eprintln!(
            "warning: {}: skipped {} bad records; first problem: {}",
            path.display(),
            loaded.skipped,
            loaded.problems[0]
        );
    }
    let mut numbered = loaded.items;
    if let Some(limit) = limit {
        numbered.truncate(limit);
    }
    let (lines, records): (Vec<usize>, Vec<Record>) =
        numbered.into_iter().map(|n| (n.line, n.item)).unzip();
    anyhow::ensure!(
        !lines.is_empty(),
        "{} holds no usable records",
        path.display()
    );
    Ok(RecordFile {
        records,
        lines,
        root: path.parent().map(Path::to_path_buf).unwrap_or_default(),
    })
}
