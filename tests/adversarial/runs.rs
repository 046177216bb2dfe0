//! Output folders, resumes, checkpoints and training inputs (issue 9, items 2, 3, 5, 13, 15, 16,
//! 17): nothing a user made is deleted, a resume that does not match its run is refused naming the
//! field, damaged checkpoints and logs are survived, bad images stop a run before step 1.

use std::fs;
use std::path::Path;
use std::time::Duration;

use crate::common::{firempo, tiny_synth, Scratch};

const LIMIT: Duration = Duration::from_secs(120);

/// A short playground run of `steps` steps in `out` (a checkpoint every 2 steps).
fn losses_run(cwd: &Path, out: &str, steps: &str, extra: &[&str]) -> crate::common::Run {
    let mut args = vec![
        "losses",
        "--out",
        out,
        "--steps",
        steps,
        "--checkpoint-every",
        "2",
        "--vocab",
        "16",
        "--answer-len",
        "3",
        "--batch",
        "2",
    ];
    args.extend_from_slice(extra);
    firempo(cwd, &args, LIMIT)
}

/// Two SFT steps of the demo model on the tiny synthetic set (checkpoint every step).
fn sft_run(cwd: &Path, out: &str, extra: &[&str]) -> crate::common::Run {
    sft_steps(cwd, out, "2", "1", extra)
}

/// `steps` SFT steps of batch 2 on the tiny synthetic set, a checkpoint every `every` steps.
fn sft_steps(
    cwd: &Path,
    out: &str,
    steps: &str,
    every: &str,
    extra: &[&str],
) -> crate::common::Run {
    let mut args = vec![
        "sft",
        "--records",
        "synth/train.jsonl",
        "--out",
        out,
        "--steps",
        steps,
        "--batch",
        "2",
        "--checkpoint-every",
        every,
    ];
    args.extend_from_slice(extra);
    firempo(cwd, &args, LIMIT)
}

