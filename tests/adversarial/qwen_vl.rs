//! Qwen-VL checkpoints through the binary (issue 11): `sample → pairs → align → eval` on the tiny
//! Qwen2.5-VL directory (`tests/support/qwen_checkpoint.rs`), and the bad inputs the issue names,
//! each a clean error naming the file and what to fix.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::{firempo, tiny_synth, Run, Scratch};
use crate::qwen_checkpoint::qwen_checkpoint;

const LIMIT: Duration = Duration::from_secs(300);

fn sample(cwd: &Path, model: &Path, records: &str) -> Run {
    let model = model.display().to_string();
    firempo(
        cwd,
        &[
            "sample",
            "--model",
            &model,
            "--records",
            records,
            "--out",
            "samples.jsonl",
            "--batch",
            "2",
            "--max-new-tokens",
            "4",
        ],
        LIMIT,
    )
}

#[test]
fn a_qwen_checkpoint_runs_sample_pairs_align_and_eval_from_the_command_line() {
    let scratch = Scratch::new("qwen-cli");
    tiny_synth(&scratch.0);
    let model = qwen_checkpoint(&scratch.0);
    sample(&scratch.0, &model, "synth/train.jsonl").assert_success(&[]);
    let samples = fs::read_to_string(scratch.join("samples.jsonl")).unwrap();
    let records = fs::read_to_string(scratch.join("synth/train.jsonl")).unwrap();
    assert_eq!(samples.lines().count(), records.lines().count());
    firempo(
        &scratch.0,
        &[
            "pairs",
            "--records",
            "synth/train.jsonl",
            "--samples",
            "samples.jsonl",
            "--out",
            "pairs",
            "--allow-failures",
        ],
        LIMIT,
    )
    .assert_success(&[]);
    let pairs = fs::read_to_string(scratch.join("pairs/pairs.jsonl")).unwrap();
    assert!(pairs.lines().count() > 0, "no pairs were built");
    let model_arg = model.display().to_string();
    firempo(
        &scratch.0,
        &[
            "align",
            "--model",
            &model_arg,
            "--pairs",
            "pairs/pairs.jsonl",
            "--out",
            "aligned",
            "--method",
            "fire-mpo",
            "--steps",
            "2",
            "--batch",
            "2",
            "--lora-rank",
            "4",
        ],
        LIMIT,
    )
    .assert_success(&[]);
    assert!(scratch
        .join("aligned/adapter/adapter_model.safetensors")
        .is_file());
    let model_json = fs::read_to_string(scratch.join("aligned/model.json")).unwrap();
    assert!(model_json.contains("\"qwen_vl\""), "{model_json}");
    firempo(
        &scratch.0,
        &[
            "eval",
            "--model",
            "aligned",
            "--records",
            "synth/test.jsonl",
            "--out",
            "eval",
            "--max-new-tokens",
            "4",
        ],
        LIMIT,
    )
    .assert_success(&[]);
    let report = fs::read_to_string(scratch.join("eval/eval.json")).unwrap();
    assert!(report.contains("logp_drop"), "{report}");
}

#[test]
fn qwen_inputs_it_cannot_read_are_refused_by_name() {
    let scratch = Scratch::new("qwen-bad");
    tiny_synth(&scratch.0);
    let model = qwen_checkpoint(&scratch.0);

    // An image with fewer pixels than one merged patch (8×8 px here), named with the fix.
    let records = fs::read_to_string(scratch.join("synth/train.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(records.lines().next().unwrap()).unwrap();
    let image = first["image"].as_str().unwrap();
    image::DynamicImage::new_rgb8(6, 7)
        .save(scratch.join("synth").join(image))
        .unwrap();
    sample(&scratch.0, &model, "synth/train.jsonl").assert_clean_error(&[
        image,
        "merged patch",
        "larger image",
    ]);

    // max_pixels below min_pixels in preprocessor_config.json.
    let config = model.join("preprocessor_config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    value["size"]["longest_edge"] = 32.into();
    fs::write(&config, value.to_string()).unwrap();
    sample(&scratch.0, &model, "synth/test.jsonl").assert_clean_error(&[
        "preprocessor_config.json",
        "size.longest_edge",
        "size.shortest_edge",
    ]);

    // A model_type firempo does not know.
    let config = model.join("config.json");
    let mut value: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&config).unwrap()).unwrap();
    value["model_type"] = "qwen9_vl".into();
    fs::write(&config, value.to_string()).unwrap();
    sample(&scratch.0, &model, "synth/test.jsonl").assert_clean_error(&["config.json", "qwen9_vl"]);
}
