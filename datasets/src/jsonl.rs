//! JSONL reading and writing for records, samples and pairs: one JSON object per line, blank lines
//! ignored, every bad line reported with its file, line number and field.

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DatasetError, Location};
use crate::intake::{BadRecordPolicy, Intake, Loaded};

/// Reads a JSONL file of `T` (e.g. [`crate::Record`], [`crate::Sample`], [`crate::PreferencePair`]).
///
/// Bad lines are skipped and counted, or stop the run, as `policy` says.
pub fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    policy: BadRecordPolicy,
) -> Result<Loaded<T>, DatasetError> {
    let mut intake = Intake::new(policy);
    for item in iter_jsonl(path)? {
        intake.take(item)?;
    }
    Ok(intake.finish())
}

/// Streams a JSONL file one line at a time (for files too large to hold): each item is a parsed
/// line or the error naming its line and field; blank lines are skipped.
pub fn iter_jsonl<T: DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<T, DatasetError>>, DatasetError> {
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let path = path.to_path_buf();
    Ok(BufReader::new(file)
        .lines()
        .enumerate()
        .filter_map(move |(index, line)| match line {
            Err(e) => Some(Err(DatasetError::io(&path, e))),
            Ok(line) if line.trim().is_empty() => None,
            Ok(line) => Some(parse_line(&path, index + 1, &line)),
        }))
}

/// Parses one JSONL line, naming the failing field.
pub fn parse_line<T: DeserializeOwned>(
    path: &Path,
    line_number: usize,
    line: &str,
) -> Result<T, DatasetError> {
    let mut de = serde_json::Deserializer::from_str(line);
    serde_path_to_error::deserialize(&mut de).map_err(|err| {
        DatasetError::from_serde(
            Location::at_line(path, line_number),
            err,
            "make the line one JSON object with the documented fields (README, \"Datasets\")",
        )
    })
}

/// Writes items as JSONL (one compact object per line), creating parent directories.
pub fn write_jsonl<'a, T: Serialize + 'a>(
    path: &Path,
    items: impl IntoIterator<Item = &'a T>,
) -> Result<usize, DatasetError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DatasetError::io(parent, e))?;
    }
    let file = File::create(path).map_err(|e| DatasetError::io(path, e))?;
    let mut out = BufWriter::new(file);
    let mut count = 0;
    for item in items {
        serde_json::to_writer(&mut out, item)
            .map_err(|e| DatasetError::io(path, std::io::Error::other(e)))?;
        out.write_all(b"\n")
            .map_err(|e| DatasetError::io(path, e))?;
        count += 1;
    }
    out.flush().map_err(|e| DatasetError::io(path, e))?;
    Ok(count)
}
