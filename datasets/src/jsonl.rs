//! JSONL reading and writing for records, samples and pairs: one JSON object per line, blank lines
//! ignored, every bad line reported with its file, line number and field.
//!
//! Reading is bounded: only regular files are opened (a directory, `/dev/zero` or a FIFO is
//! refused before it can be read forever), a line longer than [`MAX_JSONL_LINE_BYTES`] is a bad
//! line, and the first I/O error ends the read (it is never skipped as a bad record).

use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{DatasetError, Location};
use crate::files::require_regular_file;
use crate::intake::{BadRecordPolicy, Intake, Loaded};

/// The longest JSONL line read (64 MiB); a longer one is reported as a bad line and skipped.
pub const MAX_JSONL_LINE_BYTES: usize = 64 << 20;

/// Reads a JSONL file of `T` (e.g. [`crate::Record`], [`crate::Sample`], [`crate::PreferencePair`]).
///
/// Bad lines are skipped and counted, or stop the run, as `policy` says; an I/O error always
/// stops it.
pub fn read_jsonl<T: DeserializeOwned>(
    path: &Path,
    policy: BadRecordPolicy,
) -> Result<Loaded<T>, DatasetError> {
    Ok(read_numbered_checked(path, policy, |_, _| Ok(Ok(())))?.map(|n| n.item))
}

/// An item of a JSONL file with its 1-based line number (for messages that point at the line).
#[derive(Debug, Clone, PartialEq)]
pub struct Numbered<T> {
    /// The line the item was read from.
    pub line: usize,
    /// The item.
    pub item: T,
}

/// [`read_jsonl`] keeping each accepted item's line number.
pub fn read_jsonl_numbered<T: DeserializeOwned>(
    path: &Path,
    policy: BadRecordPolicy,
) -> Result<Loaded<Numbered<T>>, DatasetError> {
    read_numbered_checked(path, policy, |_, _| Ok(Ok(())))
}

/// [`read_jsonl`] with a check of each parsed line (given its 1-based number): the outer error
/// ends the read, the inner one makes the line a bad record.
pub(crate) fn read_jsonl_checked<T: DeserializeOwned>(
    path: &Path,
    policy: BadRecordPolicy,
    check: impl FnMut(usize, &T) -> Result<Result<(), DatasetError>, DatasetError>,
) -> Result<Loaded<T>, DatasetError> {
    Ok(read_numbered_checked(path, policy, check)?.map(|n| n.item))
}

/// The accepted lines of a JSONL file, numbered, each checked as [`read_jsonl_checked`] says.
fn read_numbered_checked<T: DeserializeOwned>(
    path: &Path,
    policy: BadRecordPolicy,
    mut check: impl FnMut(usize, &T) -> Result<Result<(), DatasetError>, DatasetError>,
) -> Result<Loaded<Numbered<T>>, DatasetError> {
    let mut intake = Intake::new(policy);
    for item in numbered_jsonl(path, MAX_JSONL_LINE_BYTES)? {
        let item = match item {
            Err(err @ DatasetError::Io { .. }) => return Err(err),
            Err(err) => Err(err),
            Ok((line, item)) => check(line, &item)?.map(|()| Numbered { line, item }),
        };
        intake.take(item)?;
    }
    Ok(intake.finish())
}

/// Streams a JSONL file one line at a time (for files too large to hold): each item is a parsed
/// line or the error naming its line and field; blank lines are skipped. An I/O error is the
/// last item.
pub fn iter_jsonl<T: DeserializeOwned>(
    path: &Path,
) -> Result<impl Iterator<Item = Result<T, DatasetError>>, DatasetError> {
    Ok(numbered_jsonl(path, MAX_JSONL_LINE_BYTES)?.map(|item| item.map(|(_, value)| value)))
}

/// The parsed lines of a JSONL file with their 1-based numbers.
fn numbered_jsonl<T: DeserializeOwned>(
    path: &Path,
    max_line_bytes: usize,
) -> Result<impl Iterator<Item = Result<(usize, T), DatasetError>>, DatasetError> {
    require_regular_file(path, "a JSONL file")?;
    let file = File::open(path).map_err(|e| DatasetError::io(path, e))?;
    let lines = Lines {
        reader: BufReader::new(file),
        path: path.to_path_buf(),
        line_number: 0,
        max_line_bytes,
        done: false,
    };
    Ok(lines.map(|line| {
        line.and_then(|(path, number, text)| {
            parse_line(&path, number, &text).map(|value| (number, value))
        })
    }))
}

