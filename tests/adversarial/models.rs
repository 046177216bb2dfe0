//! Model directories and model inputs: a `model.json` that does not describe `model.mpk`, absurd
//! LoRA and preprocessing sizes, questions longer than the context, a NaN model, per-record
//! corruption with missing masks, and `finding_f1` without a declared vocabulary (issue 9, items
//! 4, 6, 8, 10 and 14).

use std::fs;
use std::path::Path;
use std::time::Duration;

use firempo_datasets::corrupted_file_name;
use serde_json::Value;

use crate::common::{firempo, tiny_synth, Run, Scratch};

const LIMIT: Duration = Duration::from_secs(120);

/// A scratch folder with the tiny synthetic dataset (`synth/`) and a one-step SFT model
/// (`model/`).
fn with_model(name: &str) -> Scratch {
    let scratch = Scratch::new(name);
    tiny_synth(&scratch.0);
    firempo(
        &scratch.0,
        &[
            "sft",
            "--records",
            "synth/train.jsonl",
            "--out",
            "model",
            "--steps",
            "1",
            "--batch",
            "2",
            "--warmup",
            "0",
        ],
        LIMIT,
    )
    .assert_success(&[]);
    scratch
}

/// Copies `model/` to `name/` and applies `edit` to one of its JSON files.
fn edited_model(scratch: &Scratch, name: &str, file: &str, edit: impl FnOnce(&mut Value)) {
    let dir = scratch.join(name);
    fs::create_dir_all(&dir).unwrap();
    for entry in [
        "model.json",
        "model.mpk",
        "tokenizer.json",
        "processor.json",
    ] {
        fs::copy(scratch.join("model").join(entry), dir.join(entry)).unwrap();
    }
    let path = dir.join(file);
    let mut value: Value = serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut value);
    fs::write(&path, serde_json::to_string_pretty(&value).unwrap()).unwrap();
}

fn eval(cwd: &Path, records: &str, model: &str, extra: &[&str]) -> Run {
    let mut args = vec![
        "eval",
        "--records",
        records,
        "--model",
        model,
        "--out",
        "eval",
    ];
    if !extra.contains(&"--max-new-tokens") {
        args.extend(["--max-new-tokens", "4"]);
    }
    args.extend_from_slice(extra);
    firempo(cwd, &args, LIMIT)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap()
}

/// Item 6: each `model.json` edit that disagrees with `model.mpk` used to panic (rc 101) or load
/// silently; now every one is a clean error listing each mis-shaped or missing tensor.
#[test]
fn model_json_that_does_not_match_the_weights_is_refused_with_every_mismatch() {
    let scratch = with_model("model-json-mismatch");
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &[&str]); 8] = [
        (
            "n_heads",
            |c| c["text"]["n_heads"] = 2.into(),
            &["self_attn.q_proj.base.weight` has shape [64, 64], expected [64, 32]"],
        ),
        (
            "head_dim",
            |c| c["text"]["head_dim"] = 8.into(),
            &["self_attn.k_proj.base.weight` has shape [64, 32], expected [64, 16]"],
        ),
        (
            "n_kv_heads",
            |c| c["text"]["n_kv_heads"] = 1.into(),
            &["self_attn.v_proj.base.weight` has shape [64, 32], expected [64, 16]"],
        ),
        (
            "n_layers",
            |c| c["text"]["n_layers"] = 3.into(),
            &["missing `decoder.layers.2.mlp.up_proj.base.weight`"],
        ),
        (
            "patch_size",
            |c| c["vision"]["patch_size"] = 8.into(),
            &["`vision.position_embedding` has shape [17, 64], expected [65, 64]"],
        ),
        (
            "d_ff",
            |c| c["text"]["d_ff"] = 96.into(),
            &[
                "6 problem(s)",
                "decoder.layers.1.mlp.down_proj.base.weight` has shape [128, 64], expected [96, 64]",
            ],
        ),
        (
            "vision_d_model",
            |c| c["vision"]["d_model"] = 32.into(),
            &["`vision.patch_embedding.weight` has shape [256, 64], expected [256, 32]"],
        ),
        (
            "vocab_size",
            |c| {
                let v = c["text"]["vocab_size"].as_u64().unwrap();
                c["text"]["vocab_size"] = (v + 5).into();
            },
            &["`decoder.embed_tokens.weight` has shape"],
        ),
    ];
    for (name, edit, needles) in cases {
        edited_model(&scratch, name, "model.json", edit);
        let run = eval(&scratch.0, "synth/test.jsonl", name, &["--limit", "1"]);
        let mut all = vec!["model.json", "model.mpk", "do not match", "fix:"];
        all.extend_from_slice(needles);
        run.assert_clean_error(&all);
    }
}

