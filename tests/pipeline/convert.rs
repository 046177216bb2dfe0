//! `firempo convert` on the datasets crate's hand-written SLAKE and VQA-RAD fixtures: splits,
//! skipped records with their reasons, absolute image paths, records the stages can read.

use std::path::{Path, PathBuf};

use firempo::stages::convert::{ConvertStage, ConvertedSplit, SourceFormat};
use firempo::stages::data::read_records;
use firempo_datasets::{save_png, BadRecordPolicy, Split};
use image::DynamicImage;

/// Copies a fixture folder of the datasets crate to `dst`.
fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        let to = dst.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to);
        } else {
            std::fs::copy(entry.path(), to).unwrap();
        }
    }
}

/// A scratch copy of `datasets/tests/fixtures/<name>` with small images at `images`.
fn fixture(name: &str, images: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-convert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("datasets/tests/fixtures")
            .join(name),
        &dir,
    );
    for image in images {
        save_png(&DynamicImage::new_luma8(8, 8), &dir.join(image)).unwrap();
    }
    dir
}

fn counts(summary: &[ConvertedSplit]) -> Vec<(Split, usize, usize)> {
    summary
        .iter()
        .map(|s| (s.split, s.records, s.skipped))
        .collect()
}

fn stage(format: SourceFormat, input: PathBuf, out: PathBuf) -> ConvertStage {
    ConvertStage {
        format,
        input,
        images: None,
        out,
        language: Some("en".into()),
        policy: BadRecordPolicy::Skip,
    }
}

#[test]
fn slake_becomes_one_jsonl_per_split_with_absolute_paths() {
    let dir = fixture(
        "slake",
        &["imgs/xmlab1/source.jpg", "imgs/xmlab102/source.jpg"],
    );
    let out = dir.join("records");
    let summary = stage(SourceFormat::Slake, dir.clone(), out.clone())
        .run()
        .unwrap();
    // English entries only; test.json has one entry without a question and one whose image
    // folder is missing.
    assert_eq!(
        counts(&summary),
        [
            (Split::Train, 3, 0),
            (Split::Val, 1, 0),
            (Split::Test, 1, 2)
        ]
    );
    assert!(summary[2]
        .first_problem
        .as_deref()
        .unwrap()
        .contains("question"));
    let train = read_records(&out.join("train.jsonl"), BadRecordPolicy::Stop, None).unwrap();
    for record in &train.records {
        assert!(
            record.image.is_absolute() && record.image.is_file(),
            "{record:?}"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn vqa_rad_splits_on_phrase_type_and_stops_when_strict() {
    let dir = fixture(
        "vqa_rad",
        &[
            "VQA_RAD Image Folder/synpic54610.jpg",
            "VQA_RAD Image Folder/synpic28602.jpg",
        ],
    );
    let input = dir.join("VQA_RAD Dataset Public.json");
    let summary = stage(SourceFormat::VqaRad, input.clone(), dir.join("records"))
        .run()
        .unwrap();
    // An unknown answer type and a missing image are skipped (reported with the train split).
    assert_eq!(
        counts(&summary),
        [(Split::Train, 2, 2), (Split::Test, 1, 0)]
    );
    let strict = ConvertStage {
        policy: BadRecordPolicy::Stop,
        ..stage(SourceFormat::VqaRad, input, dir.join("strict"))
    };
    let err = format!("{:#}", strict.run().unwrap_err());
    assert!(err.contains("answer_type"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_missing_input_is_named() {
    let missing = std::env::temp_dir().join("firempo-convert-no-such-slake");
    let err = format!(
        "{:#}",
        stage(SourceFormat::Slake, missing.clone(), missing.join("out"))
            .run()
            .unwrap_err()
    );
    assert!(
        err.contains("firempo-convert-no-such-slake") && err.contains("does not exist"),
        "{err}"
    );
}
