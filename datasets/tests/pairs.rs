//! Minimal-edit pairs: the rule editor's two branches on closed answers and the synthetic
//! vocabulary, and `build_pairs` end to end on a generated benchmark (JSONL, corrupted images,
//! recorded corruption paths, failures counted, determinism).

mod common;

use common::TempDir;
use firempo_datasets::synth::{self, SynthConfig};
use firempo_datasets::{
    build_pairs, diff_phrases, load_image, read_jsonl, AnswerType, BadRecordPolicy,
    CorruptionConfig, CorruptionPath, DatasetError, Editor, PairBranch, PairFailure, PairOptions,
    PhraseSpan, PreferencePair, Record, RuleEditor, Sample, Split,
};

fn record(id: &str, question: &str, answer: &str, answer_type: AnswerType) -> Record {
    Record {
        id: id.into(),
        image: "img.png".into(),
        question: question.into(),
        answer: answer.into(),
        answer_type,
        mask: None,
        concept: None,
        split: Split::Train,
        meta: Default::default(),
    }
}

fn sample(record: &Record, answer: &str) -> Sample {
    Sample {
        record_id: record.id.clone(),
        question: record.question.clone(),
        answer: answer.into(),
        model: None,
        meta: Default::default(),
    }
}

fn spans<'a>(text: &'a str, spans: &[PhraseSpan]) -> Vec<(&'a str, u32)> {
    spans
        .iter()
        .map(|s| (&text[s.start..s.end], s.id))
        .collect()
}

#[test]
fn wrong_answers_are_corrected_in_place() {
    let editor = RuleEditor::default();
    let r = record(
        "r1",
        "Is there a lesion in this image?",
        "yes",
        AnswerType::Closed,
    );
    let e = editor
        .edit(&sample(&r, "No, the lungs are clear."), &r)
        .unwrap();
    assert_eq!(e.branch, PairBranch::Corrected);
    assert_eq!(e.chosen, "Yes, the lungs are clear.");
    assert_eq!(e.rejected, "No, the lungs are clear.");
    assert_eq!(spans(&e.chosen, &e.chosen_spans), [("Yes", 1)]);
    assert_eq!(spans(&e.rejected, &e.rejected_spans), [("No", 1)]);

    let r = record(
        "r2",
        "Where is the largest lesion?",
        "left lung, upper zone",
        AnswerType::Open,
    );
    let e = editor
        .edit(&sample(&r, "In the right lung, lower zone."), &r)
        .unwrap();
    assert_eq!(e.chosen, "In the left lung, upper zone.");
    assert_eq!(
        spans(&e.chosen, &e.chosen_spans),
        [("left", 1), ("upper", 2)]
    );
    assert_eq!(
        spans(&e.rejected, &e.rejected_spans),
        [("right", 1), ("lower", 2)]
    );
    // The token diff agrees with the editor's own spans.
    assert_eq!(
        diff_phrases(&e.chosen, &e.rejected),
        (e.chosen_spans.clone(), e.rejected_spans.clone())
    );

    let r = record("r3", "How many lesions are there?", "2", AnswerType::Open);
    let e = editor
        .edit(&sample(&r, "There are three lesions."), &r)
        .unwrap();
    assert_eq!(e.chosen, "There are two lesions.");

    let r = record("r4", "Is this a CT or an MRI?", "MRI", AnswerType::Closed);
    let e = editor.edit(&sample(&r, "ct"), &r).unwrap();
    assert_eq!((e.chosen.as_str(), e.rejected.as_str()), ("mri", "ct"));
}

#[test]
fn right_answers_get_an_opposite_spliced_in() {
    let editor = RuleEditor::default();
    let r = record(
        "r5",
        "Is the lesion in the left lung or the right lung?",
        "right",
        AnswerType::Closed,
    );
    let e = editor.edit(&sample(&r, "right"), &r).unwrap();
    assert_eq!(e.branch, PairBranch::OppositeSpliced);
    assert_eq!((e.chosen.as_str(), e.rejected.as_str()), ("right", "left"));
    assert_eq!(spans(&e.rejected, &e.rejected_spans), [("left", 1)]);

    let r = record(
        "r6",
        "Is the largest lesion in the upper, middle or lower zone?",
        "middle",
        AnswerType::Closed,
    );
    let e = editor.edit(&sample(&r, "The middle zone."), &r).unwrap();
    assert_eq!(e.chosen, "The middle zone.");
    assert!(
        ["The upper zone.", "The lower zone."].contains(&e.rejected.as_str()),
        "{}",
        e.rejected
    );
    // Deterministic: the same record gives the same opposite.
    assert_eq!(editor.edit(&sample(&r, "The middle zone."), &r).unwrap(), e);

    let r = record("r7", "How many lesions are there?", "0", AnswerType::Open);
    let e = editor.edit(&sample(&r, "0"), &r).unwrap();
    assert_eq!(e.rejected, "1");
}

#[test]
fn unsupported_answers_are_errors_naming_the_record() {
    let editor = RuleEditor::default();
    let r = record("r8", "What organ is shown?", "liver", AnswerType::Open);
    let err = editor.edit(&sample(&r, "spleen"), &r).unwrap_err();
    assert!(matches!(&err, DatasetError::Edit { record, .. } if record == "r8"));
    assert!(err.to_string().contains("judge editor"), "{err}");
    let with_organs = RuleEditor {
        extra_groups: vec![vec!["liver".into(), "spleen".into(), "kidney".into()]],
    };
    let e = with_organs.edit(&sample(&r, "The spleen."), &r).unwrap();
    assert_eq!(e.chosen, "The liver.");

    let r = record(
        "r9",
        "Describe the findings.",
        "Clear lungs.",
        AnswerType::Report,
    );
    assert!(editor.edit(&sample(&r, "Clear lungs."), &r).is_err());
    let r = record("r10", "Is there a lesion?", "yes", AnswerType::Closed);
    let err = editor.edit(&sample(&r, "   "), &r).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    // An answer that never states the slot is replaced whole.
    let e = editor.edit(&sample(&r, "It is hard to say."), &r).unwrap();
    assert_eq!(
        (e.chosen.as_str(), e.branch),
        ("yes", PairBranch::Corrected)
    );
}

