//! `firempo forward` on the models crate's fixtures: transformers' logits of llava-hf, original-LLaVA
//! (`-200` ids), Qwen2-VL and Qwen2.5-VL checkpoints and PEFT's logits with an rsLoRA adapter are
//! reproduced from the processor's tensors alone, and an existing `--out` is never overwritten
//! without `--overwrite`.

use std::path::{Path, PathBuf};

use clap::Parser;
use firempo::cli::{run, Cli};
use firempo::pipeline::tensor_file::{HostTensor, TensorFile};
use safetensors::tensor::{Dtype, TensorView};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-forward-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn forward(args: &[&str]) -> anyhow::Result<()> {
    run(Cli::try_parse_from(
        ["firempo", "forward"].iter().chain(args),
    )?)
}

fn logits(path: &Path) -> HostTensor<f32> {
    TensorFile::open(path)
        .unwrap()
        .required_floats("logits")
        .unwrap()
}

#[test]
fn forward_reproduces_transformers_and_peft_logits() {
    // Loading initializes the model randomly before the weights overwrite it: that draws from
    // burn's process-wide RNG, which the demo and training tests of this binary need alone.
    let _serial = crate::common::exclusive();
    let dir = scratch("parity");
    let f = fixtures();
    let (model, peft) = (f.join("llava_llama"), f.join("peft"));
    let expected = model.join("expected.safetensors");
    let out = dir.join("logits.safetensors");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    forward(&[
        "--model",
        &s(&model),
        "--inputs",
        &s(&expected),
        "--out",
        &s(&out),
        "--compare",
        &s(&expected),
    ])
    .unwrap();
    // Row 0 has no padding: every one of its logits is transformers'.
    let (got, want) = (logits(&out), logits(&expected));
    assert_eq!(got.shape, [2, 24, 128]);
    let row0 = 24 * 128;
    let worst = got.values[..row0]
        .iter()
        .zip(&want.values[..row0])
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-4, "{worst:e}");

    // An existing output is refused, then replaced only when asked.
    let err = forward(&[
        "--model",
        &s(&model),
        "--inputs",
        &s(&expected),
        "--out",
        &s(&out),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--overwrite") && err.contains("exists"),
        "{err}"
    );

    // With the adapter, the base model's logits are no longer within tolerance: PEFT's are.
    let peft_expected = peft.join("expected.safetensors");
    let adapter = peft.join("rslora");
    let err = forward(&[
        "--model",
        &s(&model),
        "--inputs",
        &s(&peft_expected),
        "--out",
        &s(&out),
        "--overwrite",
        "--compare",
        &s(&peft_expected),
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("above --tolerance"), "{err}");
    forward(&[
        "--model",
        &s(&model),
        "--adapter",
        &s(&adapter),
        "--inputs",
        &s(&peft_expected),
        "--out",
        &s(&out),
        "--overwrite",
        "--compare",
        &s(&peft_expected),
    ])
    .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forward_names_a_missing_input_tensor() {
    let _serial = crate::common::exclusive();
    let dir = scratch("inputs");
    let model = fixtures().join("llava_llama");
    // The adapter's weights are a safetensors file without `input_ids`.
    let inputs = fixtures().join("peft/rslora/adapter_model.safetensors");
    let out = dir.join("logits.safetensors");
    let err = forward(&[
        "--model",
        model.to_str().unwrap(),
        "--inputs",
        inputs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ])
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("no tensor `input_ids`") && err.contains("adapter_model.safetensors"),
        "{err}"
    );
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forward_reproduces_transformers_on_qwen_vl_checkpoints() {
    let _serial = crate::common::exclusive();
    let dir = scratch("qwen");
    let out = dir.join("logits.safetensors");
    // Two prompts of different lengths (left padding), two non-square images of different grids;
    // Qwen2-VL in the Hub layout, Qwen2.5-VL (window and full blocks) as transformers 5 saves it,
    // Qwen3-VL with DeepStack and interpolated position embeddings.
    for family in ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"] {
        let model = fixtures().join(family);
        let expected = model.join("expected.safetensors");
        let (m, e) = (model.to_str().unwrap(), expected.to_str().unwrap());
        let o = out.to_str().unwrap();
        forward(&[
            "--model",
            m,
            "--inputs",
            e,
            "--out",
            o,
            "--overwrite",
            "--compare",
            e,
        ])
        .unwrap_or_else(|err| panic!("{family}: {err:#}"));
        assert_eq!(logits(&out).shape[2], 128, "{family}");
    }
    // PEFT rsLoRA adapters on the decoder (made by make_qwen_vl_peft_fixtures.py): PEFT's logits
    // on the same inputs; an adapter on the vision tower is refused by name.
    for family in ["qwen2_5_vl", "qwen3_vl"] {
        let model = fixtures().join(family);
        let inputs = model.join("expected.safetensors");
        let peft = fixtures().join("qwen_vl_peft").join(family);
        let peft_logits = peft.join("expected.safetensors");
        let run = |adapter: &str| {
            forward(&[
                "--model",
                model.to_str().unwrap(),
                "--adapter",
                peft.join(adapter).to_str().unwrap(),
                "--inputs",
                inputs.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--overwrite",
                "--compare",
                peft_logits.to_str().unwrap(),
            ])
        };
        run("rslora").unwrap_or_else(|err| panic!("{family} + adapter: {err:#}"));
        let err = format!("{:#}", run("vision").unwrap_err());
        assert!(err.contains("visual"), "{family}: {err}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forward_reads_original_llava_ids_with_image_placeholders() {
    let _serial = crate::common::exclusive();
    let dir = scratch("original");
    let f = fixtures();
    // The original-layout checkpoint is the llava-hf fixture renamed: from its `-200` ids (one
    // placeholder per image, a left-padded row) it must give the llava-hf fixture's logits.
    let ids = TensorFile::open(&f.join("llava_original/inputs.safetensors")).unwrap();
    let hf = TensorFile::open(&f.join("llava_llama/expected.safetensors")).unwrap();
    let input_ids = ids.required_ints("input_ids").unwrap();
    assert!(input_ids.values.contains(&-200));
    let mask = ids.required_ints("attention_mask").unwrap();
    let pixels = hf.required_floats("pixel_values").unwrap();
    let reference = hf.required_floats("logits").unwrap();
    let bytes = |t: &HostTensor<i64>| -> Vec<u8> {
        t.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    let floats = |t: &HostTensor<f32>| -> Vec<u8> {
        t.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    };
    let (ib, mb, pb, lb) = (
        bytes(&input_ids),
        bytes(&mask),
        floats(&pixels),
        floats(&reference),
    );
    let view = |dtype, shape: &[usize], data| TensorView::new(dtype, shape.to_vec(), data).unwrap();
    let inputs = dir.join("inputs.safetensors");
    safetensors::serialize_to_file(
        [
            ("input_ids", view(Dtype::I64, &input_ids.shape, &ib)),
            ("attention_mask", view(Dtype::I64, &mask.shape, &mb)),
            ("pixel_values", view(Dtype::F32, &pixels.shape, &pb)),
            ("logits", view(Dtype::F32, &reference.shape, &lb)),
        ],
        None,
        &inputs,
    )
    .unwrap();
    let out = dir.join("logits.safetensors");
    let (m, i, o) = (
        f.join("llava_original"),
        inputs.to_str().unwrap().to_string(),
        out.to_str().unwrap().to_string(),
    );
    forward(&[
        "--model",
        m.to_str().unwrap(),
        "--inputs",
        &i,
        "--out",
        &o,
        "--compare",
        &i,
    ])
    .unwrap();
    // Logits are in the expanded layout: 16 image positions per placeholder.
    assert_eq!(logits(&out).shape, reference.shape);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forward_dtype_bf16_tracks_f32_logits_on_flex_and_is_refused_on_ndarray() {
    let _serial = crate::common::exclusive();
    let dir = scratch("dtype");
    let model = fixtures().join("llava_llama");
    let expected = model.join("expected.safetensors");
    let out = dir.join("logits.safetensors");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let args = |backend: &str, tolerance: &str| -> Vec<String> {
        let (model, expected, out) = (s(&model), s(&expected), s(&out));
        [
            "--model",
            model.as_str(),
            "--inputs",
            expected.as_str(),
            "--out",
            out.as_str(),
            "--overwrite",
            "--compare",
            expected.as_str(),
            "--dtype",
            "bf16",
            "--backend",
            backend,
            "--tolerance",
            tolerance,
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let run_args = |a: &[String]| forward(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // ndarray has no bf16: a clear error naming the fix, not a silent f32 run.
    let err = run_args(&args("ndarray", "1e-2")).unwrap_err().to_string();
    assert!(
        err.contains("ndarray") && err.contains("bf16") && err.contains("--backend flex"),
        "{err}"
    );
    assert!(!out.exists(), "nothing written");
    // flex: bf16 moves llava_llama's logits (max |logit| 1.14) by 4.5e-3 from transformers'
    // f32 ones (models/tests/suite/precision.rs): within 1e-2, not within the f32 default 1e-4.
    // Without the `flex` feature (or before `--backend flex` exists) the flex half is skipped.
    let unavailable = |e: &anyhow::Error| {
        let msg = e.to_string();
        msg.contains("built without") || msg.contains("invalid value 'flex'")
    };
    match run_args(&args("flex", "1e-2")) {
        Err(e) if unavailable(&e) => eprintln!("skipped on flex: {e}"),
        result => {
            result.unwrap();
            let (got, want) = (logits(&out), logits(&expected));
            let row0 = 24 * 128;
            let worst = got.values[..row0]
                .iter()
                .zip(&want.values[..row0])
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(worst > 1e-4 && worst < 1e-2, "bf16 vs f32 logits {worst:e}");
            let err = run_args(&args("flex", "1e-4")).unwrap_err().to_string();
            assert!(err.contains("above --tolerance"), "{err}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
