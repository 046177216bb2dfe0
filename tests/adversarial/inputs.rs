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

/// Writes a PNG that is only a header (and an empty IDAT) claiming `width × height` (grayscale): a few dozen bytes
/// that a careless decoder turns into a `width · height` allocation.
fn png_header_only(path: &Path, width: u32, height: u32) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder = png::Encoder::new(file, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    // One IDAT chunk holding an empty zlib stream: decoders read the header up to here.
    writer
        .write_chunk(
            png::chunk::IDAT,
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        )
        .unwrap();
}

/// The lines of `path` (e.g. `pair_failures.jsonl`) that mention `needle`.
fn lines_with(path: &Path, needle: &str) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains(needle))
        .map(str::to_string)
        .collect()
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

/// `firempo pairs` on the tiny synthetic set with the records' own answers as samples (`EXTRA`
/// appended), output in `pairs/`.
fn pairs_from_own_answers(scratch: &Scratch, extra: &[&str]) -> crate::common::Run {
    tiny_synth(&scratch.0);
    write_samples(&scratch.join("samples.jsonl"), &synth_records(scratch));
    let mut args = vec![
        "pairs",
        "--records",
        "synth/train.jsonl",
        "--samples",
        "samples.jsonl",
        "--out",
        "pairs",
    ];
    args.extend_from_slice(extra);
    firempo(&scratch.0, &args, LIMIT)
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

/// Item 1: `/dev/zero` as `align --pairs` is refused before it is read (or digested).
#[test]
fn align_pairs_dev_zero_is_refused() {
    let scratch = Scratch::new("align-pairs-zero");
    let run = firempo(
        &scratch.0,
        &[
            "align",
            "--pairs",
            "/dev/zero",
            "--model",
            "model",
            "--out",
            "aligned",
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

/// Item 4: `pairs --previews` on a 20000² image allocated gigabytes; an image whose header
/// claims 100000² had its mask resized to that. Both are refused within the pixel budget, named
/// in `pair_failures.jsonl`, and the other samples still give pairs.
#[test]
fn pairs_refuse_images_above_the_pixel_budget() {
    let scratch = Scratch::new("pairs-huge-image");
    tiny_synth(&scratch.0);
    let records = synth_records(&scratch);
    write_samples(&scratch.join("samples.jsonl"), &records);
    let (big, huge) = (
        &records[0],
        records
            .iter()
            .find(|r| r.image != records[0].image)
            .unwrap(),
    );
    assert!(huge.mask.is_some(), "synthetic records have masks");
    png_header_only(&scratch.join("synth").join(&big.image), 20_000, 20_000);
    png_header_only(&scratch.join("synth").join(&huge.image), 100_000, 100_000);
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
            "--previews",
        ],
        LIMIT,
    );
    run.assert_success(&["pairs written"]);
    let failures = scratch.join("pairs/pair_failures.jsonl");
    for (record, size) in [(big, "20000x20000"), (huge, "100000x100000")] {
        let lines = lines_with(&failures, &format!("\"record_id\":\"{}\"", record.id));
        assert_eq!(lines.len(), 1, "{record:?} in {failures:?}");
        assert!(
            lines[0].contains(size) && lines[0].contains("above the budget of 50000000 pixels"),
            "{}",
            lines[0]
        );
    }
}

/// Item 4: a FIFO where an image should be blocked the first read forever; it is refused.
#[test]
fn sft_refuses_a_fifo_as_an_image() {
    let scratch = Scratch::new("sft-fifo-image");
    tiny_synth(&scratch.0);
    let records = synth_records(&scratch);
    let image = scratch.join("synth").join(&records[0].image);
    std::fs::remove_file(&image).unwrap();
    mkfifo(&image);
    let run = firempo(
        &scratch.0,
        &[
            "sft",
            "--records",
            "synth/train.jsonl",
            "--out",
            "run",
            "--steps",
            "1",
        ],
        LIMIT,
    );
    run.assert_clean_error(&[&records[0].id, "FIFO", "expected an image file"]);
}

/// Item 7: a pairs file with a repeated pair id (two pairs that may share one corrupted image)
/// is refused at load, naming both lines.
#[test]
fn align_refuses_repeated_pair_ids_naming_both_lines() {
    let scratch = Scratch::new("align-dup-ids");
    let run = pairs_from_own_answers(&scratch, &[]);
    run.assert_success(&["pairs written"]);
    let path = scratch.join("pairs/pairs.jsonl");
    let text = std::fs::read_to_string(&path).unwrap();
    let first = text.lines().next().unwrap().to_string();
    std::fs::write(&path, format!("{text}{first}\n")).unwrap();
    let line = text.lines().count() + 1;
    std::fs::create_dir_all(scratch.join("model")).unwrap();
    let run = firempo(
        &scratch.0,
        &[
            "align",
            "--pairs",
            "pairs/pairs.jsonl",
            "--model",
            "model",
            "--out",
            "aligned",
        ],
        LIMIT,
    );
    run.assert_clean_error(&[&format!("pairs.jsonl:{line}"), "repeats line 1"]);
}

/// Item 11: `pairs --records train.jsonl` (a bare file name, relative to the current folder)
/// failed with "cannot make an empty path absolute".
#[test]
fn pairs_take_a_bare_records_file_name() {
    let scratch = Scratch::new("pairs-bare-name");
    tiny_synth(&scratch.0);
    let records = synth_records(&scratch);
    write_samples(&scratch.join("synth/samples.jsonl"), &records);
    let run = firempo(
        &scratch.join("synth"),
        &[
            "pairs",
            "--records",
            "train.jsonl",
            "--samples",
            "samples.jsonl",
            "--out",
            "pairs",
        ],
        LIMIT,
    );
    run.assert_success(&["pairs written"]);
    let pairs = firempo_datasets::read_pairs_jsonl(
        &scratch.join("synth/pairs/pairs.jsonl"),
        BadRecordPolicy::Stop,
    )
    .unwrap()
    .items;
    let reports = records
        .iter()
        .filter(|r| r.answer_type == firempo_datasets::AnswerType::Report)
        .count();
    assert_eq!(
        pairs.len(),
        records.len() - reports,
        "reports need the judge"
    );
    for pair in &pairs {
        assert!(
            pair.image.is_absolute() && pair.image.is_file(),
            "{:?}",
            pair.image
        );
        let corrupted = pair.corrupted_image.as_ref().unwrap();
        assert!(
            corrupted.is_absolute() && corrupted.is_file(),
            "{corrupted:?}"
        );
    }
}

/// Item 12: a pair whose chosen answer equals its rejected one trained with a zero gradient; at
/// load it is a bad record naming line, id and reason (here every pair is, so nothing is left).
#[test]
fn align_refuses_pairs_with_equal_answers() {
    let scratch = Scratch::new("align-equal-answers");
    let run = pairs_from_own_answers(&scratch, &["--corruption", "none"]);
    run.assert_success(&["pairs written"]);
    let path = scratch.join("pairs/pairs.jsonl");
    let mut pairs = firempo_datasets::read_pairs_jsonl(&path, BadRecordPolicy::Stop)
        .unwrap()
        .items;
    for pair in &mut pairs {
        pair.rejected = pair.chosen.clone();
        pair.rejected_spans = pair.chosen_spans.clone();
    }
    firempo_datasets::write_jsonl(&path, &pairs).unwrap();
    std::fs::create_dir_all(scratch.join("model")).unwrap();
    let run = firempo(
        &scratch.0,
        &[
            "align",
            "--pairs",
            "pairs/pairs.jsonl",
            "--model",
            "model",
            "--out",
            "aligned",
        ],
        LIMIT,
    );
    run.assert_clean_error(&[
        &format!("pairs.jsonl:1: pair `{}`", pairs[0].id),
        "`chosen` equals `rejected`",
        "no usable pairs",
    ]);
}

/// Item 18: a judge endpoint that is down (port 9 on 127.0.0.1: nothing listens, connections
/// are refused at once, nothing leaves the machine) stops the run after `--judge-max-failures`
/// requests in a row with an error naming the URL and the last failure.
#[test]
fn pairs_stop_when_the_judge_keeps_failing() {
    let scratch = Scratch::new("pairs-judge-down");
    let run = pairs_from_own_answers(
        &scratch,
        &[
            "--corruption",
            "none",
            "--judge-url",
            "http://127.0.0.1:9/v1",
            "--judge-api-key-env",
            "none",
            "--judge-retries",
            "0",
            "--judge-timeout",
            "5",
            "--judge-concurrency",
            "1",
            "--judge-max-failures",
            "2",
        ],
    );
    run.assert_clean_error(&[
        "judge at http://127.0.0.1:9/v1",
        "stopped after 2 requests in a row failed",
        "last failure",
    ]);
    let failures = std::fs::read_to_string(scratch.join("pairs/pair_failures.jsonl")).unwrap();
    assert!(failures.lines().count() >= 2, "{failures}");
}

/// Item 18: no pair at all is an error unless `--allow-failures`; unreadable sample lines are
/// counted in the summary and listed in `pair_failures.jsonl` with their line.
#[test]
fn pairs_without_any_pair_fail_unless_allowed_and_count_unreadable_lines() {
    let scratch = Scratch::new("pairs-none-built");
    tiny_synth(&scratch.0);
    let records = synth_records(&scratch);
    let orphans: Vec<Record> = records
        .iter()
        .take(3)
        .map(|r| Record {
            id: format!("{}-not-in-the-records", r.id),
            ..r.clone()
        })
        .collect();
    write_samples(&scratch.join("samples.jsonl"), &orphans);
    let text = std::fs::read_to_string(scratch.join("samples.jsonl")).unwrap();
    std::fs::write(
        scratch.join("samples.jsonl"),
        format!("not json\n{text}{{\"record_id\": 7}}\n"),
    )
    .unwrap();
    let args = [
        "pairs",
        "--records",
        "synth/train.jsonl",
        "--samples",
        "samples.jsonl",
        "--out",
        "pairs",
        "--corruption",
        "none",
    ];
    let run = firempo(&scratch.0, &args, LIMIT);
    run.assert_clean_error(&[
        "0 pairs written",
        "3 samples skipped, 2 unreadable sample lines",
        "no pair could be built",
        "pair_failures.jsonl",
        "samples.jsonl:1",
        "--allow-failures",
    ]);
    let failures = scratch.join("pairs/pair_failures.jsonl");
    assert_eq!(lines_with(&failures, "\"record_id\":\"\"").len(), 2);
    assert_eq!(lines_with(&failures, "samples.jsonl:5").len(), 1);
    assert_eq!(lines_with(&failures, "no record with this id").len(), 3);

    let mut allowed = args.to_vec();
    allowed.push("--allow-failures");
    let run = firempo(&scratch.0, &allowed, LIMIT);
    run.assert_success(&["0 pairs written", "2 unreadable sample lines"]);
}