/// Item 6: a truncated `model.mpk` is an error naming the file, not a panic.
#[test]
fn a_truncated_weights_file_is_an_error() {
    let scratch = with_model("model-mpk-truncated");
    edited_model(&scratch, "cut", "model.json", |_| {});
    let mpk = scratch.join("cut/model.mpk");
    let bytes = fs::read(&mpk).unwrap();
    fs::write(&mpk, &bytes[..bytes.len() / 3]).unwrap();
    eval(&scratch.0, "synth/test.jsonl", "cut", &["--limit", "1"])
        .assert_clean_error(&["cut/model.mpk", "not a readable burn record"]);
}

/// Item 4: LoRA ranks above the adapted layers' width (which used to allocate adapters of that
/// rank) and absurd alphas are refused with the bound.
#[test]
fn absurd_lora_rank_and_alpha_are_refused() {
    let scratch = with_model("lora-rank");
    let sft = |extra: &[&str]| {
        let mut args = vec![
            "sft",
            "--records",
            "synth/train.jsonl",
            "--model",
            "model",
            "--out",
            "lora",
            "--steps",
            "1",
            "--batch",
            "2",
        ];
        args.extend_from_slice(extra);
        firempo(&scratch.0, &args, LIMIT)
    };
    // The demo model's k_proj and v_proj map 64 → 32.
    sft(&["--lora-rank", "100000"]).assert_clean_error(&["lora.rank", "100000", "≤ 32"]);
    sft(&["--lora-rank", "4", "--lora-alpha", "1e9"]).assert_clean_error(&["lora.alpha"]);
}

/// Item 4: `processor.json` sizes that would exhaust memory (or give the vision tower images of
/// the wrong size, which panicked in the patch reshape) are refused naming file and field.
#[test]
fn processor_json_sizes_are_bounded_and_must_fit_the_vision_tower() {
    let scratch = with_model("processor-sizes");
    type Edit = fn(&mut Value);
    let cases: [(&str, Edit, &[&str]); 3] = [
        (
            "crop",
            |p| p["preprocess"]["center_crop"] = serde_json::json!([100000, 100000]),
            &["preprocess.center_crop", "100000×100000", "64×64"],
        ),
        (
            "resize",
            |p| p["preprocess"]["resize"] = serde_json::json!({"square": {"size": 60000}}),
            &["preprocess.resize.size", "60000", "4096"],
        ),
        (
            "shortest",
            |p| p["preprocess"]["resize"] = serde_json::json!({"shortest_edge": {"size": 64}}),
            &["preprocess.resize", "own size or aspect ratio"],
        ),
    ];
    for (name, edit, needles) in cases {
        edited_model(&scratch, name, "processor.json", edit);
        let run = eval(&scratch.0, "synth/test.jsonl", name, &["--limit", "1"]);
        let mut all = vec!["processor.json"];
        all.extend_from_slice(needles);
        run.assert_clean_error(&all);
    }
}

/// Writes `synth/NAME.jsonl`: the first test records, `edit` applied to each.
fn edited_records(scratch: &Scratch, name: &str, n: usize, edit: impl Fn(usize, &mut Value)) {
    let text = fs::read_to_string(scratch.join("synth/test.jsonl")).unwrap();
    let mut out = String::new();
    for (i, line) in text.lines().take(n).enumerate() {
        let mut record: Value = serde_json::from_str(line).unwrap();
        edit(i, &mut record);
        out.push_str(&serde_json::to_string(&record).unwrap());
        out.push('\n');
    }
    fs::write(scratch.join(&format!("synth/{name}.jsonl")), out).unwrap();
}

