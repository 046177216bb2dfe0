//! The public-format loaders against hand-written fixtures in the exact formats, field by field.

mod common;

use common::{copy_fixture, gray_image, rgb_image, write_jpeg, write_png};
use firempo_datasets::{
    iu_xray, read_jsonl, slake, vqa_rad, write_jsonl, AnswerType, BadRecordPolicy, DatasetError,
    LoadOptions, MaskSource, Record, Split,
};
use serde_json::json;

fn vqa_rad_fixture() -> common::TempDir {
    let dir = copy_fixture("vqa_rad");
    let images = dir.path().join("VQA_RAD Image Folder");
    write_jpeg(&rgb_image(16, 12), &images.join("synpic54610.jpg"));
    write_jpeg(&gray_image(16, 16), &images.join("synpic28602.jpg"));
    // synpic99999.jpg is deliberately missing.
    dir
}

#[test]
fn vqa_rad_parses_fields_and_skips_bad_entries_with_counts() {
    let dir = vqa_rad_fixture();
    let json = dir.path().join("VQA_RAD Dataset Public.json");
    let images = dir.path().join("VQA_RAD Image Folder");
    let loaded = vqa_rad::load(&json, &images, LoadOptions::default()).unwrap();
    assert_eq!(loaded.items.len(), 3);
    assert_eq!(loaded.skipped, 2);

    let r = &loaded.items[0];
    assert_eq!(r.id, "vqa-rad-0");
    assert_eq!(r.image, images.join("synpic54610.jpg"));
    assert_eq!(r.question, "Are regions of the brain infarcted?");
    assert_eq!(r.answer, "Yes");
    assert_eq!(r.answer_type, AnswerType::Closed);
    assert_eq!(r.split, Split::Train);
    assert_eq!(r.meta["image_organ"], json!("HEAD"));
    assert_eq!(r.meta["question_type"], json!("PRES"));
    assert_eq!(r.mask, None);

    let count = &loaded.items[1];
    assert_eq!(count.id, "vqa-rad-1");
    assert_eq!(count.answer, "2", "numeric answers become text");
    assert_eq!(count.question, "How many lesions are in the brain?");
    assert_eq!(count.answer_type, AnswerType::Open);

    let test = &loaded.items[2];
    assert_eq!(test.split, Split::Test);
    assert_eq!(test.answer_type, AnswerType::Closed, "`CLOSED ` is trimmed");

    let messages: Vec<String> = loaded.problems.iter().map(|e| e.to_string()).collect();
    assert!(matches!(
        &loaded.problems[0],
        DatasetError::UnknownAnswerType { at, field, value, .. }
            if at.entry() == Some(3) && field == "answer_type" && value == "MAYBE"
    ));
    assert!(
        messages[0].contains("VQA_RAD Dataset Public.json (entry 3)"),
        "{}",
        messages[0]
    );
    assert!(matches!(
        &loaded.problems[1],
        DatasetError::MissingImage { record, field, .. } if record == "vqa-rad-4" && field == "image_name"
    ));
    assert!(messages[1].contains("synpic99999.jpg"), "{}", messages[1]);
}

#[test]
fn vqa_rad_stop_policy_reports_accepted_count() {
    let dir = vqa_rad_fixture();
    let options = LoadOptions {
        policy: BadRecordPolicy::Stop,
        check_images: true,
    };
    let err = vqa_rad::load(
        &dir.path().join("VQA_RAD Dataset Public.json"),
        &dir.path().join("VQA_RAD Image Folder"),
        options,
    )
    .unwrap_err();
    let DatasetError::Stopped { accepted, source } = &err else {
        panic!("expected Stopped, got {err}")
    };
    assert_eq!(*accepted, 3);
    assert!(matches!(**source, DatasetError::UnknownAnswerType { .. }));
    assert!(
        err.to_string().contains("stopped after 3 good record(s)"),
        "{err}"
    );
}

