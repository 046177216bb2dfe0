//! PyTorch weight files (`pytorch_model.bin`, `*.pt`, `*.pth`: `torch.save` zip archives or the
//! legacy pickle format) read with burn's own reader (`burn-store`'s [`PytorchReader`]), so a
//! vision tower published without safetensors (`openai/clip-vit-large-patch14-336`) loads as it
//! is downloaded. Tensors stay lazy until taken.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::DType;
use burn_store::pytorch::PytorchReader;
use burn_store::TensorSnapshot;

use crate::error::ModelError;

/// The tensors of one PyTorch file, by name, not yet materialized.
pub struct PytorchFile {
    pub path: PathBuf,
    tensors: HashMap<String, TensorSnapshot>,
}

/// Why a tensor could not be turned into f32 values.
pub enum TakeError {
    /// Stored in a dtype the loader does not convert (not f64/f32/f16/bf16).
    Dtype(String),
    /// The file's bytes for it could not be read (a truncated download): the bytes its shape
    /// needs.
    Read { expected_bytes: usize },
}

impl PytorchFile {
    /// Reads the file's index of tensors (a `state_dict` as `save_pretrained` writes it).
    pub fn open(path: &Path) -> Result<Self, ModelError> {
        let unreadable = |e: &dyn std::fmt::Display| ModelError::Io {
            path: path.into(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not a readable PyTorch checkpoint ({e}); re-download it, or convert it to \
                     safetensors"
                ),
            ),
        };
        if !path.is_file() {
            return Err(ModelError::Io {
                path: path.into(),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        let reader = PytorchReader::new(path).map_err(|e| unreadable(&e))?;
        Ok(Self {
            path: path.into(),
            tensors: reader.into_tensors(),
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|t| t.shape.as_slice().to_vec())
    }

    /// Row-major f32 values of `name` (which must exist).
    pub fn values(&self, name: &str) -> Result<Vec<f32>, TakeError> {
        let Some(snapshot) = self.tensors.get(name) else {
            return Err(TakeError::Read { expected_bytes: 0 });
        };
        match snapshot.dtype {
            DType::F64 | DType::F32 | DType::F16 | DType::BF16 => {}
            other => return Err(TakeError::Dtype(format!("{other:?}"))),
        }
        let unreadable = |e: &dyn std::fmt::Debug| {
            tracing::warn!("{}: reading `{name}`: {e:?}", self.path.display());
            TakeError::Read {
                expected_bytes: snapshot.shape.as_slice().iter().product::<usize>()
                    * snapshot.dtype.size(),
            }
        };
        let data = snapshot.to_data().map_err(|e| unreadable(&e))?;
        data.convert::<f32>()
            .to_vec::<f32>()
            .map_err(|e| unreadable(&e))
    }
}
