//! Bad checkpoints fail with one clear error naming the file and every problem, never a panic.

use crate::common;

use std::path::{Path, PathBuf};

use common::{fixture, B};
use firempo_models::{load_pretrained, ModelError, WeightProblem};
use safetensors::tensor::{SafeTensors, TensorView};

/// A scratch copy of the LLaVA-LLaMA fixture's config and preprocessor files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("llava_llama/config.json"), dir.join("config.json")).unwrap();
    dir
}

fn load(dir: &Path) -> ModelError {
    let err = load_pretrained::<B>(dir, &Default::default()).unwrap_err();
    std::fs::remove_dir_all(dir).unwrap();
    err
}

#[test]
fn missing_unexpected_and_misshaped_tensors_are_reported_together() {
    let dir = scratch("bad-weights");
    let bytes = std::fs::read(fixture("llava_llama/model.safetensors")).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let q = "language_model.model.layers.0.self_attn.q_proj.weight";
    let q_data = st.tensor(q).unwrap().data().to_vec();
    let mut tensors: Vec<(String, TensorView)> = Vec::new();
    for (name, view) in st.tensors() {
        match name.as_str() {
            "language_model.model.norm.weight" => {}
            "language_model.lm_head.weight" => {
                tensors.push(("language_model.lm_head.extra".into(), view))
            }
            n if n == q => {
                let v = TensorView::new(view.dtype(), vec![16, 64], &q_data).unwrap();
                tensors.push((name, v));
            }
            _ => tensors.push((name, view)),
        }
    }
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).unwrap();
    let err = load(&dir);
    let ModelError::Weights { problems, .. } = &err else {
        panic!("expected a weights error, got {err}");
    };
    let text = err.to_string();
    assert_eq!(problems.len(), 4, "{text}");
    assert!(problems.contains(&WeightProblem::Missing {
        name: "language_model.model.norm.weight".into(),
        shape: vec![32]
    }));
    assert!(problems.contains(&WeightProblem::Shape {
        name: q.into(),
        expected: vec![32, 32],
        found: vec![16, 64]
    }));
    assert!(
        text.contains("missing `language_model.lm_head.weight`"),
        "{text}"
    );
    assert!(
        text.contains("unexpected `language_model.lm_head.extra`"),
        "{text}"
    );
}

#[test]
fn truncated_file_names_the_file() {
    let dir = scratch("truncated");
    let bytes = std::fs::read(fixture("llava_llama/model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    let err = load(&dir).to_string();
    assert!(
        err.contains("model.safetensors") && err.contains("truncated"),
        "{err}"
    );
}

#[test]
fn unknown_architecture_and_missing_config_are_clear() {
    let dir = scratch("arch");
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        text.replace("LlavaForConditionalGeneration", "BlipForQuestionAnswering"),
    )
    .unwrap();
    let err = load(&dir).to_string();
    assert!(
        err.contains("BlipForQuestionAnswering") && err.contains("config.json"),
        "{err}"
    );
    let err = load_pretrained::<B>(Path::new("/nonexistent/ckpt"), &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("/nonexistent/ckpt/config.json"), "{err}");
}