/// Item 10: a question longer than the model's context (512 positions for the demo model) is
/// refused naming the record and the lengths, in sample and eval (they build prompts through the
/// processor, as sft and align do).
#[test]
fn a_question_longer_than_the_context_is_refused() {
    let scratch = with_model("long-question");
    edited_records(&scratch, "long", 2, |i, r| {
        if i == 1 {
            r["id"] = "the-long-one".into();
            r["question"] = "is there a lesion ".repeat(200).into();
        }
    });
    let needles = ["record `the-long-one`", "context is 512 tokens", "shorten"];
    eval(&scratch.0, "synth/long.jsonl", "model", &[]).assert_clean_error(&needles);
    firempo(
        &scratch.0,
        &[
            "sample",
            "--records",
            "synth/long.jsonl",
            "--model",
            "model",
            "--out",
            "samples.jsonl",
        ],
        LIMIT,
    )
    .assert_clean_error(&needles);
    // sft builds its examples through the same processor (align too: `align_examples`).
    firempo(
        &scratch.0,
        &[
            "sft",
            "--records",
            "synth/long.jsonl",
            "--model",
            "model",
            "--out",
            "sft-long",
            "--steps",
            "1",
        ],
        LIMIT,
    )
    .assert_clean_error(&needles);
    // A prompt that fits only without the generated tokens: the fix names --max-new-tokens.
    eval(
        &scratch.0,
        "synth/test.jsonl",
        "model",
        &["--limit", "1", "--max-new-tokens", "600"],
    )
    .assert_clean_error(&["and the answer (600", "--max-new-tokens"]);
}

/// Overwrites every float of `model.mpk`'s first tensor payload with NaN: burn's named
/// MessagePack stores each tensor's values as one `bin` blob after a `bytes` key.
fn poison_weights(mpk: &Path) {
    let mut bytes = fs::read(mpk).unwrap();
    let key = b"\xa5bytes";
    let mut at = 0;
    let mut poisoned = 0;
    while let Some(pos) = bytes[at..].windows(key.len()).position(|w| w == key) {
        let start = at + pos + key.len();
        let (len, header) = match bytes[start] {
            0xc4 => (bytes[start + 1] as usize, 2),
            0xc5 => (
                u16::from_be_bytes([bytes[start + 1], bytes[start + 2]]) as usize,
                3,
            ),
            0xc6 => (
                u32::from_be_bytes(bytes[start + 1..start + 5].try_into().unwrap()) as usize,
                5,
            ),
            _ => panic!("unexpected msgpack after `bytes`"),
        };
        let data = start + header;
        for chunk in bytes[data..data + len].chunks_exact_mut(4) {
            chunk.copy_from_slice(&f32::NAN.to_le_bytes());
        }
        poisoned += 1;
        at = data + len;
    }
    assert!(poisoned > 10, "found {poisoned} tensors");
    fs::write(mpk, bytes).unwrap();
}

/// Item 10: a model whose weights are NaN used to be evaluated (to `finding_f1 100`); now eval
/// refuses it naming the record.
#[test]
fn a_nan_model_is_refused_by_eval() {
    let scratch = with_model("nan-model");
    edited_model(&scratch, "nan", "model.json", |_| {});
    poison_weights(&scratch.join("nan/model.mpk"));
    eval(&scratch.0, "synth/test.jsonl", "nan", &["--limit", "2"]).assert_clean_error(&[
        "record `synth-test-",
        "not finite",
        "NaN",
    ]);
    assert!(!scratch.join("eval/eval.json").exists());
}

/// Item 8: two questions about one image with different masks get different corrupted images
/// (one per record, named by record), and a record whose mask file is missing stops eval,
/// naming the record, its line and the mask path, even when another record of the same image
/// has its mask.
#[test]
fn eval_corrupts_per_record_and_refuses_a_missing_mask() {
    let scratch = with_model("per-record-masks");
    // Two questions about one lesion image: the second about another organ, whose mask is
    // empty (no lesion there to corrupt).
    let text = fs::read_to_string(scratch.join("synth/test.jsonl")).unwrap();
    let source: Value = text
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .find(|r| {
            r["mask"].is_object()
                && r["meta"]["lesions"]
                    .as_array()
                    .is_some_and(|l| !l.is_empty())
        })
        .expect("a test record with a lesion mask");
    let image = scratch
        .join("synth")
        .join(source["image"].as_str().unwrap());
    let (w, h) = image::image_dimensions(&image).unwrap();
    image::GrayImage::new(w, h)
        .save(scratch.join("synth/masks/empty.png"))
        .unwrap();
    let mut lines = String::new();
    for (id, mask) in [
        ("q-lesion", None),
        ("q-other-organ", Some("masks/empty.png")),
    ] {
        let mut record = source.clone();
        record["id"] = id.into();
        if let Some(mask) = mask {
            record["mask"] = serde_json::json!({"kind": "png", "path": mask});
        }
        lines.push_str(&serde_json::to_string(&record).unwrap());
        lines.push('\n');
    }
    fs::write(scratch.join("synth/two.jsonl"), &lines).unwrap();
    eval(&scratch.0, "synth/two.jsonl", "model", &[]).assert_success(&[]);
    let corrupted =
        |id: &str| fs::read(scratch.join("eval/corrupted").join(corrupted_file_name(id))).unwrap();
    let (a, b) = (corrupted("q-lesion"), corrupted("q-other-organ"));
    assert_ne!(a, b, "each record needs its own corruption");

    // The second record's mask is missing: an error, not rc 0 with the first record's image.
    let mut broken = String::from("\n"); // a blank first line: the record sits on line 3
    broken.push_str(&lines.replace("masks/empty.png", "masks/gone.png"));
    fs::write(scratch.join("synth/broken.jsonl"), broken).unwrap();
    eval(&scratch.0, "synth/broken.jsonl", "model", &[]).assert_clean_error(&[
        "broken.jsonl:3",
        "record `q-other-organ`",
        "mask.path",
        "masks/gone.png",
        "nothing was evaluated",
    ]);
}