fn step_dirs(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(run_dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    names.sort();
    names
}

/// Item 2: `demo --out DIR` on a folder holding a user's file (also `--out .`) refuses and keeps
/// the file; it used to delete the folder whatever it held.
#[test]
fn demo_refuses_a_folder_it_did_not_write() {
    let scratch = Scratch::new("demo-out");
    fs::write(scratch.join("notes.txt"), "my notes").unwrap();
    for out in [".", scratch.path_str("").as_str()] {
        let run = firempo(&scratch.0, &["demo", "--quick", "--out", out], LIMIT);
        run.assert_clean_error(&["not empty", "notes.txt", "never deletes"]);
        assert_eq!(
            fs::read_to_string(scratch.join("notes.txt")).unwrap(),
            "my notes"
        );
    }
}

/// Item 3: `losses --out DIR` on an SFT run directory refuses and deletes nothing; a rerun over its
/// own previous playground run replaces it.
#[test]
fn losses_never_deletes_another_run() {
    let scratch = Scratch::new("losses-out");
    let sft_like = scratch.join("sft");
    fs::create_dir_all(sft_like.join("checkpoints/step-000001")).unwrap();
    fs::write(sft_like.join("model.json"), "{}").unwrap();
    let run = losses_run(&scratch.0, "sft", "4", &[]);
    run.assert_clean_error(&["not empty", "model.json"]);
    assert!(sft_like.join("model.json").exists());
    assert!(sft_like.join("checkpoints/step-000001").exists());

    losses_run(&scratch.0, "play", "4", &[]).assert_success(&[]);
    let again = losses_run(&scratch.0, "play", "4", &[]);
    again.assert_success(&["replacing the previous playground run"]);
}

/// Item 5: a resume with other settings names the field; a resume of another stage's run is
/// refused; the same settings resume.
#[test]
fn resume_refuses_a_run_with_other_settings() {
    let scratch = Scratch::new("resume-identity");
    losses_run(&scratch.0, "play", "4", &[]).assert_success(&[]);
    let run = losses_run(&scratch.0, "play", "4", &["--resume", "--lr", "0.5"]);
    run.assert_clean_error(&["cannot resume", "trainer.lr"]);
    losses_run(&scratch.0, "play", "4", &["--resume"]).assert_success(&[]);

    tiny_synth(&scratch.0);
    sft_run(&scratch.0, "sft", &[]).assert_success(&[]);
    // Other records: the digest differs.
    let records = fs::read_to_string(scratch.join("synth/train.jsonl")).unwrap();
    let fewer: Vec<&str> = records.lines().skip(1).collect();
    fs::write(scratch.join("synth/other.jsonl"), fewer.join("\n") + "\n").unwrap();
    let run = firempo(
        &scratch.0,
        &[
            "sft",
            "--records",
            "synth/other.jsonl",
            "--out",
            "sft",
            "--steps",
            "2",
            "--batch",
            "2",
            "--resume",
        ],
        LIMIT,
    );
    run.assert_clean_error(&["cannot resume", "records"]);
    // `align --resume` pointed at the SFT run.
    let run = firempo(
        &scratch.0,
        &[
            "align",
            "--pairs",
            "synth/train.jsonl",
            "--model",
            "sft",
            "--out",
            "sft",
            "--steps",
            "2",
            "--resume",
        ],
        LIMIT,
    );
    run.assert_clean_error(&["cannot resume", "stage: \"sft\""]);
}

/// Items 16 and 17: a torn metrics line after the checkpoint does not block `--resume`; a damaged
/// newest checkpoint is skipped with a warning for the previous one; old checkpoints are pruned.
#[test]
fn resume_survives_a_torn_log_and_a_damaged_checkpoint() {
    let scratch = Scratch::new("resume-damage");
    // Checkpoints at steps 2, 4 and 6; the default keeps the newest two.
    let run = losses_run(&scratch.0, "play", "6", &[]);
    run.assert_success(&[]);
    let play = scratch.join("play");
    assert_eq!(
        step_dirs(&play),
        ["step-000004", "step-000006"],
        "pruned to 2"
    );
    // A torn append after the last checkpoint.
    let mut log = fs::read_to_string(play.join("metrics.jsonl")).unwrap();
    log.push_str("{\"step\":7,\"loss\":0.6");
    fs::write(play.join("metrics.jsonl"), log).unwrap();
    // Damage the newest checkpoint's weights.
    let weights = play.join("checkpoints/step-000006/trainable.mpk");
    let mut bytes = fs::read(&weights).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&weights, bytes).unwrap();
    let run = losses_run(&scratch.0, "play", "6", &["--resume"]);
    run.assert_success(&["step-000006 is damaged", "previous one"]);
    let rows = fs::read_to_string(play.join("metrics.jsonl")).unwrap();
    assert_eq!(
        rows.lines().count(),
        6,
        "steps 1-4 kept, 5-6 recomputed:\n{rows}"
    );
    assert!(!rows.contains("\"step\":7"));
}

/// Item 17: a LoRA run's checkpoints hold the adapters, not the model.
#[test]
fn lora_checkpoints_hold_only_the_adapters() {
    let scratch = Scratch::new("lora-ckpt");
    tiny_synth(&scratch.0);
    sft_run(&scratch.0, "full", &[]).assert_success(&[]);
    sft_run(&scratch.0, "lora", &["--model", "full", "--lora-rank", "2"]).assert_success(&[]);
    let size = |p: &str| fs::metadata(scratch.join(p)).unwrap().len();
    let model = size("full/model.mpk");
    let adapters = size("lora/run/checkpoints/step-000002/trainable.mpk");
    assert!(
        adapters * 20 < model,
        "LoRA checkpoint {adapters} B vs model {model} B"
    );
    assert_eq!(step_dirs(&scratch.join("lora/run")).len(), 2);
}

