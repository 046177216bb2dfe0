//! From on-policy samples and their records to preference pairs on disk: edit each sample, make
//! its lesion-corrupted image (or record the fallback), and write `pairs.jsonl`, the corrupted
//! images, optional side-by-side previews, and `pair_failures.jsonl` for samples that failed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Map;

use crate::corrupt_dataset::{corrupt_record, UniqueIds};
use crate::corruption::CorruptionConfig;
use crate::error::DatasetError;
use crate::intake::{BadRecordPolicy, Intake};
use crate::jsonl::write_jsonl;
use crate::pair::PreferencePair;
use crate::records::Record;
use crate::sample::Sample;

use super::{Edit, Editor};

/// Where pairs go and how their corrupted images are made.
#[derive(Debug, Clone)]
pub struct PairOptions {
    /// Root that relative record image and mask paths resolve against.
    pub dataset_root: PathBuf,
    /// Output folder: `pairs.jsonl`, `corrupted/`, `previews/`, `pair_failures.jsonl`.
    pub out_dir: PathBuf,
    /// Corruption settings; `None` writes pairs without corrupted images.
    pub corruption: Option<CorruptionConfig>,
    /// Whether to write a preview PNG (original | mask | corrupted) per pair.
    pub previews: bool,
    /// Skip-and-count or stop at the first failure.
    pub policy: BadRecordPolicy,
    /// The errors of samples-file lines that could not be read (the loader's report): listed
    /// first in `pair_failures.jsonl` and counted in [`PairReport::unreadable_samples`].
    pub unreadable_samples: Vec<String>,
}

/// What [`build_pairs`] did.
#[derive(Debug)]
pub struct PairReport {
    /// The pairs written to `pairs.jsonl`, in sample order.
    pub pairs: Vec<PreferencePair>,
    /// Samples that gave no pair.
    pub skipped: usize,
    /// Samples-file lines that could not be read (also in `pair_failures.jsonl`).
    pub unreadable_samples: usize,
    /// Why each skipped sample failed (also in `pair_failures.jsonl`).
    pub problems: Vec<DatasetError>,
    /// How many pairs took each branch.
    pub branches: BTreeMap<String, usize>,
    /// How many pairs took each corruption path.
    pub corruption_paths: BTreeMap<String, usize>,
    /// The JSONL file written.
    pub pairs_path: PathBuf,
}

/// One line of `pair_failures.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairFailure {
    /// The sample's record id; empty for a samples-file line that could not be read.
    pub record_id: String,
    /// The error, as text.
    pub error: String,
}

/// Builds pairs for `samples` (whose `record_id`s must be in `records`) with `editor`.
pub fn build_pairs(
    samples: &[Sample],
    records: &[Record],
    editor: &dyn Editor,
    options: &PairOptions,
) -> Result<PairReport, DatasetError> {
    let by_id: HashMap<&str, &Record> = records.iter().map(|r| (r.id.as_str(), r)).collect();
    let mut intake = Intake::new(options.policy);
    let failures_path = options.out_dir.join("pair_failures.jsonl");
    let mut failures: Vec<PairFailure> = options
        .unreadable_samples
        .iter()
        .map(|error| PairFailure {
            record_id: String::new(),
            error: error.clone(),
        })
        .collect();
    let mut found = Vec::new();
    for sample in samples {
        match by_id.get(sample.record_id.as_str()) {
            Some(record) => found.push((sample, *record)),
            None => {
                let err = DatasetError::Edit {
                    record: sample.record_id.clone(),
                    message: "no record with this id".into(),
                    hint: "pass the records file the samples were drawn from".into(),
                };
                failures.push(failure(&sample.record_id, &err));
                intake.take(Err::<PreferencePair, _>(err))?;
            }
        }
    }
    let edits = editor.edit_all(&found);
    if let Some(stopped) = editor.stopped() {
        for ((_, record), edit) in found.iter().zip(&edits) {
            if let Err(err) = edit {
                failures.push(failure(&record.id, err));
            }
        }
        write_jsonl(&failures_path, &failures)?;
        return Err(stopped);
    }
    // Pair ids are unique by construction (they name the corrupted image files too).
    let mut ids = UniqueIds::new(found.iter().map(|(_, record)| record.id.as_str()));
    let editor_name = editor.name();
    for ((sample, record), edit) in found.iter().zip(edits) {
        let id = ids.next(&record.id);
        let pair = edit.and_then(|edit| assemble(id, sample, record, edit, &editor_name, options));
        if let Err(err) = &pair {
            failures.push(failure(&record.id, err));
        }
        if let Err(err) = intake.take(pair) {
            write_jsonl(&failures_path, &failures)?;
            return Err(err);
        }
    }
    let loaded = intake.finish();
    let pairs_path = options.out_dir.join("pairs.jsonl");
    write_jsonl(&pairs_path, &loaded.items)?;
    write_jsonl(&failures_path, &failures)?;
    let mut branches = BTreeMap::new();
    let mut corruption_paths = BTreeMap::new();
    for pair in &loaded.items {
        *branches.entry(enum_name(&pair.branch)).or_default() += 1;
        let path = pair
            .corruption
            .map_or("none".to_string(), |p| enum_name(&p));
        *corruption_paths.entry(path).or_default() += 1;
    }
    Ok(PairReport {
        pairs: loaded.items,
        skipped: loaded.skipped,
        unreadable_samples: options.unreadable_samples.len(),
        problems: loaded.problems,
        branches,
        corruption_paths,
        pairs_path,
    })
}

fn failure(record_id: &str, err: &DatasetError) -> PairFailure {
    PairFailure {
        record_id: record_id.to_string(),
        error: err.to_string(),
    }
}

fn enum_name<T: Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn assemble(
    id: String,
    sample: &Sample,
    record: &Record,
    edit: Edit,
    editor: &str,
    options: &PairOptions,
) -> Result<PreferencePair, DatasetError> {
    let mut pair = PreferencePair {
        id,
        record_id: record.id.clone(),
        question: sample.question.clone(),
        answer_type: record.answer_type,
        chosen: edit.chosen,
        rejected: edit.rejected,
        chosen_spans: edit.chosen_spans,
        rejected_spans: edit.rejected_spans,
        branch: edit.branch,
        editor: editor.to_string(),
        image: record.image_path(&options.dataset_root),
        corrupted_image: None,
        corruption: None,
        meta: Map::new(),
    };
    // The same check as at load: an invalid pair is a failure, before any image is written.
    pair.validate().map_err(|reason| DatasetError::Edit {
        record: record.id.clone(),
        message: format!("the {editor} editor built an invalid pair: {reason}"),
        hint: "check the editor (a judge may have ignored the instructions)".into(),
    })?;
    if let Some(config) = &options.corruption {
        let done = corrupt_record(
            record,
            &options.dataset_root,
            config,
            &options.out_dir,
            &pair.id,
            options.previews,
        )?;
        pair.corrupted_image = Some(done.corrupted_image);
        pair.corruption = Some(done.corruption);
    }
    Ok(pair)
}
