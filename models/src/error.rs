//! Errors of the model library. Every variant names the file or field at fault and the fix.

use std::path::PathBuf;

use thiserror::Error;

/// A tensor the checkpoint should have had, or had wrongly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightProblem {
    /// The model needs this tensor and no file has it.
    Missing { name: String, shape: Vec<usize> },
    /// The file has this tensor and the model does not use it.
    Unexpected { name: String },
    /// Present with the wrong shape.
    Shape {
        name: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },
    /// Present with a dtype we cannot read (not f32/f16/bf16).
    Dtype { name: String, dtype: String },
    /// Present with the right shape but fewer or more value bytes than the shape needs.
    Truncated {
        name: String,
        bytes: usize,
        expected: usize,
    },
}

impl std::fmt::Display for WeightProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing { name, shape } => {
                write!(f, "missing `{name}` (expected shape {shape:?})")
            }
            Self::Unexpected { name } => write!(f, "unexpected `{name}`"),
            Self::Shape {
                name,
                expected,
                found,
            } => write!(f, "`{name}` has shape {found:?}, expected {expected:?}"),
            Self::Dtype { name, dtype } => {
                write!(
                    f,
                    "`{name}` has dtype {dtype}; only F32, F16 and BF16 are supported"
                )
            }
            Self::Truncated {
                name,
                bytes,
                expected,
            } => write!(
                f,
                "`{name}` holds {bytes} bytes of values, expected {expected}"
            ),
        }
    }
}

/// Why a model could not be configured, loaded or run.
#[derive(Debug, Error)]
pub enum ModelError {
    #[error("invalid model config: `{field}`: {message}")]
    InvalidConfig { field: String, message: String },
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON for {what}: {message}")]
    Json {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{path}: unsupported architecture `{found}`; supported: {supported}")]
    UnsupportedArchitecture {
        path: PathBuf,
        found: String,
        supported: &'static str,
    },
    #[error("{path}: field `{field}`: {message}")]
    ConfigField {
        path: PathBuf,
        field: String,
        message: String,
    },
    #[error("{path} is not a readable safetensors file (truncated or corrupt?): {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("checkpoint in {dir} does not match the model ({} problem(s)):\n  {}", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Weights {
        dir: PathBuf,
        problems: Vec<WeightProblem>,
    },
    /// A firempo weights file (`model.mpk`) whose tensors differ from what the config describes.
    #[error("{path} does not hold the model its config describes ({} problem(s)):\n  {}\nfix: load these weights with the config they were saved with (the model.json written next to them), or retrain", problems.len(), problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    RecordMismatch {
        path: PathBuf,
        problems: Vec<WeightProblem>,
    },
    /// A firempo weights file that cannot be read as a burn record.
    #[error("{path}: {message}; fix: write the weights again (`firempo sft` or `firempo align`)")]
    Record { path: PathBuf, message: String },
    #[error("{path}: cannot decode image: {message}")]
    Image { path: PathBuf, message: String },
    #[error("tokenizer {path}: {message}")]
    Tokenizer { path: PathBuf, message: String },
    /// A chat template that cannot be found, compiled or rendered, or a prompt format name that
    /// does not exist.
    #[error("chat template {origin}: {message}")]
    ChatTemplate { origin: String, message: String },
    #[error("input: {0}")]
    Input(String),
    /// A tokenizer, prompt format, image processor and model config that do not fit together.
    #[error("{0}")]
    Processor(String),
}
