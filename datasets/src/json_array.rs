//! Shared reading of the public JSON-array formats (VQA-RAD, SLAKE, IU-Xray): syntax errors name
//! the file and line, field errors name the entry and the field path.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::{DatasetError, Location};
use crate::records::AnswerType;

/// Reads and parses a whole JSON file.
pub(crate) fn read_json(path: &Path) -> Result<Value, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|e| DatasetError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| DatasetError::Parse {
        at: Location::at_line(path, e.line()),
        field: "<file>".into(),
        message: e.to_string(),
        hint: "the file must be valid JSON (check for a truncated download)".into(),
    })
}

/// The entries of a top-level JSON array.
pub(crate) fn into_entries(path: &Path, value: Value) -> Result<Vec<Value>, DatasetError> {
    match value {
        Value::Array(entries) => Ok(entries),
        other => Err(DatasetError::Parse {
            at: Location::file(path),
            field: "<root>".into(),
            message: format!("expected a JSON array, found {}", kind(&other)),
            hint: "pass the dataset's question file (a JSON array of entries)".into(),
        }),
    }
}

/// Deserializes one entry, naming the failing field.
pub(crate) fn parse_entry<T: DeserializeOwned>(
    path: &Path,
    entry: usize,
    value: Value,
    hint: &str,
) -> Result<T, DatasetError> {
    serde_path_to_error::deserialize(value)
        .map_err(|err| DatasetError::from_serde(Location::at_entry(path, entry), err, hint))
}

/// A JSON scalar as text: strings as-is, numbers and booleans printed (VQA-RAD mixes them).
pub(crate) fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Checks that a file exists, else a [`DatasetError::MissingImage`].
pub(crate) fn require_file(
    at: Location,
    record: &str,
    field: &str,
    file: &Path,
) -> Result<(), DatasetError> {
    if file.is_file() {
        Ok(())
    } else {
        Err(DatasetError::MissingImage {
            at,
            record: record.to_string(),
            field: field.to_string(),
            file: file.to_path_buf(),
        })
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A scalar field that must be present, else a parse error naming it.
pub(crate) fn required_scalar(
    at: &Location,
    field: &str,
    value: &Value,
) -> Result<String, DatasetError> {
    scalar_text(value).ok_or_else(|| DatasetError::Parse {
        at: at.clone(),
        field: field.to_string(),
        message: format!("expected a string or number, found {}", kind(value)),
        hint: format!("give `{field}` a string or number value"),
    })
}

/// `answer_type` of the VQA datasets: `CLOSED` or `OPEN` (any case, surrounding spaces ignored).
pub(crate) fn closed_or_open(at: &Location, value: &str) -> Result<AnswerType, DatasetError> {
    match value.trim().to_ascii_uppercase().as_str() {
        "CLOSED" => Ok(AnswerType::Closed),
        "OPEN" => Ok(AnswerType::Open),
        _ => Err(DatasetError::UnknownAnswerType {
            at: at.clone(),
            field: "answer_type".into(),
            value: value.to_string(),
            expected: "CLOSED, OPEN",
        }),
    }
}

/// A record's `meta`: the source fields that are present, as strings.
pub(crate) fn present_fields<const N: usize>(
    fields: [(&str, Option<String>); N],
) -> Map<String, Value> {
    fields
        .into_iter()
        .filter_map(|(key, value)| Some((key.to_string(), Value::String(value?))))
        .collect()
}