fn slake_fixture() -> common::TempDir {
    let dir = copy_fixture("slake");
    let imgs = dir.path().join("imgs");
    write_jpeg(&rgb_image(20, 16), &imgs.join("xmlab1/source.jpg"));
    write_jpeg(&gray_image(16, 16), &imgs.join("xmlab102/source.jpg"));
    write_png(&gray_image(16, 16), &imgs.join("xmlab102/mask.png"));
    dir
}

#[test]
fn slake_filters_language_and_picks_masks() {
    let dir = slake_fixture();
    let loaded = slake::load(dir.path(), Split::Train, &slake::SlakeOptions::default()).unwrap();
    assert_eq!(loaded.skipped, 0);
    let ids: Vec<&str> = loaded.items.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids,
        ["slake-0", "slake-2", "slake-3"],
        "the zh entry is filtered"
    );

    let modality = &loaded.items[0];
    assert_eq!(modality.image, dir.path().join("imgs/xmlab1/source.jpg"));
    assert_eq!(modality.answer, "MRI");
    assert_eq!(modality.answer_type, AnswerType::Open);
    assert_eq!(modality.meta["modality"], json!("MRI"));
    assert_eq!(modality.meta["img_id"], json!("1"));
    assert_eq!(
        modality.mask, None,
        "xmlab1 has no mask.png or detection.json"
    );

    let liver = &loaded.items[1];
    assert_eq!(liver.answer_type, AnswerType::Closed);
    assert_eq!(liver.concept.as_deref(), Some("Liver"));
    let Some(MaskSource::Boxes { boxes }) = &liver.mask else {
        panic!("expected the liver box, got {:?}", liver.mask)
    };
    assert_eq!(boxes.len(), 1);
    assert_eq!(
        (boxes[0].x, boxes[0].y, boxes[0].width, boxes[0].height),
        (2.0, 3.0, 6.0, 5.0)
    );

    let plane = &loaded.items[2];
    assert_eq!(
        plane.mask,
        Some(MaskSource::Png {
            path: dir.path().join("imgs/xmlab102/mask.png")
        })
    );
    assert_eq!(plane.concept, None);

    let all = slake::SlakeOptions {
        language: None,
        ..Default::default()
    };
    let both = slake::load(dir.path(), Split::Train, &all).unwrap();
    assert_eq!(both.items.len(), 4);
    assert_eq!(both.items[1].answer, "核磁共振");

    let val = slake::load(dir.path(), Split::Val, &slake::SlakeOptions::default()).unwrap();
    assert_eq!(val.items[0].concept.as_deref(), Some("Right Kidney"));
    assert_eq!(val.items[0].split, Split::Val);
}

#[test]
fn slake_bad_entries_name_entry_and_field() {
    let dir = slake_fixture();
    let loaded = slake::load(dir.path(), Split::Test, &slake::SlakeOptions::default()).unwrap();
    assert_eq!(loaded.items.len(), 1);
    assert_eq!(loaded.skipped, 2);
    let missing_field = loaded.problems[0].to_string();
    assert!(
        missing_field.contains("test.json (entry 1)"),
        "{missing_field}"
    );
    assert!(
        missing_field.contains("missing field `question`"),
        "{missing_field}"
    );
    assert!(matches!(
        &loaded.problems[1],
        DatasetError::MissingImage { at, field, .. } if at.entry() == Some(2) && field == "img_name"
    ));
}

