//! Reads tensors from one or several (sharded) safetensors files — or PyTorch `.bin`/`.pt` files
//! through [`super::pytorch`] — into host buffers of the target float type, and keeps account of
//! every tensor taken, missing, mis-shaped or left over so loading reports all problems at once
//! (nanoGPT `from_pretrained`'s "every key used, every shape right").
//!
//! Safetensors shards are memory-mapped, not read: each tensor is decoded once, straight from the
//! mapped bytes into its target dtype ([`floats_from_le_as`]), and its pages are released right
//! after, so the host peak while loading is the model plus about one tensor, not a whole shard.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use memmap2::{Mmap, UncheckedAdvice};
use safetensors::tensor::{Dtype, Metadata, SafeTensors};

use super::pytorch::{PytorchFile, TakeError};
use crate::error::{ModelError, WeightProblem};

enum Shard {
    Safetensors {
        path: PathBuf,
        /// The whole file, mapped read-only.
        bytes: Mmap,
        header_len: usize,
        metadata: Metadata,
    },
    Pytorch(PytorchFile),
}

/// All tensors of a checkpoint directory (or a single file), by name.
pub struct WeightStore {
    origin: PathBuf,
    shards: Vec<Shard>,
    /// Tensor name → shard index.
    index: BTreeMap<String, usize>,
    used: BTreeSet<String>,
    problems: Vec<WeightProblem>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ModelError + '_ {
    move |source| ModelError::Io {
        path: path.into(),
        source,
    }
}

