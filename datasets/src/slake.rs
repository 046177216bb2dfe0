//! SLAKE (Liu et al. 2021): `train.json`, `validation.json`, `test.json`, each a JSON array of
//! entries with `img_id`, `img_name` (`xmlab102/source.jpg`), `question`, `answer`, `q_lang`
//! (`en`/`zh`), `answer_type` (`OPEN`/`CLOSED`), `location`, `modality`, `content_type`, … Images
//! live under `imgs/xmlabN/` with `source.jpg`, `mask.png` (organ segmentation) and
//! `detection.json` (organ boxes: `[{"Liver": [x, y, width, height]}, …]`).
//!
//! Mask choice per question: if the question names organs listed in `detection.json`, the mask is
//! those organs' boxes and the concept is the organ; otherwise the image's `mask.png`, if present.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::error::{DatasetError, Location};
use crate::intake::{Intake, LoadOptions, Loaded};
use crate::json_array::{
    closed_or_open, into_entries, parse_entry, present_fields, read_json, require_file,
    required_scalar,
};
use crate::records::{BoxRegion, MaskSource, Record, Split};

/// The fields of a SLAKE entry that firempo reads (others are ignored).
#[derive(Debug, Deserialize)]
struct Entry {
    img_id: Value,
    img_name: String,
    question: String,
    answer: Value,
    q_lang: String,
    answer_type: String,
    #[serde(default)]
    qid: Option<Value>,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    modality: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

/// SLAKE loading options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlakeOptions {
    /// Keep only questions in this language (`q_lang`, e.g. `"en"`); `None` keeps all.
    pub language: Option<String>,
    /// Bad-record policy and image checks.
    pub load: LoadOptions,
}

impl Default for SlakeOptions {
    fn default() -> Self {
        Self {
            language: Some("en".into()),
            load: LoadOptions::default(),
        }
    }
}

/// The question file of a split inside the SLAKE root.
pub fn split_file(root: &Path, split: Split) -> PathBuf {
    root.join(match split {
        Split::Train => "train.json",
        Split::Val => "validation.json",
        Split::Test => "test.json",
    })
}

/// Loads one SLAKE split from its root folder (the one holding `train.json` and `imgs/`).
///
/// Record ids are `slake-<qid>` (or `slake-<img_id>-<entry>` without `qid`). Entries in other
/// languages are left out without counting as bad.
pub fn load(
    root: &Path,
    split: Split,
    options: &SlakeOptions,
) -> Result<Loaded<Record>, DatasetError> {
    let path = split_file(root, split);
    let entries = into_entries(&path, read_json(&path)?)?;
    let mut detections = HashMap::new();
    let mut intake = Intake::new(options.load.policy);
    for (index, value) in entries.into_iter().enumerate() {
        let keep = match &options.language {
            Some(lang) => value.get("q_lang").and_then(Value::as_str) == Some(lang.as_str()),
            None => true,
        };
        if keep {
            let record = convert(&path, root, split, index, value, options, &mut detections);
            intake.take(record)?;
        }
    }
    Ok(intake.finish())
}

fn convert(
    path: &Path,
    root: &Path,
    split: Split,
    index: usize,
    value: Value,
    options: &SlakeOptions,
    detections: &mut HashMap<PathBuf, Vec<BoxRegion>>,
) -> Result<Record, DatasetError> {
    let at = Location::at_entry(path, index);
    let entry: Entry = parse_entry(
        path,
        index,
        value,
        "each entry needs img_id, img_name, question, answer, q_lang and answer_type",
    )?;
    let img_id = required_scalar(&at, "img_id", &entry.img_id)?;
    let answer = required_scalar(&at, "answer", &entry.answer)?;
    let qid = match &entry.qid {
        Some(q) => Some(required_scalar(&at, "qid", q)?),
        None => None,
    };
    let answer_type = closed_or_open(&at, &entry.answer_type)?;
    let id = match &qid {
        Some(q) => format!("slake-{q}"),
        None => format!("slake-{img_id}-{index}"),
    };
    let image = root.join("imgs").join(&entry.img_name);
    if options.load.check_images {
        require_file(at.clone(), &id, "img_name", &image)?;
    }
    let image_dir = image.parent().map(Path::to_path_buf).unwrap_or_default();
    let boxes = match detections.get(&image_dir) {
        Some(boxes) => boxes.clone(),
        None => {
            let boxes = read_detection(&image_dir.join("detection.json"))?;
            detections.insert(image_dir.clone(), boxes.clone());
            boxes
        }
    };
    let (mask, concept) = choose_mask(&entry.question, &boxes, &image_dir);
    let meta = present_fields([
        ("img_id", Some(img_id)),
        ("q_lang", Some(entry.q_lang)),
        ("qid", qid),
        ("location", entry.location),
        ("modality", entry.modality),
        ("content_type", entry.content_type),
    ]);
    Ok(Record {
        id,
        image,
        question: entry.question.trim().to_string(),
        answer,
        answer_type,
        mask,
        concept,
        split,
        meta,
    })
}

/// Organ boxes of one image; a missing `detection.json` means no boxes.
pub fn read_detection(path: &Path) -> Result<Vec<BoxRegion>, DatasetError> {
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let value = read_json(path)?;
    let entries = into_entries(path, value)?;
    let mut boxes = Vec::new();
    for (index, entry) in entries.iter().enumerate() {
        let bad = |message: String| DatasetError::Parse {
            at: Location::at_entry(path, index),
            field: "<organ>".into(),
            message,
            hint: "each entry is {\"Organ\": [x, y, width, height]}".into(),
        };
        let object = entry
            .as_object()
            .ok_or_else(|| bad("expected an object".into()))?;
        for (organ, coords) in object {
            let numbers: Vec<f32> = coords
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_f64)
                        .map(|v| v as f32)
                        .collect()
                })
                .unwrap_or_default();
            let [x, y, width, height] = numbers[..] else {
                return Err(bad(format!(
                    "`{organ}` must be [x, y, width, height], found {coords}"
                )));
            };
            boxes.push(BoxRegion {
                x,
                y,
                width,
                height,
                label: Some(organ.clone()),
            });
        }
    }
    Ok(boxes)
}

fn choose_mask(
    question: &str,
    boxes: &[BoxRegion],
    image_dir: &Path,
) -> (Option<MaskSource>, Option<String>) {
    let words = normalized_words(question);
    let named: Vec<BoxRegion> = boxes
        .iter()
        .filter(|b| {
            let organ = normalized_words(b.label.as_deref().unwrap_or(""));
            !organ.is_empty() && words.windows(organ.len()).any(|w| w == organ.as_slice())
        })
        .cloned()
        .collect();
    if let Some(first) = named.first() {
        let concept = first.label.clone();
        return (Some(MaskSource::Boxes { boxes: named }), concept);
    }
    let png = image_dir.join("mask.png");
    if png.is_file() {
        (Some(MaskSource::Png { path: png }), None)
    } else {
        (None, None)
    }
}

fn normalized_words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}
