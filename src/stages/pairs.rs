//! `firempo pairs`: minimal-edit preference pairs from on-policy samples and ground truth, with
//! lesion-corrupted images (rule editor, or an OpenAI-compatible judge).

use std::path::{Path, PathBuf};

use anyhow::Context;
use firempo_datasets::pairs::{
    build_pairs, Editor, JudgeConfig, JudgeEditor, PairOptions, RuleEditor,
};
use firempo_datasets::{read_jsonl, BadRecordPolicy, CorruptionConfig, Sample};
use serde::{Deserialize, Serialize};

use super::data::read_records;

/// Settings of the pair-building stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairsStage {
    /// Records with the ground truth (the file the samples were drawn from).
    pub records: PathBuf,
    /// On-policy samples (JSONL from `firempo sample`).
    pub samples: PathBuf,
    /// Output folder: `pairs.jsonl`, `corrupted/`, `previews/`, `pair_failures.jsonl`.
    pub out: PathBuf,
    /// Lesion corruption settings (`None`: pairs without corrupted images).
    pub corruption: Option<CorruptionConfig>,
    /// Write a side-by-side preview PNG per pair.
    pub previews: bool,
    /// Correct answers with an OpenAI-compatible judge (needed for free-text answers and
    /// reports); `None`: the deterministic rule editor (closed and short open answers).
    pub judge: Option<JudgeConfig>,
}

/// What the stage wrote.
#[derive(Debug, Clone)]
pub struct PairsSummary {
    /// Pairs written.
    pub pairs: usize,
    /// Samples that gave no pair (see `pair_failures.jsonl`).
    pub skipped: usize,
    /// Lines of the samples file that could not be read (also in `pair_failures.jsonl`).
    pub unreadable_samples: usize,
    /// The first failure (an unreadable samples line or a sample that gave no pair), if any.
    pub first_failure: Option<String>,
    /// The failures file.
    pub failures_path: PathBuf,
    /// Count per construction branch.
    pub branches: Vec<(String, usize)>,
    /// Count per corruption path.
    pub corruption_paths: Vec<(String, usize)>,
    /// The pairs file.
    pub path: PathBuf,
}

impl PairsStage {
    /// Builds the pairs with the rule editor or the judge.
    pub fn run(&self) -> anyhow::Result<PairsSummary> {
        let editor: Box<dyn Editor> = match &self.judge {
            Some(judge) => Box::new(JudgeEditor::new(judge.clone())?),
            None => Box::new(RuleEditor::default()),
        };
        let data = read_records(&self.records, BadRecordPolicy::Skip, None)?;
        let samples = read_jsonl::<Sample>(&self.samples, BadRecordPolicy::Skip)
            .with_context(|| format!("reading samples from {}", self.samples.display()))?;
        // Absolute roots: the pairs file then names images that any later stage can open. A bare
        // file name (`--records train.jsonl`) has the empty parent: the current folder.
        let root = if data.root.as_os_str().is_empty() {
            Path::new(".")
        } else {
            data.root.as_path()
        };
        let dataset_root = std::path::absolute(root)
            .with_context(|| format!("resolving the records' folder {}", root.display()))?;
        anyhow::ensure!(
            !self.out.as_os_str().is_empty(),
            "the output folder (--out) is empty; fix: name a folder, e.g. --out runs/pairs"
        );
        let out_dir = std::path::absolute(&self.out)
            .with_context(|| format!("resolving the output folder {}", self.out.display()))?;
        let options = PairOptions {
            dataset_root,
            out_dir,
            corruption: self.corruption.clone(),
            previews: self.previews,
            policy: BadRecordPolicy::Skip,
            unreadable_samples: samples.problems.iter().map(ToString::to_string).collect(),
        };
        let report = build_pairs(&samples.items, &data.records, editor.as_ref(), &options)?;
        let first_failure = options
            .unreadable_samples
            .first()
            .cloned()
            .or_else(|| report.problems.first().map(ToString::to_string));
        Ok(PairsSummary {
            pairs: report.pairs.len(),
            skipped: report.skipped,
            unreadable_samples: report.unreadable_samples,
            first_failure,
            failures_path: options.out_dir.join("pair_failures.jsonl"),
            branches: report.branches.into_iter().collect(),
            corruption_paths: report.corruption_paths.into_iter().collect(),
            path: report.pairs_path,
        })
    }
}
