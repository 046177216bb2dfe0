//! IU-Xray in the R2Gen layout (Chen et al. 2020): `annotation.json` is
//! `{"train": [...], "val": [...], "test": [...]}`, each entry `{id, report, image_path: [frontal,
//! lateral], split}` with image paths relative to the `images/` folder. Each study becomes one
//! report-generation record on the selected view.

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{DatasetError, Location};
use crate::intake::{Intake, LoadOptions, Loaded};
use crate::json_array::{parse_entry, read_json, require_file};
use crate::records::{AnswerType, Record, Split};

/// The fields of an R2Gen IU-Xray entry that firempo reads.
#[derive(Debug, Deserialize)]
struct Entry {
    id: String,
    report: String,
    image_path: Vec<String>,
}

/// IU-Xray loading options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IuXrayOptions {
    /// Which of `image_path` to use: 0 is the frontal view in R2Gen's ordering, 1 the lateral.
    pub view: usize,
    /// The report prompt stored as the record's question.
    pub prompt: String,
    /// Bad-record policy and image checks.
    pub load: LoadOptions,
}

impl Default for IuXrayOptions {
    fn default() -> Self {
        Self {
            view: 0,
            prompt: "Describe the findings of this chest X-ray.".into(),
            load: LoadOptions::default(),
        }
    }
}

/// Loads one split of an R2Gen `annotation.json`, images resolved against `images_dir`.
///
/// Record ids are `iu-xray-<id>`; no masks (METHOD.md: reports use whole-image noise).
pub fn load(
    annotation: &Path,
    images_dir: &Path,
    split: Split,
    options: &IuXrayOptions,
) -> Result<Loaded<Record>, DatasetError> {
    let root = read_json(annotation)?;
    let Some(Value::Array(entries)) = root.get(split.name()).cloned() else {
        return Err(DatasetError::Parse {
            at: Location::file(annotation),
            field: split.name().into(),
            message: format!("no `{}` array", split.name()),
            hint: "use R2Gen's annotation.json with train/val/test arrays".into(),
        });
    };
    let mut intake = Intake::new(options.load.policy);
    for (index, value) in entries.into_iter().enumerate() {
        intake.take(convert(
            annotation, images_dir, split, index, value, options,
        ))?;
    }
    Ok(intake.finish())
}

fn convert(
    path: &Path,
    images_dir: &Path,
    split: Split,
    index: usize,
    value: Value,
    options: &IuXrayOptions,
) -> Result<Record, DatasetError> {
    let at = Location::at_entry(path, index);
    let entry: Entry = parse_entry(
        path,
        index,
        value,
        "each entry needs id, report and image_path (a list of image paths)",
    )?;
    let field = format!("{}[{index}].image_path[{}]", split.name(), options.view);
    let Some(relative) = entry.image_path.get(options.view) else {
        return Err(DatasetError::Parse {
            at,
            field,
            message: format!("only {} image path(s)", entry.image_path.len()),
            hint: "choose a view index that exists (0 = frontal) or fix the entry".into(),
        });
    };
    let id = format!("iu-xray-{}", entry.id);
    let image = images_dir.join(relative);
    if options.load.check_images {
        require_file(at, &id, &field, &image)?;
    }
    let mut meta = Map::new();
    meta.insert("study".into(), Value::String(entry.id));
    meta.insert("view".into(), Value::from(options.view));
    Ok(Record {
        id,
        image,
        question: options.prompt.clone(),
        answer: entry.report.trim().to_string(),
        answer_type: AnswerType::Report,
        mask: None,
        concept: None,
        split,
        meta,
    })
}