/// The lines of a JSONL file as `(path, 1-based number, text)`, blank lines left out: a BOM
/// before the first line is dropped, invalid UTF-8 and over-long lines are errors naming the
/// line, and the iterator ends after the first I/O error.
struct Lines {
    reader: BufReader<File>,
    path: PathBuf,
    line_number: usize,
    max_line_bytes: usize,
    done: bool,
}

type Line = (PathBuf, usize, String);

impl Lines {
    /// Reads the next line's bytes (without the newline); `None` at the end of the file.
    fn next_bytes(&mut self) -> Option<Result<Vec<u8>, DatasetError>> {
        let mut bytes = Vec::new();
        let limit = self.max_line_bytes as u64 + 1;
        let read = (&mut self.reader).take(limit).read_until(b'\n', &mut bytes);
        match read {
            Err(e) => Some(Err(DatasetError::io(&self.path, e))),
            Ok(0) => None,
            Ok(_) => {
                self.line_number += 1;
                if bytes.last() == Some(&b'\n') {
                    bytes.pop();
                } else if bytes.len() > self.max_line_bytes {
                    return Some(self.skip_long_line());
                }
                Some(Ok(bytes))
            }
        }
    }

    /// Discards the rest of an over-long line (in bounded chunks) and reports it.
    fn skip_long_line(&mut self) -> Result<Vec<u8>, DatasetError> {
        loop {
            let chunk = self
                .reader
                .fill_buf()
                .map_err(|e| DatasetError::io(&self.path, e))?;
            if chunk.is_empty() {
                break;
            }
            match chunk.iter().position(|&b| b == b'\n') {
                Some(end) => {
                    self.reader.consume(end + 1);
                    break;
                }
                None => {
                    let n = chunk.len();
                    self.reader.consume(n);
                }
            }
        }
        Err(DatasetError::Parse {
            at: Location::at_line(&self.path, self.line_number),
            field: "<line>".into(),
            message: format!("line is longer than {} bytes", self.max_line_bytes),
            hint: "put one JSON object per line (is this a JSONL file?)".into(),
        })
    }
}

impl Iterator for Lines {
    type Item = Result<Line, DatasetError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            let bytes = match self.next_bytes() {
                None => {
                    self.done = true;
                    return None;
                }
                Some(Err(err)) => {
                    self.done = matches!(err, DatasetError::Io { .. });
                    return Some(Err(err));
                }
                Some(Ok(bytes)) => bytes,
            };
            let bytes = match (self.line_number, bytes.strip_prefix(b"\xEF\xBB\xBF")) {
                (1, Some(rest)) => rest,
                _ => &bytes[..],
            };
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text,
                Err(e) => {
                    return Some(Err(DatasetError::Parse {
                        at: Location::at_line(&self.path, self.line_number),
                        field: "<line>".into(),
                        message: format!("invalid UTF-8 at byte {}", e.valid_up_to()),
                        hint: "save the file as UTF-8".into(),
                    }))
                }
            };
            if !text.trim().is_empty() {
                return Some(Ok((self.path.clone(), self.line_number, text.to_string())));
            }
        }
        None
    }
}

/// Parses one JSONL line, naming the failing field; anything after the object but whitespace is
/// an error.
pub fn parse_line<T: DeserializeOwned>(
    path: &Path,
    line_number: usize,
    line: &str,
) -> Result<T, DatasetError> {
    let at = || Location::at_line(path, line_number);
    let mut de = serde_json::Deserializer::from_str(line);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|err| {
        DatasetError::from_serde(
            at(),
            err,
            "make the line one JSON object with the documented fields (README, \"Datasets\")",
        )
    })?;
    de.end().map_err(|err| DatasetError::Parse {
        at: at(),
        field: "<line>".into(),
        message: format!("data after the JSON object ({err})"),
        hint: "put exactly one JSON object per line".into(),
    })?;
    Ok(value)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Item {
        n: u32,
    }

    #[test]
    fn an_over_long_line_is_a_bad_line_and_the_next_line_still_reads() {
        let dir = std::env::temp_dir().join(format!("firempo-jsonl-long-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("long.jsonl");
        let long = format!("{{\"n\": 1, \"pad\": \"{}\"}}", "x".repeat(500));
        std::fs::write(&path, format!("{long}\n{{\"n\": 2}}\n{long}")).unwrap();
        let items: Vec<Result<(usize, Item), _>> = numbered_jsonl(&path, 100).unwrap().collect();
        assert_eq!(items.len(), 3);
        let err = items[0].as_ref().unwrap_err().to_string();
        assert!(
            err.contains("long.jsonl:1") && err.contains("longer than 100 bytes"),
            "{err}"
        );
        assert_eq!(items[1].as_ref().unwrap(), &(2, Item { n: 2 }));
        let err = items[2].as_ref().unwrap_err().to_string();
        assert!(err.contains("long.jsonl:3"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