impl WeightStore {
    /// Opens `model.safetensors.index.json` (sharded), else `model.safetensors`, else every
    /// `*.safetensors` in `dir` except adapters.
    pub fn open_dir(dir: &Path) -> Result<Self, ModelError> {
        let index_path = dir.join("model.safetensors.index.json");
        let files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io(&index_path))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Json {
                    path: index_path.clone(),
                    what: "a safetensors index",
                    message: e.to_string(),
                })?;
            let map = json["weight_map"]
                .as_object()
                .ok_or_else(|| ModelError::Json {
                    path: index_path.clone(),
                    what: "a safetensors index",
                    message: "no `weight_map` object".into(),
                })?;
            let names: BTreeSet<&str> = map.values().filter_map(|v| v.as_str()).collect();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if dir.join("model.safetensors").exists() {
            vec![dir.join("model.safetensors")]
        } else {
            let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(io(dir))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.extension().is_some_and(|e| e == "safetensors")
                        && !p
                            .file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("adapter"))
                })
                .collect();
            found.sort();
            if found.is_empty() {
                return Err(ModelError::Safetensors {
                    path: dir.into(),
                    message: "no *.safetensors files here (convert .bin checkpoints with `safetensors` first)".into(),
                });
            }
            found
        };
        Self::open_files(dir, &files)
    }

    /// Opens the given files; `origin` names the checkpoint in errors.
    pub fn open_files(origin: &Path, files: &[PathBuf]) -> Result<Self, ModelError> {
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in files {
            let file = File::open(path).map_err(io(path))?;
            // SAFETY: the mapping is read-only; as with any mapped file, another process
            // truncating or rewriting the checkpoint while it loads is undefined behaviour
            // (the same contract as safetensors' Python `safe_open` and candle's mmap loading).
            let bytes = unsafe { Mmap::map(&file) }.map_err(io(path))?;
            let bad = |e: safetensors::SafeTensorError| ModelError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            };
            // `deserialize` validates that every tensor's bytes lie inside the file.
            SafeTensors::deserialize(&bytes).map_err(bad)?;
            let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(bad)?;
            for name in metadata.tensors().keys() {
                index.insert(name.clone(), shards.len());
            }
            shards.push(Shard::Safetensors {
                path: path.clone(),
                bytes,
                header_len,
                metadata,
            });
        }
        Ok(Self::from_shards(origin, shards, index))
    }

    /// Opens PyTorch weight files (`pytorch_model.bin`, shards of it, `*.pt`); `origin` names the
    /// directory in errors.
    pub fn open_pytorch_files(origin: &Path, files: &[PathBuf]) -> Result<Self, ModelError> {
        let mut shards = Vec::new();
        let mut index = BTreeMap::new();
        for path in files {
            let file = PytorchFile::open(path)?;
            for name in file.names() {
                index.insert(name.to_string(), shards.len());
            }
            shards.push(Shard::Pytorch(file));
        }
        Ok(Self::from_shards(origin, shards, index))
    }

    /// Opens the weights of `dir` in either format: safetensors as [`WeightStore::open_dir`], else
    /// `pytorch_model.bin.index.json` (sharded), else `pytorch_model.bin`, else every `*.bin`,
    /// `*.pt` or `*.pth` file. `what` says what the directory is in the error when it has none.
    pub fn open_dir_any_format(dir: &Path, what: &str) -> Result<Self, ModelError> {
        let listing: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        let has_ext = |p: &PathBuf, exts: &[&str]| {
            p.extension().is_some_and(|e| exts.iter().any(|x| e == *x))
        };
        if dir.join("model.safetensors.index.json").exists()
            || listing.iter().any(|p| has_ext(p, &["safetensors"]))
        {
            return Self::open_dir(dir);
        }
        let index_path = dir.join("pytorch_model.bin.index.json");
        let mut files: Vec<PathBuf> = if index_path.exists() {
            let text = std::fs::read_to_string(&index_path).map_err(io(&index_path))?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ModelError::Json {
                    path: index_path.clone(),
                    what: "a PyTorch weights index",
                    message: e.to_string(),
                })?;
            let names: BTreeSet<&str> = json["weight_map"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values().filter_map(|v| v.as_str()))
                .collect();
            names.into_iter().map(|n| dir.join(n)).collect()
        } else if dir.join("pytorch_model.bin").is_file() {
            vec![dir.join("pytorch_model.bin")]
        } else {
            listing
                .into_iter()
                .filter(|p| p.is_file() && has_ext(p, &["bin", "pt", "pth"]))
                .collect()
        };
        files.sort();
        if files.is_empty() {
            return Err(ModelError::Safetensors {
                path: dir.into(),
                message: format!(
                    "{what} has no weights: no *.safetensors, pytorch_model.bin, *.bin or *.pt file"
                ),
            });
        }
        Self::open_pytorch_files(dir, &files)
    }

    fn from_shards(origin: &Path, shards: Vec<Shard>, index: BTreeMap<String, usize>) -> Self {
        Self {
            origin: origin.into(),
            shards,
            index,
            used: BTreeSet::new(),
            problems: Vec::new(),
        }
    }

    /// Every tensor name in the checkpoint.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        match &self.shards[*self.index.get(name)?] {
            Shard::Safetensors { metadata, .. } => metadata.info(name).map(|i| i.shape.clone()),
            Shard::Pytorch(file) => file.shape(name),
        }
    }

    /// Takes `name` as f32 values (row-major) if it exists with shape `expected`; otherwise records
    /// the problem and returns `None`.
    pub fn take(&mut self, name: &str, expected: &[usize]) -> Option<Vec<f32>> {
        self.take_as::<f32>(name, expected)
    }

    /// [`WeightStore::take`] decoding straight to `T` (f32, bf16 or f16): one conversion per
    /// value, no intermediate f32 buffer. The tensor's mapped pages are released afterwards.
    pub fn take_as<T: HostFloat>(&mut self, name: &str, expected: &[usize]) -> Option<Vec<T>> {
        let Some(&s) = self.index.get(name) else {
            self.problems.push(WeightProblem::Missing {
                name: name.into(),
                shape: expected.to_vec(),
            });
            return None;
        };
        self.used.insert(name.into());
        let found = self.shape(name)?;
        if found != expected {
            self.problems.push(WeightProblem::Shape {
                name: name.into(),
                expected: expected.to_vec(),
                found,
            });
            return None;
        }
        let (header_len, info, bytes) = match &self.shards[s] {
            Shard::Safetensors {
                bytes,
                header_len,
                metadata,
                ..
            } => (*header_len, metadata.info(name)?, bytes),
            Shard::Pytorch(file) => {
                return match file.values(name) {
                    Ok(values) => Some(values.into_iter().map(T::from_f32).collect()),
                    Err(TakeError::Dtype(dtype)) => {
                        self.problems.push(WeightProblem::Dtype {
                            name: name.into(),
                            dtype,
                        });
                        None
                    }
                    Err(TakeError::Read { expected_bytes }) => {
                        self.problems.push(WeightProblem::Truncated {
                            name: name.into(),
                            bytes: 0,
                            expected: expected_bytes,
                        });
                        None
                    }
                };
            }
        };
        let start = 8 + header_len + info.data_offsets.0;
        let end = 8 + header_len + info.data_offsets.1;
        let values = floats_from_le_as::<T>(info.dtype, &bytes[start..end]);
        // SAFETY: the mapping is read-only and no slice of it outlives this call, so dropping
        // its pages only makes the next read fault them in again from the file.
        let _ =
            unsafe { bytes.unchecked_advise_range(UncheckedAdvice::DontNeed, start, end - start) };
        if values.is_none() {
            self.problems.push(WeightProblem::Dtype {
                name: name.into(),
                dtype: format!("{:?}", info.dtype),
            });
        }
        values
    }

    /// Marks a tensor as deliberately unused (e.g. a tied `lm_head.weight`).
    pub fn skip(&mut self, name: &str) {
        if self.contains(name) {
            self.used.insert(name.into());
        }
    }

    /// Ends loading: an error listing every missing, mis-shaped and unexpected tensor, if any.
    /// Names for which `ignorable` returns true (buffers such as `position_ids`) are not reported.
    pub fn finish(mut self, ignorable: impl Fn(&str) -> bool) -> Result<(), ModelError> {
        let unused: Vec<String> = self
            .index
            .keys()
            .filter(|n| !self.used.contains(*n) && !ignorable(n))
            .cloned()
            .collect();
        self.problems.extend(
            unused
                .into_iter()
                .map(|name| WeightProblem::Unexpected { name }),
        );
        if self.problems.is_empty() {
            Ok(())
        } else {
            Err(ModelError::Weights {
                dir: self.origin,
                problems: self.problems,
            })
        }
    }

    /// Files this store reads.
    pub fn files(&self) -> Vec<&Path> {
        self.shards
            .iter()
            .map(|s| match s {
                Shard::Safetensors { path, .. } => path.as_path(),
                Shard::Pytorch(file) => file.path.as_path(),
            })
            .collect()
    }
}

