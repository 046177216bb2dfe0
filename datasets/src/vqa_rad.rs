//! VQA-RAD (Lau et al. 2018, `VQA_RAD Dataset Public.json`): a JSON array of entries with
//! `qid`, `image_name`, `question`, `answer` (string or number), `answer_type` (`CLOSED`/`OPEN`),
//! `phrase_type` (`freeform`, `para`, `test_freeform`, `test_para`), `image_organ`, … Images live
//! in one folder (`VQA_RAD Image Folder/`). The usual split: `test_*` phrase types are the test set.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::error::{DatasetError, Location};
use crate::intake::{Intake, LoadOptions, Loaded};
use crate::json_array::{
    closed_or_open, into_entries, parse_entry, present_fields, read_json, require_file,
    required_scalar,
};
use crate::records::{Record, Split};

/// The fields of a VQA-RAD entry that firempo reads (others are ignored).
#[derive(Debug, Deserialize)]
struct Entry {
    qid: Value,
    image_name: String,
    question: String,
    answer: Value,
    answer_type: String,
    #[serde(default)]
    phrase_type: Option<String>,
    #[serde(default)]
    question_type: Option<String>,
    #[serde(default)]
    image_organ: Option<String>,
}

/// Loads VQA-RAD's question file, resolving images against `images_dir`.
///
/// Record ids are `vqa-rad-<qid>`; `meta` keeps `qid`, `phrase_type`, `question_type` and
/// `image_organ`. No masks: corruption falls back to whole-image noise unless masks are added.
pub fn load(
    json_path: &Path,
    images_dir: &Path,
    options: LoadOptions,
) -> Result<Loaded<Record>, DatasetError> {
    let entries = into_entries(json_path, read_json(json_path)?)?;
    let mut intake = Intake::new(options.policy);
    for (index, value) in entries.into_iter().enumerate() {
        intake.take(convert(json_path, images_dir, index, value, options))?;
    }
    Ok(intake.finish())
}

fn convert(
    path: &Path,
    images_dir: &Path,
    index: usize,
    value: Value,
    options: LoadOptions,
) -> Result<Record, DatasetError> {
    let at = Location::at_entry(path, index);
    let entry: Entry = parse_entry(
        path,
        index,
        value,
        "each entry needs qid, image_name, question, answer and answer_type",
    )?;
    let qid = required_scalar(&at, "qid", &entry.qid)?;
    let answer = required_scalar(&at, "answer", &entry.answer)?;
    let answer_type = closed_or_open(&at, &entry.answer_type)?;
    let id = format!("vqa-rad-{qid}");
    let image = images_dir.join(&entry.image_name);
    if options.check_images {
        require_file(at, &id, "image_name", &image)?;
    }
    let split = match &entry.phrase_type {
        Some(p) if p.starts_with("test") => Split::Test,
        _ => Split::Train,
    };
    let meta = present_fields([
        ("qid", Some(qid)),
        ("phrase_type", entry.phrase_type),
        ("question_type", entry.question_type),
        ("image_organ", entry.image_organ),
    ]);
    Ok(Record {
        id,
        image,
        question: entry.question.trim().to_string(),
        answer,
        answer_type,
        mask: None,
        concept: None,
        split,
        meta,
    })
}
