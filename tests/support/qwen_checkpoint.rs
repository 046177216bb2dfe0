//! The tiny Qwen-VL checkpoint directories the Qwen-VL tests of several test binaries run on: the
//! models crate's parity fixtures (`models/tests/fixtures/make_qwen_vl_fixtures.py`: Qwen2-VL in
//! the Hub layout, Qwen2.5-VL with window and full vision blocks and Qwen3-VL with DeepStack in
//! the `save_pretrained` layout), a tokenizer holding Qwen-VL's vision tokens
//! (`make_qwen_vl_tokenizer.py`) and Qwen2-VL's chat template.

use std::path::{Path, PathBuf};

/// Writes the Qwen2.5-VL checkpoint into `dir/qwen2_5_vl` and returns that path.
pub fn qwen_checkpoint(dir: &Path) -> PathBuf {
    qwen_checkpoint_of(dir, "qwen2_5_vl")
}

/// Writes the checkpoint of fixture `family` (`qwen2_vl`, `qwen2_5_vl`, `qwen3_vl`) into
/// `dir/family` and returns that path.
pub fn qwen_checkpoint_of(dir: &Path, family: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixtures = root.join("models/tests/fixtures");
    let out = dir.join(family);
    std::fs::create_dir_all(&out).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(fixtures.join(family).join(file), out.join(file)).unwrap();
    }
    std::fs::copy(
        fixtures.join("qwen_vl_tokenizer.json"),
        out.join("tokenizer.json"),
    )
    .unwrap();
    std::fs::copy(
        root.join("models/src/templates/qwen-vl.jinja"),
        out.join("chat_template.jinja"),
    )
    .unwrap();
    out
}