#[test]
fn iu_xray_selects_view_and_reports_short_entries() {
    let dir = copy_fixture("iu_xray");
    let images = dir.path().join("images");
    for study in ["CXR2384_IM-0942", "CXR1898_IM-0581", "CXR2637_IM-1122"] {
        for view in ["0.png", "1.png"] {
            write_png(&gray_image(12, 12), &images.join(study).join(view));
        }
    }
    let annotation = dir.path().join("annotation.json");
    let frontal = iu_xray::load(&annotation, &images, Split::Train, &Default::default()).unwrap();
    assert_eq!(frontal.items.len(), 2);
    let r = &frontal.items[0];
    assert_eq!(r.id, "iu-xray-CXR2384_IM-0942");
    assert_eq!(r.image, images.join("CXR2384_IM-0942/0.png"));
    assert_eq!(r.answer_type, AnswerType::Report);
    assert!(r
        .answer
        .starts_with("The heart size and pulmonary vascularity"));
    assert_eq!(
        frontal.items[1].answer,
        "Heart size is normal. There is a small left upper lobe nodule."
    );

    let lateral_options = iu_xray::IuXrayOptions {
        view: 1,
        ..Default::default()
    };
    let lateral = iu_xray::load(&annotation, &images, Split::Train, &lateral_options).unwrap();
    assert_eq!(lateral.items.len(), 1);
    assert_eq!(lateral.items[0].image, images.join("CXR2384_IM-0942/1.png"));
    assert_eq!(lateral.skipped, 1);
    let msg = lateral.problems[0].to_string();
    assert!(
        msg.contains("train[1].image_path[1]") && msg.contains("only 1 image path"),
        "{msg}"
    );

    let test = iu_xray::load(&annotation, &images, Split::Test, &Default::default()).unwrap();
    assert_eq!(test.skipped, 1, "test image files were not generated");
}

#[test]
fn jsonl_round_trip_and_bad_lines_name_line_and_field() {
    let dir = common::TempDir::new("jsonl");
    let path = dir.path().join("records.jsonl");
    let record = Record {
        id: "r1".into(),
        image: "a.png".into(),
        question: "Is there a lesion?".into(),
        answer: "yes".into(),
        answer_type: AnswerType::Closed,
        mask: None,
        concept: Some("lesion".into()),
        split: Split::Train,
        meta: Default::default(),
    };
    write_jsonl(&path, [&record, &record]).unwrap();
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("\n{\"id\": \"r2\", oops}\n");
    text.push_str(
        &serde_json::to_string(&record)
            .unwrap()
            .replace("\"closed\"", "\"maybe\""),
    );
    text.push('\n');
    std::fs::write(&path, text).unwrap();

    let loaded = read_jsonl::<Record>(&path, BadRecordPolicy::Skip).unwrap();
    assert_eq!(loaded.items, vec![record.clone(), record]);
    assert_eq!(loaded.skipped, 2);
    let syntax = loaded.problems[0].to_string();
    assert!(syntax.contains("records.jsonl:4"), "{syntax}");
    let variant = loaded.problems[1].to_string();
    assert!(
        variant.contains("records.jsonl:5") && variant.contains("field `answer_type`"),
        "{variant}"
    );
    assert!(variant.contains("unknown variant `maybe`"), "{variant}");

    let err = read_jsonl::<Record>(&path, BadRecordPolicy::Stop).unwrap_err();
    assert!(
        matches!(err, DatasetError::Stopped { accepted: 2, .. }),
        "{err}"
    );
}

#[test]
fn iter_jsonl_streams_lines_with_errors_in_place() {
    let dir = common::TempDir::new("iter-jsonl");
    let path = dir.path().join("samples.jsonl");
    let good = r#"{"record_id":"a","question":"q","answer":"yes"}"#;
    std::fs::write(
        &path,
        format!("{good}\n\n{{\"record_id\":\"b\"}}\n{good}\n"),
    )
    .unwrap();
    let items: Vec<_> = firempo_datasets::iter_jsonl::<firempo_datasets::Sample>(&path)
        .unwrap()
        .collect();
    assert_eq!(items.len(), 3);
    assert_eq!(items[0].as_ref().unwrap().record_id, "a");
    let err = items[1].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("samples.jsonl:3") && err.contains("missing field `question`"),
        "{err}"
    );
    assert!(items[2].is_ok());
}
