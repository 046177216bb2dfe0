//! `firempo convert`: a public dataset (SLAKE, VQA-RAD, IU-Xray in the R2Gen layout) as firempo
//! records, one JSONL per split. The input paths are made absolute first, so the loaders write
//! absolute image and mask paths and the JSONL can live anywhere.

use std::path::{Path, PathBuf};

use anyhow::Context;
use firempo_datasets::iu_xray::{self, IuXrayOptions};
use firempo_datasets::slake::{self, SlakeOptions};
use firempo_datasets::{vqa_rad, write_jsonl, BadRecordPolicy, LoadOptions, Loaded, Record, Split};

/// Records of one split, and the problems of the records that were skipped.
struct SplitRecords {
    split: Split,
    records: Vec<Record>,
    problems: Vec<String>,
}

impl SplitRecords {
    fn new(split: Split, loaded: Loaded<Record>) -> Self {
        Self {
            split,
            records: loaded.items,
            problems: loaded.problems.iter().map(ToString::to_string).collect(),
        }
    }
}

/// The public formats `convert` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SourceFormat {
    /// SLAKE: the folder with `train.json`, `validation.json`, `test.json` and `imgs/`.
    Slake,
    /// VQA-RAD: `VQA_RAD Dataset Public.json` (the `test_*` phrase types form the test split).
    VqaRad,
    /// IU-Xray, R2Gen layout: `annotation.json` with train/val/test arrays.
    IuXray,
}

/// Settings of the conversion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertStage {
    /// Source format.
    pub format: SourceFormat,
    /// SLAKE: its root folder; VQA-RAD: the question JSON; IU-Xray: `annotation.json`.
    pub input: PathBuf,
    /// Image folder (VQA-RAD default: `VQA_RAD Image Folder` beside the JSON; IU-Xray default:
    /// `images` beside `annotation.json`; SLAKE always uses `imgs/` in its root).
    pub images: Option<PathBuf>,
    /// Output folder: `train.jsonl`, `val.jsonl`, `test.jsonl` (splits with records).
    pub out: PathBuf,
    /// SLAKE question language (`q_lang`); `None` keeps all languages.
    pub language: Option<String>,
    /// Skip and count bad records, or stop at the first.
    pub policy: BadRecordPolicy,
}

/// What one split of the conversion wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertedSplit {
    /// The split.
    pub split: Split,
    /// Records written.
    pub records: usize,
    /// Bad records skipped.
    pub skipped: usize,
    /// The first skipped record's problem, if any.
    pub first_problem: Option<String>,
    /// The JSONL written (`None` when the split had no records).
    pub path: Option<PathBuf>,
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("{} does not exist", path.display()))
}

impl ConvertStage {
    fn images_dir(&self, input: &Path, default_folder: &str) -> anyhow::Result<PathBuf> {
        let dir = self.images.clone().unwrap_or_else(|| {
            input
                .parent()
                .unwrap_or(Path::new("."))
                .join(default_folder)
        });
        absolute(&dir).context("the image folder (set it with --images)")
    }

    /// Loads every split of the source.
    fn load(&self) -> anyhow::Result<Vec<SplitRecords>> {
        let input = absolute(&self.input)?;
        let load = LoadOptions {
            policy: self.policy,
            ..LoadOptions::default()
        };
        match self.format {
            SourceFormat::Slake => {
                let options = SlakeOptions {
                    language: self.language.clone(),
                    load,
                };
                let mut splits = Vec::new();
                for split in Split::ALL {
                    if slake::split_file(&input, split).is_file() {
                        let loaded = slake::load(&input, split, &options)?;
                        splits.push(SplitRecords::new(split, loaded));
                    }
                }
                anyhow::ensure!(
                    !splits.is_empty(),
                    "{} has none of train.json, validation.json, test.json; give SLAKE's root folder",
                    input.display()
                );
                Ok(splits)
            }
            SourceFormat::VqaRad => {
                let images = self.images_dir(&input, "VQA_RAD Image Folder")?;
                let all = SplitRecords::new(Split::Train, vqa_rad::load(&input, &images, load)?);
                let (test, train): (Vec<Record>, Vec<Record>) = all
                    .records
                    .into_iter()
                    .partition(|r| r.split == Split::Test);
                // Bad records have no split; they are reported with the training split.
                Ok(vec![
                    SplitRecords {
                        split: Split::Train,
                        records: train,
                        problems: all.problems,
                    },
                    SplitRecords {
                        split: Split::Test,
                        records: test,
                        problems: Vec::new(),
                    },
                ])
            }
            SourceFormat::IuXray => {
                let images = self.images_dir(&input, "images")?;
                let options = IuXrayOptions {
                    load,
                    ..IuXrayOptions::default()
                };
                Split::ALL
                    .into_iter()
                    .map(|split| {
                        let loaded = iu_xray::load(&input, &images, split, &options)?;
                        Ok(SplitRecords::new(split, loaded))
                    })
                    .collect()
            }
        }
    }

    /// Converts and writes the records; returns what each split got.
    pub fn run(&self) -> anyhow::Result<Vec<ConvertedSplit>> {
        let splits = self.load()?;
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("creating {}", self.out.display()))?;
        let mut summary = Vec::new();
        for split in splits {
            let path = (!split.records.is_empty())
                .then(|| self.out.join(format!("{}.jsonl", split.split.name())));
            if let Some(path) = &path {
                write_jsonl(path, &split.records)?;
            }
            summary.push(ConvertedSplit {
                split: split.split,
                records: split.records.len(),
                skipped: split.problems.len(),
                first_problem: split.problems.into_iter().next(),
                path,
            });
        }
        anyhow::ensure!(
            summary.iter().any(|s| s.records > 0),
            "no usable records in {}{}",
            self.input.display(),
            summary
                .iter()
                .find_map(|s| s.first_problem.as_ref())
                .map(|p| format!("; first problem: {p}"))
                .unwrap_or_default()
        );
        Ok(summary)
    }
}
