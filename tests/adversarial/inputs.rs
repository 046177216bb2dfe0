//! Bad input files given to the stages: paths that are not JSONL files, lines that are not one JSON
//! object, crafted images, colliding ids, invalid pairs, a failing judge (issue 9, items 1, 4, 7,
//! 9, 11, 12, 18).

use std::path::Path;
use std::time::Duration;

use firempo_datasets::{read_jsonl, BadRecordPolicy, Record, Sample};

use crate::common::{firempo, tiny_synth, Scratch};

const LIMIT: Duration = Duration::from_secs(60);

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("running mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// The synthetic training records of `tiny_synth`.
fn synth_records(scratch: &Scratch) -> Vec<Record> {
    read_jsonl::<Record>(&scratch.join("synth/train.jsonl"), BadRecordPolicy::Stop)
        .unwrap()
        .items
}

/// Writes one sample per record that answers with the ground truth (the rule editor then splices
/// in the opposite, so every sample gives a pair).
fn write_samples(path: &Path, records: &[Record]) {
    let samples: Vec<Sample> = records
        .iter()
        .map(|r| Sample {
            record_id: r.id.clone(),
            question: r.question.clone(),
            answer: r.answer.clone(),
            model: None,
            meta: Default::default(),
        })
        .collect();
    firempo_datasets::write_jsonl(path, &samples).unwrap();
}

/// Item 1: `sft --records DIR` looped forever, "skipping" the directory's read error as a bad
/// record (gigabytes of log); it is refused before it is opened.
#[test]
fn sft_records_directory_is_refused() {
    let scratch = Scratch::new("records-dir");
    std::fs::create_dir_all(scratch.join("synth")).unwrap();
    let run = firempo(
        &scratch.0,
        &["sft", "--records", "synth", "--out", "run", "--steps", "1"],
        LIMIT,
    );
    run.assert_clean_error(&["synth", "is a directory", "expected a JSONL file"]);
}

/// Item 1: `/dev/zero` as records is refused, no read at all.
#[test]
fn sft_records_dev_zero_is_refused() {
    let scratch = Scratch::new("records-zero");
    let run = firempo(
        &scratch.0,
        &[
            "sft",
            "--records",
            "/dev/zero",
            "--out",
            "run",
            "--steps",
            "1",
        ],
        LIMIT,
    );
    run.assert_clean_error(&["/dev/zero", "is a device", "expected a JSONL file"]);
}

/// Item 1: a directory as `pairs --samples` and a FIFO as `pairs --records` (opening a FIFO
/// blocks forever) are refused.
#[test]
fn pairs_samples_directory_and_records_fifo_are_refused() {
    let scratch = Scratch::new("pairs-notfile");
    tiny_synth(&scratch.0);
    std::fs::create_dir_all(scratch.join("samples")).unwrap();
    let run = firempo(
        &scratch.0,
        &[
            "pairs",
            "--records",
            "synth/train.jsonl",
            "--samples",
            "samples",
            "--out",
            "pairs",
        ],
        LIMIT,
    );
    run.assert_clean_error(&["samples", "is a directory", "expected a JSONL file"]);

    mkfifo(&scratch.join("records.jsonl"));
    let run = firempo(
        &scratch.0,
        &[
            "pairs",
            "--records",
            "records.jsonl",
            "--samples",
            "samples",
            "--out",
            "pairs",
        ],
        LIMIT,
    );
    run.assert_clean_error(&["records.jsonl", "FIFO", "expected a JSONL file"]);
}

/// Item 9: four objects on one line were read as one record, silently. The line is now a bad
/// record named by its line; a BOM before the first line costs nothing.
#[test]
fn trailing_objects_on_a_records_line_are_reported_with_the_line() {
    let scratch = Scratch::new("records-trailing");
    tiny_synth(&scratch.0);
    let records = synth_records(&scratch);
    write_samples(&scratch.join("samples.jsonl"), &records);
    let text = std::fs::read_to_string(scratch.join("synth/train.jsonl")).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines[0] = format!("\u{feff}{}", lines[0]);
    lines[1] = format!("{0} {0} {0} {0}", lines[1]);
    std::fs::write(scratch.join("synth/train.jsonl"), lines.join("\n")).unwrap();
    let run = firempo(
        &scratch.0,
        &[
            "pairs",
            "--records",
            "synth/train.jsonl",
            "--samples",
            "samples.jsonl",
            "--out",
            "pairs",
            "--corruption",
            "none",
        ],
        LIMIT,
    );
    run.assert_success(&[
        "skipped 1 bad records",
        "train.jsonl:2",
        "data after the JSON object",
    ]);
}
