//! Corrupting whole datasets: for each record, load its mask (if any), write the corrupted PNG and
//! optionally a preview, and record the corruption path taken (the CLI's "look at what was done").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::corruption::{write_corruption, CorruptionConfig, CorruptionPath};
use crate::error::{DatasetError, Location};
use crate::image::load_image;
use crate::intake::{BadRecordPolicy, Intake, Loaded};
use crate::mask::Mask;
use crate::records::Record;

/// One corrupted record, as listed in `corruptions.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorruptedRecord {
    /// The record.
    pub record_id: String,
    /// Clean image path.
    pub image: PathBuf,
    /// Corrupted PNG written.
    pub corrupted_image: PathBuf,
    /// Preview PNG written, if asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PathBuf>,
    /// What was done.
    pub corruption: CorruptionPath,
}

/// Corrupts one record's image into `out_dir/corrupted/<file_stem>.png` (and
/// `out_dir/previews/<file_stem>.png` when `previews`). The noise is keyed by the record id.
pub fn corrupt_record(
    record: &Record,
    dataset_root: &Path,
    config: &CorruptionConfig,
    out_dir: &Path,
    file_stem: &str,
    previews: bool,
) -> Result<CorruptedRecord, DatasetError> {
    let image = record.image_path(dataset_root);
    if !image.is_file() {
        return Err(DatasetError::MissingImage {
            at: Location::file(&image),
            record: record.id.clone(),
            field: "image".into(),
            file: image,
        });
    }
    let mask = match &record.mask {
        None => None,
        Some(source) => {
            let probe = load_image(&image)?;
            Some(Mask::load(
                source,
                dataset_root,
                probe.width(),
                probe.height(),
            )?)
        }
    };
    let file = format!("{}.png", sanitize(file_stem));
    let corrupted_image = out_dir.join("corrupted").join(&file);
    let preview = previews.then(|| out_dir.join("previews").join(&file));
    let corruption = write_corruption(
        &image,
        mask.as_ref(),
        config,
        &record.id,
        &corrupted_image,
        preview.as_deref(),
    )?;
    Ok(CorruptedRecord {
        record_id: record.id.clone(),
        image,
        corrupted_image,
        preview,
        corruption,
    })
}

/// Corrupts every record and writes `out_dir/corruptions.jsonl`; bad records are skipped and
/// counted, or stop the run, as `policy` says.
pub fn corrupt_records(
    records: &[Record],
    dataset_root: &Path,
    config: &CorruptionConfig,
    out_dir: &Path,
    previews: bool,
    policy: BadRecordPolicy,
) -> Result<Loaded<CorruptedRecord>, DatasetError> {
    config.validate()?;
    let mut intake = Intake::new(policy);
    for record in records {
        intake.take(corrupt_record(
            record,
            dataset_root,
            config,
            out_dir,
            &record.id,
            previews,
        ))?;
    }
    let loaded = intake.finish();
    crate::jsonl::write_jsonl(&out_dir.join("corruptions.jsonl"), &loaded.items)?;
    Ok(loaded)
}

/// A file-name-safe version of an id.
pub(crate) fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}