/// A host float type tensors are decoded into: f32, or bf16/f16 for half-precision weights.
pub trait HostFloat: Copy + burn::tensor::Element {
    /// The value rounded to nearest (f32 → itself).
    fn from_f32(x: f32) -> Self;
}

impl HostFloat for f32 {
    fn from_f32(x: f32) -> Self {
        x
    }
}

impl HostFloat for bf16 {
    fn from_f32(x: f32) -> Self {
        bf16::from_f32(x)
    }
}

impl HostFloat for f16 {
    fn from_f32(x: f32) -> Self {
        f16::from_f32(x)
    }
}

/// Little-endian float bytes of a safetensors tensor widened to f32 (`F32`, `F16`, `BF16`, `F64`);
/// `None` for any other dtype. The one decoder of float tensors read from safetensors files.
pub fn floats_from_le(dtype: Dtype, raw: &[u8]) -> Option<Vec<f32>> {
    floats_from_le_as::<f32>(dtype, raw)
}

/// [`floats_from_le`] into any [`HostFloat`] `T`, each value converted once (through f32, which
/// holds every f16/bf16 value exactly: bf16 → bf16 and f16 → f16 are bit-exact copies; f64 is
/// rounded to f32 first, as f64 PyTorch weights load).
pub fn floats_from_le_as<T: HostFloat>(dtype: Dtype, raw: &[u8]) -> Option<Vec<T>> {
    Some(match dtype {
        Dtype::F32 => raw
            .chunks_exact(4)
            .map(|b| T::from_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        Dtype::F16 => raw
            .chunks_exact(2)
            .map(|b| T::from_f32(f16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        Dtype::BF16 => raw
            .chunks_exact(2)
            .map(|b| T::from_f32(bf16::from_le_bytes([b[0], b[1]]).to_f32()))
            .collect(),
        Dtype::F64 => raw
            .chunks_exact(8)
            .map(|b| T::from_f32(f64::from_le_bytes(b.try_into().expect("8 bytes")) as f32))
            .collect(),
        _ => return None,
    })
}