/// Answers as a weak model would give them: every third one wrong.
fn synthetic_samples(records: &[Record]) -> Vec<Sample> {
    let flip = |a: &str| match a {
        "yes" => "no".to_string(),
        "no" => "yes".to_string(),
        "left" => "right".to_string(),
        "right" => "left".to_string(),
        other => other.to_string(),
    };
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let answer = if i % 3 == 0 {
                flip(&r.answer)
            } else {
                r.answer.clone()
            };
            sample(r, &answer)
        })
        .collect()
}

#[test]
fn build_pairs_on_the_synthetic_benchmark() {
    let data = TempDir::new("pairs-data");
    let config = SynthConfig {
        n_train: 8,
        n_val: 0,
        n_test: 0,
        ..Default::default()
    };
    synth::generate(&config, data.path()).unwrap();
    let records = read_jsonl::<Record>(&data.path().join("train.jsonl"), BadRecordPolicy::Stop)
        .unwrap()
        .items;
    let samples = synthetic_samples(&records);
    let reports = records
        .iter()
        .filter(|r| r.answer_type == AnswerType::Report)
        .count();

    let run = |out: &std::path::Path| {
        let options = PairOptions {
            dataset_root: data.path().to_path_buf(),
            out_dir: out.to_path_buf(),
            corruption: Some(CorruptionConfig {
                seed: 9,
                ..Default::default()
            }),
            previews: true,
            policy: BadRecordPolicy::Skip,
            unreadable_samples: Vec::new(),
        };
        build_pairs(&samples, &records, &RuleEditor::default(), &options).unwrap()
    };
    let (out_a, out_b) = (TempDir::new("pairs-a"), TempDir::new("pairs-b"));
    let report = run(out_a.path());
    run(out_b.path());

    assert_eq!(report.skipped, reports, "reports need the judge editor");
    assert_eq!(report.pairs.len(), records.len() - reports);
    assert!(report.branches["corrected"] > 0 && report.branches["opposite_spliced"] > 0);
    let failures = read_jsonl::<PairFailure>(
        &out_a.path().join("pair_failures.jsonl"),
        BadRecordPolicy::Stop,
    )
    .unwrap()
    .items;
    assert_eq!(failures.len(), reports);
    assert!(failures[0].error.contains("reports need the judge editor"));

    let written = read_jsonl::<PreferencePair>(&report.pairs_path, BadRecordPolicy::Stop)
        .unwrap()
        .items;
    assert_eq!(written, report.pairs);
    for pair in &written {
        let record = records.iter().find(|r| r.id == pair.record_id).unwrap();
        let lesion = !record.meta["lesions"].as_array().unwrap().is_empty();
        let expected = if lesion {
            CorruptionPath::LesionMask
        } else {
            CorruptionPath::GlobalSigma12Fallback
        };
        assert_eq!(pair.corruption, Some(expected), "{}", pair.id);
        assert_eq!(pair.image, data.path().join(&record.image));
        let corrupted = pair.corrupted_image.as_ref().unwrap();
        assert_eq!(load_image(corrupted).unwrap().width(), 64);
        assert!(out_a
            .path()
            .join("previews")
            .join(corrupted.file_name().unwrap())
            .is_file());
        assert_ne!(pair.chosen, pair.rejected);
        assert!(!pair.chosen_spans.is_empty());
        // Same seed, same corrupted pixels.
        let twin = out_b
            .path()
            .join("corrupted")
            .join(corrupted.file_name().unwrap());
        assert_eq!(
            std::fs::read(corrupted).unwrap(),
            std::fs::read(twin).unwrap()
        );
    }
    let a = std::fs::read_to_string(out_a.path().join("pairs.jsonl")).unwrap();
    let b = std::fs::read_to_string(out_b.path().join("pairs.jsonl")).unwrap();
    assert_eq!(
        a.replace(&*out_a.path().to_string_lossy(), ""),
        b.replace(&*out_b.path().to_string_lossy(), "")
    );
}

#[test]
fn stop_policy_and_unknown_records() {
    let out = TempDir::new("pairs-stop");
    let r = record("known", "Is there a lesion?", "yes", AnswerType::Closed);
    let mut orphan = sample(&r, "no");
    orphan.record_id = "missing".into();
    let options = PairOptions {
        dataset_root: out.path().to_path_buf(),
        out_dir: out.path().to_path_buf(),
        corruption: None,
        previews: false,
        policy: BadRecordPolicy::Skip,
        unreadable_samples: Vec::new(),
    };
    let report = build_pairs(
        &[orphan.clone(), sample(&r, "no")],
        std::slice::from_ref(&r),
        &RuleEditor::default(),
        &options,
    )
    .unwrap();
    assert_eq!((report.pairs.len(), report.skipped), (1, 1));
    assert_eq!(report.pairs[0].corruption, None);
    assert!(report.problems[0]
        .to_string()
        .contains("no record with this id"));

    let stop = PairOptions {
        policy: BadRecordPolicy::Stop,
        ..options
    };
    let err = build_pairs(&[orphan], &[r], &RuleEditor::default(), &stop).unwrap_err();
    assert!(
        matches!(err, DatasetError::Stopped { accepted: 0, .. }),
        "{err}"
    );
}
