//! firempo's own weights file, `model.mpk` (burn's named MessagePack record), checked against a
//! [`VlmConfig`] before it is loaded.
//!
//! burn's `load_record` takes whatever shape the file holds (a `d_ff` or `vocab_size` that differs
//! from the config loads silently, and the model then disagrees with its own config) and panics
//! when a list of layers has another length. So the file is read once for its tensor shapes only
//! (no tensor data is kept), every tensor is compared with the shape the config gives it, and any
//! missing, unexpected or mis-shaped tensor fails the load with one [`ModelError::RecordMismatch`]
//! listing them all. Only a file that matches is then loaded by burn.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder};
use burn::tensor::{backend::Backend, Bool, Int, Tensor};
use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::config::VlmConfig;
use crate::error::{ModelError, WeightProblem};
use crate::vlm::Vlm;

/// Loads `path` (a `model.mpk` written by [`Module::save_file`] with full precision) into a model
/// built from `config`, after checking that every tensor has the shape `config` gives it.
pub fn load_record_file<B: Backend>(
    config: &VlmConfig,
    path: &Path,
    device: &B::Device,
) -> Result<Vlm<B>, ModelError> {
    config.validate()?;
    let found = record_tensor_shapes(path)?;
    let model = config.init::<B>(device);
    let problems = compare_shapes(&param_shapes(&model), &found);
    if !problems.is_empty() {
        return Err(ModelError::RecordMismatch {
            path: path.to_path_buf(),
            problems,
        });
    }
    model
        .load_file(
            path,
            &NamedMpkFileRecorder::<FullPrecisionSettings>::new(),
            device,
        )
        .map_err(|e| ModelError::Record {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
}

/// Shape of every parameter of `module` by dotted path (`decoder.layers.0.mlp.up_proj.base.weight`),
/// read without initializing lazily initialized parameters.
pub fn param_shapes<B: Backend, M: Module<B>>(module: &M) -> BTreeMap<String, Vec<usize>> {
    struct Shapes {
        path: Vec<String>,
        out: BTreeMap<String, Vec<usize>>,
    }
    impl Shapes {
        fn add(&mut self, shape: Vec<usize>) {
            self.out.insert(self.path.join("."), shape);
        }
    }
    impl<B: Backend> ModuleVisitor<B> for Shapes {
        fn enter_module(&mut self, name: &str, _container_type: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container_type: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.add(param.shape().as_slice().to_vec());
        }
        fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
            self.add(param.shape().as_slice().to_vec());
        }
        fn visit_bool<const D: usize>(&mut self, param: &Param<Tensor<B, D, Bool>>) {
            self.add(param.shape().as_slice().to_vec());
        }
    }
    let mut visitor = Shapes {
        path: Vec::new(),
        out: BTreeMap::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

/// One tensor of a record file, without its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordTensor {
    pub shape: Vec<usize>,
    /// burn's dtype name (`F32`, `F16`, …).
    pub dtype: String,
    /// Length of the stored values in bytes.
    pub bytes: usize,
}

/// The tensors of a named MessagePack record file by dotted path (the module path of each
/// parameter), read in one streaming pass that keeps only shapes.
pub fn record_tensor_shapes(path: &Path) -> Result<BTreeMap<String, RecordTensor>, ModelError> {
    let file = File::open(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let not_a_record = |message: String| ModelError::Record {
        path: path.to_path_buf(),
        message,
    };
    let root: Node = rmp_serde::decode::from_read(BufReader::new(file))
        .map_err(|e| not_a_record(format!("not a readable burn record (truncated?): {e}")))?;
    let Node::Map(entries) = root else {
        return Err(not_a_record("not a burn record (no top-level map)".into()));
    };
    let item = entries
        .into_iter()
        .find_map(|(key, node)| (key == "item").then_some(node))
        .ok_or_else(|| not_a_record("not a burn record (no `item`)".into()))?;
    let mut out = BTreeMap::new();
    collect_tensors(item, &mut Vec::new(), &mut out);
    Ok(out)
}

/// Bytes per element of a float dtype burn can load into f32; `None` for others.
fn element_bytes(dtype: &str) -> Option<usize> {
    match dtype {
        "F64" => Some(8),
        "F32" | "Flex32" => Some(4),
        "F16" | "BF16" => Some(2),
        _ => None,
    }
}

/// Every way the file's tensors differ from the model's parameters, in name order.
pub fn compare_shapes(
    expected: &BTreeMap<String, Vec<usize>>,
    found: &BTreeMap<String, RecordTensor>,
) -> Vec<WeightProblem> {
    let mut problems = Vec::new();
    for (name, shape) in expected {
        let Some(tensor) = found.get(name) else {
            problems.push(WeightProblem::Missing {
                name: name.clone(),
                shape: shape.clone(),
            });
            continue;
        };
        if &tensor.shape != shape {
            problems.push(WeightProblem::Shape {
                name: name.clone(),
                expected: shape.clone(),
                found: tensor.shape.clone(),
            });
            continue;
        }
        let Some(size) = element_bytes(&tensor.dtype) else {
            problems.push(WeightProblem::Dtype {
                name: name.clone(),
                dtype: tensor.dtype.clone(),
            });
            continue;
        };
        let expected_bytes = shape
            .iter()
            .try_fold(size, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX);
        if tensor.bytes != expected_bytes {
            problems.push(WeightProblem::Truncated {
                name: name.clone(),
                bytes: tensor.bytes,
                expected: expected_bytes,
            });
        }
    }
    for name in found.keys().filter(|name| !expected.contains_key(*name)) {
        problems.push(WeightProblem::Unexpected { name: name.clone() });
    }
    problems
}

/// The structure of a MessagePack document with the payload of byte strings dropped.
enum Node {
    Map(Vec<(String, Node)>),
    Seq(Vec<Node>),
    Uint(u64),
    Str(String),
    Bytes(usize),
    Other,
}

fn collect_tensors(node: Node, path: &mut Vec<String>, out: &mut BTreeMap<String, RecordTensor>) {
    match node {
        Node::Map(entries) => {
            if let Some(tensor) = as_tensor(&entries) {
                // A parameter is `{id, param: TensorData}`: name it by its module path.
                if path.last().is_some_and(|last| last == "param") {
                    path.pop();
                    out.insert(path.join("."), tensor);
                    path.push("param".into());
                } else {
                    out.insert(path.join("."), tensor);
                }
                return;
            }
            for (key, child) in entries {
                path.push(key);
                collect_tensors(child, path, out);
                path.pop();
            }
        }
        Node::Seq(items) => {
            for (index, child) in items.into_iter().enumerate() {
                path.push(index.to_string());
                collect_tensors(child, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

/// `TensorData` serializes as `{bytes, shape, dtype}`.
fn as_tensor(entries: &[(String, Node)]) -> Option<RecordTensor> {
    let get = |name: &str| entries.iter().find(|(k, _)| k == name).map(|(_, v)| v);
    let (Some(Node::Bytes(bytes)), Some(Node::Seq(dims)), Some(dtype)) =
        (get("bytes"), get("shape"), get("dtype"))
    else {
        return None;
    };
    let shape = dims
        .iter()
        .map(|d| match d {
            Node::Uint(v) => usize::try_from(*v).ok(),
            _ => None,
        })
        .collect::<Option<Vec<usize>>>()?;
    let dtype = match dtype {
        Node::Str(name) => name.clone(),
        Node::Map(entries) => entries
            .first()
            .map_or_else(|| "unknown".into(), |(k, _)| k.clone()),
        _ => "unknown".into(),
    };
    Some(RecordTensor {
        shape,
        dtype,
        bytes: *bytes,
    })
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any MessagePack value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node, E> {
        Ok(u64::try_from(v).map_or(Node::Other, Node::Uint))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Uint(v))
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node, E> {
        Ok(Node::Str(v.to_string()))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Node, E> {
        Ok(Node::Bytes(v.len()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Other)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Node, D::Error> {
        Node::deserialize(deserializer)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((key, value)) = map.next_entry::<Node, Node>()? {
            let key = match key {
                Node::Str(key) => key,
                Node::Uint(index) => index.to_string(),
                _ => String::from("?"),
            };
            entries.push((key, value));
        }
        Ok(Node::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("firempo-record-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn record_paths_match_module_paths_and_a_saved_model_reloads() {
        let device = Default::default();
        let config = VlmConfig::tiny();
        let model = config.init::<B>(&device);
        let w = |m: &Vlm<B>| m.decoder.embed_tokens.weight.val().into_data();
        let saved = w(&model); // initializes the lazy parameter before the clone saves it
        let dir = temp_dir("roundtrip");
        let path = dir.join("model.mpk");
        model
            .clone()
            .save_file(&path, &NamedMpkFileRecorder::<FullPrecisionSettings>::new())
            .unwrap();
        let expected = param_shapes(&model);
        assert!(expected.contains_key("decoder.layers.1.mlp.down_proj.base.weight"));
        assert_eq!(expected["decoder.embed_tokens.weight"], vec![256, 64]);
        let found = record_tensor_shapes(&path).unwrap();
        assert_eq!(
            found.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>()
        );
        assert!(compare_shapes(&expected, &found).is_empty());
        let loaded = load_record_file::<B>(&config, &path, &device).unwrap();
        assert_eq!(w(&loaded), saved);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn every_mismatch_is_listed_once() {
        let device = Default::default();
        let saved = VlmConfig::tiny();
        let dir = temp_dir("mismatch");
        let path = dir.join("model.mpk");
        saved
            .init::<B>(&device)
            .save_file(&path, &NamedMpkFileRecorder::<FullPrecisionSettings>::new())
            .unwrap();
        let mut config = saved.clone();
        config.text.d_ff = 96; // gate, up, down of both layers
        config.text.n_layers = 3; // layer 2 missing
        let err = load_record_file::<B>(&config, &path, &device)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "`decoder.layers.0.mlp.up_proj.base.weight` has shape [64, 128], expected [64, 96]"
            ),
            "{err}"
        );
        assert!(
            err.contains("missing `decoder.layers.2.self_attn.q_proj.base.weight`"),
            "{err}"
        );
        // 2 layers × 3 MLP weights mis-shaped, 9 tensors of layer 2 missing.
        let ModelError::RecordMismatch { problems, .. } =
            load_record_file::<B>(&config, &path, &device).unwrap_err()
        else {
            panic!("expected a record mismatch");
        };
        let shapes = problems
            .iter()
            .filter(|p| matches!(p, WeightProblem::Shape { .. }))
            .count();
        let missing = problems
            .iter()
            .filter(|p| matches!(p, WeightProblem::Missing { .. }))
            .count();
        assert_eq!((shapes, missing, problems.len()), (6, 9, 15));

        // Fewer layers in the config than in the file: the extra ones are unexpected.
        let mut config = saved.clone();
        config.text.n_layers = 1;
        let ModelError::RecordMismatch { problems, .. } =
            load_record_file::<B>(&config, &path, &device).unwrap_err()
        else {
            panic!("expected a record mismatch");
        };
        assert_eq!(problems.len(), 9, "{problems:?}");
        assert!(problems
            .iter()
            .all(|p| matches!(p, WeightProblem::Unexpected { name } if name.starts_with("decoder.layers.1."))));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn truncated_and_foreign_files_are_errors() {
        let device = Default::default();
        let config = VlmConfig::tiny();
        let dir = temp_dir("truncated");
        let path = dir.join("model.mpk");
        config
            .init::<B>(&device)
            .save_file(&path, &NamedMpkFileRecorder::<FullPrecisionSettings>::new())
            .unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let err = load_record_file::<B>(&config, &path, &device).unwrap_err();
        assert!(matches!(err, ModelError::Record { .. }), "{err}");
        assert!(err.to_string().contains("model.mpk"), "{err}");
        std::fs::write(&path, b"not messagepack at all").unwrap();
        let err = load_record_file::<B>(&config, &path, &device).unwrap_err();
        assert!(matches!(err, ModelError::Record { .. }), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