/// Item 14: `finding_f1` is computed only with a declared vocabulary (the synthetic data declares
/// it through `synth.json`; other reports need --finding-vocabulary), and eval.json says which
/// metrics `avg` averages.
#[test]
fn finding_f1_needs_a_declared_vocabulary_and_avg_says_what_it_averages() {
    let scratch = with_model("finding-vocabulary");
    // Report records only, in a folder without synth.json (e.g. converted IU-Xray).
    let text = fs::read_to_string(scratch.join("synth/test.jsonl")).unwrap();
    let mut reports = String::new();
    for line in text.lines() {
        let mut record: Value = serde_json::from_str(line).unwrap();
        if record["answer_type"] == "report" {
            let image = record["image"].as_str().unwrap().to_string();
            record["image"] = scratch
                .join("synth")
                .join(image)
                .display()
                .to_string()
                .into();
            reports.push_str(&serde_json::to_string(&record).unwrap());
            reports.push('\n');
        }
    }
    assert!(!reports.is_empty(), "the synthetic test split has reports");
    fs::create_dir_all(scratch.join("other")).unwrap();
    fs::write(scratch.join("other/reports.jsonl"), &reports).unwrap();

    let run = eval(&scratch.0, "other/reports.jsonl", "model", &[]);
    run.assert_success(&["finding_f1 not computed", "--finding-vocabulary"]);
    let report = read_json(&scratch.join("eval/eval.json"));
    assert!(report["metrics"].get("finding_f1").is_none(), "{report}");
    assert!(report["metrics"].get("avg").is_none(), "{report}");
    assert_eq!(report["avg_of"], serde_json::json!([]));

    // Declared: an explicit vocabulary file (here the synthetic words) computes it.
    let vocabulary = serde_json::json!({
        "sides": ["left", "right"],
        "zones": ["upper", "middle", "lower"],
        "lesion_words": ["lesion", "lesions"],
        "negations": ["no lesion", "no lesions", "clear"],
    });
    fs::write(scratch.join("vocab.json"), vocabulary.to_string()).unwrap();
    let run = eval(
        &scratch.0,
        "other/reports.jsonl",
        "model",
        &["--finding-vocabulary", "vocab.json"],
    );
    run.assert_success(&[]);
    let report = read_json(&scratch.join("eval/eval.json"));
    let has_f1 = report["metrics"].get("finding_f1").is_some();
    let undefined = report["notes"].to_string().contains("F1 is undefined");
    assert!(has_f1 || undefined, "{report}");
    if has_f1 {
        assert_eq!(report["avg_of"], serde_json::json!(["finding_f1"]));
    }

    // The synthetic records declare their vocabulary; avg lists what it averages.
    let run = eval(&scratch.0, "synth/test.jsonl", "model", &[]);
    run.assert_success(&["avg = mean of closed_acc, open_recall"]);
    let report = read_json(&scratch.join("eval/eval.json"));
    let avg_of: Vec<&str> = report["avg_of"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        avg_of.starts_with(&["closed_acc", "open_recall"]),
        "{report}"
    );
    let mean = avg_of
        .iter()
        .map(|m| report["metrics"][m].as_f64().unwrap())
        .sum::<f64>()
        / avg_of.len() as f64;
    assert!((report["metrics"]["avg"].as_f64().unwrap() - mean).abs() < 1e-9);

    // A bad vocabulary file is an error naming it.
    fs::write(scratch.join("bad.json"), "{\"sides\": []}").unwrap();
    eval(
        &scratch.0,
        "synth/test.jsonl",
        "model",
        &["--finding-vocabulary", "bad.json"],
    )
    .assert_clean_error(&["bad.json", "finding vocabulary"]);
}
