//! Errors of the dataset crate: every variant names the file, the line or entry, the field, and the fix.

use std::fmt;
use std::path::PathBuf;

use thiserror::Error;

/// Where in an input file a problem was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file being read.
    pub path: PathBuf,
    /// Line or entry within it.
    pub position: Position,
}

/// A position within a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The file as a whole.
    File,
    /// 1-based line of a JSONL (or JSON) file.
    Line(usize),
    /// 0-based entry of a JSON array file (VQA-RAD, SLAKE, IU-Xray).
    Entry(usize),
}

impl Location {
    /// A whole file, no line.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            position: Position::File,
        }
    }

    /// Line `line` (1-based) of a file.
    pub fn at_line(path: impl Into<PathBuf>, line: usize) -> Self {
        Self {
            path: path.into(),
            position: Position::Line(line),
        }
    }

    /// Entry `entry` (0-based) of a JSON array file.
    pub fn at_entry(path: impl Into<PathBuf>, entry: usize) -> Self {
        Self {
            path: path.into(),
            position: Position::Entry(entry),
        }
    }

    /// The 1-based line, if known.
    pub fn line(&self) -> Option<usize> {
        match self.position {
            Position::Line(line) => Some(line),
            _ => None,
        }
    }

    /// The 0-based entry, if known.
    pub fn entry(&self) -> Option<usize> {
        match self.position {
            Position::Entry(entry) => Some(entry),
            _ => None,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        match self.position {
            Position::File => Ok(()),
            Position::Line(line) => write!(f, ":{line}"),
            Position::Entry(entry) => write!(f, " (entry {entry})"),
        }
    }
}

/// Why a dataset file, image, mask or pair could not be read, written or built.
#[derive(Debug, Error)]
pub enum DatasetError {
    /// The file system refused (missing file, permissions, disk full).
    #[error("{path}: {source}; fix: check that the path exists and is readable/writable", path = path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A path that must be a regular file is a directory, a device, a FIFO or a socket.
    #[error("{path}: is {kind}, expected {expected}; fix: pass the path of a regular file", path = path.display())]
    NotAFile {
        path: PathBuf,
        kind: &'static str,
        expected: String,
    },
    /// A line or entry is not valid JSON, or a field is missing or has the wrong type.
    #[error("{at}: field `{field}`: {message}; fix: {hint}")]
    Parse {
        at: Location,
        field: String,
        message: String,
        hint: String,
    },
    /// An id that must be unique in its file repeats an earlier line's.
    #[error("{at}: id `{id}` repeats line {first_line}; fix: give every line its own id (rebuild pairs with `firempo pairs`)")]
    DuplicateId {
        at: Location,
        id: String,
        first_line: usize,
    },
    /// A pair read from a file fails [`crate::PreferencePair::validate`].
    #[error("{at}: pair `{id}`: {reason}; fix: rebuild the pairs with `firempo pairs` (or correct the line)")]
    InvalidPair {
        at: Location,
        id: String,
        reason: String,
    },
    /// The answer type is not one this format knows.
    #[error("{at}: field `{field}`: unknown answer type `{value}`; fix: use one of {expected}")]
    UnknownAnswerType {
        at: Location,
        field: String,
        value: String,
        expected: &'static str,
    },
    /// A record points at an image (or mask) that does not exist.
    #[error("{at}: record `{record}` field `{field}`: file `{file}` does not exist; fix: put the file there or correct the path (relative paths resolve against the dataset root)", file = file.display())]
    MissingImage {
        at: Location,
        record: String,
        field: String,
        file: PathBuf,
    },
    /// An image or mask exists but cannot be decoded, encoded or has unusable dimensions.
    #[error("image `{path}`: {message}", path = path.display())]
    Image { path: PathBuf, message: String },
    /// An image or mask has no pixels or more than the pixel budget.
    #[error("{what}: {width}x{height} pixels is empty or above the budget of {max_pixels} pixels; fix: use a smaller image (downscale it)")]
    ImageSize {
        what: String,
        width: u32,
        height: u32,
        max_pixels: u64,
    },
    /// `<mask>…</mask>` markup is unbalanced.
    #[error("mask markup at byte {position} of {text:?}: {problem}; fix: wrap each divergent phrase in exactly one non-nested <mask>…</mask> pair")]
    MaskMarkup {
        position: usize,
        problem: &'static str,
        text: String,
    },
    /// A configuration value is out of range.
    #[error("invalid config `{field}` = {value}: must be {requirement}")]
    InvalidConfig {
        field: &'static str,
        value: String,
        requirement: &'static str,
    },
    /// An editor could not build a pair for a sample.
    #[error("sample for record `{record}`: {message}; fix: {hint}")]
    Edit {
        record: String,
        message: String,
        hint: String,
    },
    /// The judge endpoint failed (HTTP error, timeout, non-JSON reply) after all retries.
    #[error("judge for record `{record}`, {stage}: {message} (after {attempts} attempt(s)); fix: {hint}")]
    Judge {
        record: String,
        stage: &'static str,
        message: String,
        attempts: u32,
        hint: &'static str,
    },
    /// The judge's circuit breaker opened: too many requests in a row failed.
    #[error("judge at {url}: stopped after {failures} requests in a row failed; last failure: {last}; fix: check that the endpoint is up and the URL, model and key are right (replies that arrived are cached with --judge-cache; rerun to go on)")]
    JudgeStopped {
        url: String,
        failures: usize,
        last: String,
    },
    /// The run was stopped at the first bad record, as the `Stop` policy asks.
    #[error("stopped after {accepted} good record(s) at a bad one: {source}")]
    Stopped {
        accepted: usize,
        #[source]
        source: Box<DatasetError>,
    },
}

impl DatasetError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    /// A parse error from `serde_path_to_error`, naming the field path.
    pub(crate) fn from_serde(
        at: Location,
        err: serde_path_to_error::Error<serde_json::Error>,
        hint: &str,
    ) -> Self {
        let field = err.path().to_string();
        let field = if field == "." {
            "<line>".to_string()
        } else {
            field
        };
        Self::Parse {
            at,
            field,
            message: err.inner().to_string(),
            hint: hint.to_string(),
        }
    }
}