/// Issue 12 item 4: a LoRA run from a model directory writes its adapters and `base.json`, not a
/// copy of the model; later stages load the base and merge them, to the same weights `--merge`
/// writes. A base that changed or went away is refused naming it and the fix; `--merge` without
/// LoRA is refused.
#[test]
fn lora_runs_write_adapters_and_merge_only_when_asked() {
    let scratch = Scratch::new("adapter-only");
    tiny_synth(&scratch.0);
    sft_run(&scratch.0, "full", &[]).assert_success(&[]);
    let lora = ["--model", "full", "--lora-rank", "2"];
    sft_run(&scratch.0, "lora", &lora).assert_success(&[]);
    sft_run(&scratch.0, "merged", &[&lora[..], &["--merge"]].concat()).assert_success(&[]);

    let exists = |p: &str| scratch.join(p).exists();
    assert!(exists("lora/adapter/adapter_model.safetensors") && exists("lora/base.json"));
    assert!(
        !exists("lora/model.mpk"),
        "the adapter-only run wrote the model"
    );
    assert!(exists("merged/model.mpk") && !exists("merged/base.json"));
    let size = |p: &str| fs::metadata(scratch.join(p)).unwrap().len();
    assert!(size("lora/adapter/adapter_model.safetensors") * 20 < size("merged/model.mpk"));
    let (adapted, merged) = (
        weights(&scratch.join("lora")),
        weights(&scratch.join("merged")),
    );
    assert_eq!(adapted.len(), merged.len());
    for (index, (a, b)) in adapted.iter().zip(&merged).enumerate() {
        let worst = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max);
        assert!(
            worst <= 1e-6,
            "parameter {index}: adapter-only vs --merge differ by {worst}"
        );
    }
    // A second adapter-only run on top of the first (base.json → base.json → model.mpk).
    let stacked = ["--model", "lora", "--lora-rank", "2"];
    sft_run(&scratch.0, "stacked", &stacked).assert_success(&[]);
    assert_eq!(weights(&scratch.join("stacked")).len(), merged.len());

    // The base changes: the adapters no longer describe a model that exists.
    let processor = scratch.join("full/processor.json");
    let text = fs::read_to_string(&processor).unwrap();
    fs::write(&processor, text.replace('{', "{ ")).unwrap();
    let err = load_error(&scratch.join("lora"));
    for needle in ["full", "changed", "--merge"] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }
    fs::rename(scratch.join("full"), scratch.join("moved")).unwrap();
    let err = load_error(&scratch.join("stacked"));
    for needle in ["full", "not there any more", "--merge"] {
        assert!(err.contains(needle), "{needle:?} missing from: {err}");
    }

    sft_run(&scratch.0, "no-lora", &["--model", "merged", "--merge"])
        .assert_clean_error(&["--merge applies to LoRA runs", "fix: drop --merge"]);
}

/// Issue 12 item 1: half-precision base weights need a backend that has them and LoRA (full
/// fine-tuning would round every update into bf16); both refusals name the fix. With flex
/// compiled in, a bf16 LoRA SFT run trains and writes its adapters.
#[test]
fn half_precision_needs_a_backend_with_it_and_lora() {
    let scratch = Scratch::new("dtype");
    tiny_synth(&scratch.0);
    sft_run(&scratch.0, "full", &[]).assert_success(&[]);
    let bf16_lora = ["--model", "full", "--lora-rank", "2", "--dtype", "bf16"];
    sft_run(&scratch.0, "on-ndarray", &bf16_lora).assert_clean_error(&[
        "no bf16 tensors",
        "--backend flex",
        "--dtype f32",
    ]);
    sft_run(
        &scratch.0,
        "full-bf16",
        &["--model", "full", "--dtype", "bf16"],
    )
    .assert_clean_error(&["full fine-tuning with bf16", "LoRA", "--dtype f32"]);
    if cfg!(feature = "flex") {
        let on_flex = [&bf16_lora[..], &["--backend", "flex"]].concat();
        sft_run(&scratch.0, "bf16", &on_flex).assert_success(&[]);
        assert!(scratch
            .join("bf16/adapter/adapter_model.safetensors")
            .is_file());
    }
}

