//! Corrupting whole datasets: for each record, load its mask (if any), write the corrupted PNG and
//! optionally a preview, and record the corruption path taken (the CLI's "look at what was done").

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::corruption::{write_corruption, CorruptionConfig, CorruptionPath};
use crate::error::{DatasetError, Location};
use crate::image::image_dimensions;
use crate::intake::{BadRecordPolicy, Intake, Loaded};
use crate::mask::Mask;
use crate::records::Record;
use crate::rng::fnv1a;

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

/// Corrupts one record's image into `out_dir/corrupted/<name>` (and `out_dir/previews/<name>`
/// when `previews`), `name` = [`corrupted_file_name`]`(file_key)`: distinct keys (pair ids) get
/// distinct files. The noise is keyed by the record id.
pub fn corrupt_record(
    record: &Record,
    dataset_root: &Path,
    config: &CorruptionConfig,
    out_dir: &Path,
    file_key: &str,
    previews: bool,
) -> Result<CorruptedRecord, DatasetError> {
    let image = record.image_path(dataset_root);
    if !image.exists() {
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
            let (width, height) = image_dimensions(&image)?;
            Some(Mask::load(source, dataset_root, width, height)?)
        }
    };
    let file = corrupted_file_name(file_key);
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
    let mut keys = UniqueIds::new(records.iter().map(|r| r.id.as_str()));
    for record in records {
        let key = keys.next(&record.id);
        intake.take(corrupt_record(
            record,
            dataset_root,
            config,
            out_dir,
            &key,
            previews,
        ))?;
    }
    let loaded = intake.finish();
    crate::jsonl::write_jsonl(&out_dir.join("corruptions.jsonl"), &loaded.items)?;
    Ok(loaded)
}

/// Hands out unique keys for items named by ids that may repeat: an id's first use gets the id
/// itself, later uses `<id>-<n>` with the smallest `n >= 1` that no reserved id and no earlier key
/// took (so record `a` used twice and a record `a-1` never share a key).
#[derive(Debug, Default)]
pub(crate) struct UniqueIds {
    /// Reserved ids and every key handed out.
    taken: HashSet<String>,
    /// Keys handed out.
    handed: HashSet<String>,
}

impl UniqueIds {
    /// Reserves `ids` for their own first use.
    pub(crate) fn new<'a>(ids: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            taken: ids.into_iter().map(str::to_string).collect(),
            handed: HashSet::new(),
        }
    }

    /// The next unique key for `id`.
    pub(crate) fn next(&mut self, id: &str) -> String {
        let key = if self.handed.contains(id) {
            (1..)
                .map(|n| format!("{id}-{n}"))
                .find(|key| !self.taken.contains(key))
                .expect("finitely many keys are taken")
        } else {
            id.to_string()
        };
        self.taken.insert(key.clone());
        self.handed.insert(key.clone());
        key
    }
}

/// The file name of an id's corrupted image (and preview): `<escaped id>-<hash>.png`.
///
/// The escaped id keeps ASCII letters, digits, `-` and `.` and writes every other byte as `_xx`
/// (hex), so it reads like the id and two ids never escape alike (`x/y` → `x_2fy`, `x_y` →
/// `x_5fy`); the 16 hex digits of a hash of the exact id keep names apart where the escape alone
/// would not: ids differing only in case on a case-insensitive disk, and ids too long for a file
/// name, whose escape is cut at 96 bytes.
pub fn corrupted_file_name(id: &str) -> String {
    const KEEP: usize = 96;
    let mut stem = String::new();
    for byte in id.bytes() {
        if stem.len() >= KEEP {
            break;
        }
        if byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'.' {
            stem.push(char::from(byte));
        } else {
            stem.push_str(&format!("_{byte:02x}"));
        }
    }
    format!("{stem}-{:016x}.png", fnv1a(id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_ids_get_keys_no_other_id_has() {
        let mut keys = UniqueIds::new(["a", "a-1", "b"]);
        let got: Vec<String> = ["a", "a", "a-1", "a", "b", "a-1"]
            .iter()
            .map(|id| keys.next(id))
            .collect();
        assert_eq!(got, ["a", "a-2", "a-1", "a-3", "b", "a-1-1"]);
    }

    #[test]
    fn file_names_keep_ids_apart_and_readable() {
        let names: Vec<String> = ["x/y", "x_y", "a-1", "a", "A", ".."]
            .iter()
            .map(|id| corrupted_file_name(id))
            .collect();
        let lower: std::collections::HashSet<String> =
            names.iter().map(|n| n.to_lowercase()).collect();
        assert_eq!(lower.len(), names.len(), "{names:?}");
        assert!(names[0].starts_with("x_2fy-") && names[1].starts_with("x_5fy-"));
        assert_eq!(
            corrupted_file_name("synth-train-00003-presence"),
            "synth-train-00003-presence-ad846a190628ef20.png",
            "stable across runs and versions"
        );
        assert!(names
            .iter()
            .all(|n| !n.contains('/') && n.ends_with(".png")));
        let long = corrupted_file_name(&"é".repeat(500));
        assert!(long.len() < 200, "{}", long.len());
        assert_ne!(long, corrupted_file_name(&"é".repeat(501)));
    }
}
