//! Named host tensors in a safetensors file: what `firempo forward` reads (a Hugging Face
//! processor's `input_ids`, `attention_mask`, `pixel_values`, …) and writes (`logits`).
//!
//! Values are widened on read (ints to `i64`, floats to `f32`) so callers need not care whether
//! Python saved `int32` ids or `bfloat16` pixels; writes go to a temporary file renamed into place,
//! so an interrupted write never leaves a truncated file under the final name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use firempo_models::loading::safetensors::floats_from_le;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::train::storage::explain_write_failure;

/// One tensor's shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor<T> {
    pub shape: Vec<usize>,
    pub values: Vec<T>,
}

impl<T: Copy> HostTensor<T> {
    /// Rows of a rank-2 tensor.
    pub fn rows(&self) -> Vec<Vec<T>> {
        let cols = self.shape.get(1).copied().unwrap_or(0).max(1);
        self.values.chunks(cols).map(<[T]>::to_vec).collect()
    }
}

/// The tensors of one safetensors file, by name.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

impl TensorFile {
    /// Reads and checks the header of `path` (a regular file; directories and devices are refused).
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        firempo_datasets::require_regular_file(path, "a safetensors file")?;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a safetensors file ({e}); save the tensors with \
                 `safetensors.torch.save_file({{...}}, path)`",
                path.display()
            )
        })?;
        Ok(Self {
            path: path.into(),
            bytes,
        })
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes).expect("checked in open")
    }

    /// Tensor names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .map(str::to_owned)
            .collect();
        names.sort();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors().tensor(name).is_ok()
    }

    /// An integer tensor (`int64`, `int32`, `uint8` or `bool`), or `None` when absent.
    pub fn ints(&self, name: &str) -> anyhow::Result<Option<HostTensor<i64>>> {
        let Ok(view) = self.tensors().tensor(name) else {
            return Ok(None);
        };
        let data = view.data();
        let values: Vec<i64> = match view.dtype() {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64)
                .collect(),
            Dtype::U8 | Dtype::BOOL => data.iter().map(|&b| b as i64).collect(),
            other => anyhow::bail!(
                "{}: tensor `{name}` is {other:?}; it must hold integers (int64, int32, uint8 or \
                 bool): pass the processor's output unchanged",
                self.path.display()
            ),
        };
        Ok(Some(HostTensor {
            shape: view.shape().to_vec(),
            values,
        }))
    }

    /// A float tensor (`float32`, `float16`, `bfloat16` or `float64`), or `None` when absent.
    pub fn floats(&self, name: &str) -> anyhow::Result<Option<HostTensor<f32>>> {
        let Ok(view) = self.tensors().tensor(name) else {
            return Ok(None);
        };
        let Some(values) = floats_from_le(view.dtype(), view.data()) else {
            anyhow::bail!(
                "{}: tensor `{name}` is {:?}; it must hold floats (float32, float16, bfloat16 or \
                 float64)",
                self.path.display(),
                view.dtype()
            );
        };
        Ok(Some(HostTensor {
            shape: view.shape().to_vec(),
            values,
        }))
    }

    /// Like [`TensorFile::ints`], but the tensor must be there.
    pub fn required_ints(&self, name: &str) -> anyhow::Result<HostTensor<i64>> {
        self.ints(name)?.ok_or_else(|| self.missing(name))
    }

    /// Like [`TensorFile::floats`], but the tensor must be there.
    pub fn required_floats(&self, name: &str) -> anyhow::Result<HostTensor<f32>> {
        self.floats(name)?.ok_or_else(|| self.missing(name))
    }

    fn missing(&self, name: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "{} has no tensor `{name}` (it has: {})",
            self.path.display(),
            self.names().join(", ")
        )
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes f32 tensors to `path` (through `path.partial`, renamed into place).
pub fn write_f32_tensors(
    path: &Path,
    tensors: &BTreeMap<String, HostTensor<f32>>,
) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(name, t)| {
            let raw = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (name.clone(), t.shape.clone(), raw)
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(name, shape, raw)| {
            TensorView::new(Dtype::F32, shape.clone(), raw)
                .map(|view| (name.clone(), view))
                .map_err(|e| anyhow::anyhow!("tensor `{name}` of shape {shape:?}: {e}"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let partial = partial_path(path);
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    safetensors::serialize_to_file(views, None, &partial)
        .map_err(|e| explain_write_failure(dir, &partial.display().to_string(), e))?;
    std::fs::rename(&partial, path)
        .with_context(|| format!("moving {} to {}", partial.display(), path.display()))
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_tensors_read_back_and_ints_widen() {
        let dir = std::env::temp_dir().join(format!("firempo-tensor-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.safetensors");
        let logits = HostTensor {
            shape: vec![1, 2, 3],
            values: vec![0.5, -1.0, 2.0, 3.25, 0.0, -7.5],
        };
        write_f32_tensors(&path, &BTreeMap::from([("logits".into(), logits.clone())])).unwrap();
        let file = TensorFile::open(&path).unwrap();
        assert_eq!(file.required_floats("logits").unwrap(), logits);
        assert!(!dir.join("t.safetensors.partial").exists());
        let err = file.required_ints("logits").unwrap_err().to_string();
        assert!(err.contains("must hold integers"), "{err}");
        let err = file.required_ints("input_ids").unwrap_err().to_string();
        assert!(
            err.contains("no tensor `input_ids`") && err.contains("logits"),
            "{err}"
        );

        let ids: Vec<u8> = [7i32, -200, 3]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let view = TensorView::new(Dtype::I32, vec![1, 3], &ids).unwrap();
        safetensors::serialize_to_file([("input_ids", view)], None, &path).unwrap();
        let ids = TensorFile::open(&path)
            .unwrap()
            .required_ints("input_ids")
            .unwrap();
        assert_eq!(ids.values, vec![7, -200, 3]);
        assert_eq!(ids.rows(), vec![vec![7, -200, 3]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_that_is_not_safetensors_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("firempo-tensor-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("inputs.safetensors");
        std::fs::write(&path, b"not a tensor file").unwrap();
        let err = TensorFile::open(&path).err().unwrap().to_string();
        assert!(
            err.contains("inputs.safetensors") && err.contains("not a safetensors"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