/// The error loading model directory `dir` gives.
fn load_error(dir: &Path) -> String {
    let loaded = firempo::pipeline::model_dir::load_model::<burn::backend::NdArray<f32>>(
        dir,
        &Default::default(),
    );
    format!("{:#}", loaded.map(|_| ()).unwrap_err())
}

/// Item 15: an unreadable image stops SFT before step 1, naming the record.
#[test]
fn a_bad_image_stops_training_before_step_one() {
    let scratch = Scratch::new("bad-image");
    tiny_synth(&scratch.0);
    let records = fs::read_to_string(scratch.join("synth/train.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(records.lines().next().unwrap()).unwrap();
    let image = first["image"].as_str().unwrap();
    let id = first["id"].as_str().unwrap();
    fs::write(
        scratch.join("synth").join(image),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let run = sft_run(&scratch.0, "sft", &[]);
    run.assert_clean_error(&[id, "(line 1)", "cannot be read", "before training"]);
    assert!(
        !scratch.join("sft/run/checkpoints").exists(),
        "no step ran before the check"
    );
}

/// Item 13: `--ground-truth-chosen` with a phrase-level method is refused (it replaced the edit
/// spans with whole answers for every method).
#[test]
fn ground_truth_chosen_is_refused_for_phrase_level_methods() {
    let scratch = Scratch::new("gt-chosen");
    fs::create_dir_all(scratch.join("model")).unwrap();
    fs::write(scratch.join("pairs.jsonl"), "").unwrap();
    fs::write(scratch.join("records.jsonl"), "").unwrap();
    let run = firempo(
        &scratch.0,
        &[
            "align",
            "--pairs",
            "pairs.jsonl",
            "--model",
            "model",
            "--method",
            "fire-mpo",
            "--ground-truth-chosen",
            "records.jsonl",
        ],
        LIMIT,
    );
    run.assert_clean_error(&["--ground-truth-chosen", "fire-mpo", "--method dpo"]);
}

/// Items 5 and 17: resuming from a trained-parameters-only checkpoint rebuilds the frozen parts
/// from the run's source and gives the same weights, bit for bit, as the uninterrupted run: a
/// full SFT run with a frozen vision tower, and a LoRA run on top of it.
#[test]
fn resume_from_trained_parameters_gives_the_uninterrupted_model() {
    let scratch = Scratch::new("resume-equal");
    tiny_synth(&scratch.0);
    let four_steps = |out: &str, extra: &[&str]| {
        let mut args = vec!["--keep-checkpoints", "0"];
        args.extend_from_slice(extra);
        sft_steps(&scratch.0, out, "4", "2", &args)
    };
    for (out, extra) in [
        ("full", vec!["--freeze-vision"]),
        ("lora", vec!["--model", "full", "--lora-rank", "2"]),
    ] {
        four_steps(out, &extra).assert_success(&[]);
        let straight = weights(&scratch.join(out));
        // Back to the state after step 2: the later checkpoint and the model are gone.
        let run = scratch.join(out).join("run");
        fs::remove_dir_all(run.join("checkpoints/step-000004")).unwrap();
        fs::remove_file(run.join("checkpoints/latest")).unwrap();
        fs::remove_file(scratch.join(out).join("model.json")).unwrap();
        // The full run's weights, or the LoRA run's reference to its base (adapter-only).
        let held_in = if out == "full" {
            "model.mpk"
        } else {
            "base.json"
        };
        fs::remove_file(scratch.join(out).join(held_in)).unwrap();
        let mut resume = extra.clone();
        resume.push("--resume");
        four_steps(out, &resume).assert_success(&[]);
        let resumed = weights(&scratch.join(out));
        assert_eq!(straight.len(), resumed.len());
        for (index, (a, b)) in straight.iter().zip(&resumed).enumerate() {
            assert!(
                a == b,
                "{out}: parameter {index} of the resumed model differs"
            );
        }
    }
}

/// Every float parameter of a model directory, flattened, in module order (the files themselves
/// differ: they carry parameter ids, fresh for the parts rebuilt on resume).
fn weights(dir: &Path) -> Vec<Vec<f32>> {
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::Tensor;
    use firempo::backend::TestCpu;
    type B = TestCpu;
    struct Collect(Vec<Vec<f32>>);
    impl ModuleVisitor<B> for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0.push(param.val().into_data().to_vec().unwrap());
        }
    }
    let (model, _) = firempo::pipeline::model_dir::load_model::<B>(dir, &Default::default())
        .unwrap_or_else(|e| panic!("loading {}: {e:#}", dir.display()));
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// Item 12 with item 13: a ground truth that equals the rejected answer leaves no preference; such
/// pairs are skipped and counted once `chosen` is replaced (they used to train with gradient 0).
#[test]
fn ground_truth_equal_to_the_rejected_answer_is_skipped() {
    use firempo_datasets::{
        read_jsonl, write_jsonl, AnswerType, BadRecordPolicy, PairBranch, PhraseSpan,
        PreferencePair, Record,
    };
    let scratch = Scratch::new("gt-equal");
    tiny_synth(&scratch.0);
    sft_run(&scratch.0, "sft", &[]).assert_success(&[]);
    let records: Vec<Record> =
        read_jsonl(&scratch.join("synth/train.jsonl"), BadRecordPolicy::Stop)
            .unwrap()
            .items;
    let whole = |text: &str| {
        vec![PhraseSpan {
            start: 0,
            end: text.len(),
            id: 1,
        }]
    };
    let opposite = |answer: &str| if answer == "yes" { "no" } else { "yes" }.to_string();
    let presence: Vec<&Record> = records
        .iter()
        .filter(|r| r.answer_type == AnswerType::Closed && (r.answer == "yes" || r.answer == "no"))
        .collect();
    assert!(presence.len() >= 2);
    let pairs: Vec<PreferencePair> = presence
        .iter()
        .map(|r| PreferencePair {
            id: r.id.clone(),
            record_id: r.id.clone(),
            question: r.question.clone(),
            answer_type: r.answer_type,
            chosen: r.answer.clone(),
            rejected: opposite(&r.answer),
            chosen_spans: whole(&r.answer),
            rejected_spans: whole(&opposite(&r.answer)),
            branch: PairBranch::OppositeSpliced,
            editor: "test".into(),
            image: r.image.clone(),
            corrupted_image: None,
            corruption: None,
            meta: Default::default(),
        })
        .collect();
    write_jsonl(&scratch.join("synth/pairs.jsonl"), &pairs).unwrap();
    // The ground truth of the first pair's record says what its rejected answer says.
    let mut truth = records.clone();
    let flipped = truth.iter_mut().find(|r| r.id == presence[0].id).unwrap();
    flipped.answer = opposite(&flipped.answer);
    write_jsonl(&scratch.join("synth/truth.jsonl"), &truth).unwrap();
    let run = firempo(
        &scratch.0,
        &[
            "align",
            "--pairs",
            "synth/pairs.jsonl",
            "--model",
            "sft",
            "--out",
            "aligned",
            "--method",
            "dpo",
            "--ground-truth-chosen",
            "synth/truth.jsonl",
            "--steps",
            "1",
            "--batch",
            "2",
        ],
        LIMIT,
    );
    let expected = format!("skipped 1 of {} pairs", pairs.len());
    run.assert_success(&[&expected, &presence[0].id, "equal"]);
}
