//! `base.json`: what an adapter-only model directory was trained from.
//!
//! A LoRA run changes only its adapters, so by default its model directory holds those (PEFT
//! format, `adapter/`) and a reference to the starting model instead of a merged copy of all
//! weights (26 GiB for a 7B model in f32). Loading such a directory loads the base, checks it is
//! the model the adapters were trained on (a digest of its files), attaches the adapters and
//! merges them. `--merge` writes the merged weights instead (a self-contained directory).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::Backend;
use firempo_models::loading::LoadOptions;
use serde::{Deserialize, Serialize};

use super::model::{Model, ModelConfig};

use crate::train::run_identity::model_dir_digest;

/// The file naming the base model in an adapter-only model directory.
pub const BASE_FILE: &str = "base.json";

/// How many adapter-only directories may stand on each other (a cycle ends here too).
const MAX_DEPTH: usize = 8;

/// Contents of `base.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BaseModel {
    /// The starting model directory (firempo or HF checkpoint), absolute.
    pub path: PathBuf,
    /// Its digest when training started (see [`model_dir_digest`]).
    pub digest: String,
}

impl BaseModel {
    /// The reference to `dir` as it is now.
    pub fn of(dir: &Path) -> anyhow::Result<Self> {
        let path = fs::canonicalize(dir)
            .with_context(|| format!("resolving the base model directory {}", dir.display()))?;
        let digest = model_dir_digest(&path)?;
        Ok(Self { path, digest })
    }

    /// Writes `dir/base.json`.
    pub fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let path = dir.join(BASE_FILE);
        fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// Reads `dir/base.json`, `None` when the directory has none.
    pub fn read(dir: &Path) -> anyhow::Result<Option<Self>> {
        let path = dir.join(BASE_FILE);
        if !path.is_file() {
            return Ok(None);
        }
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        let base =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(Some(base))
    }
}

/// The weights of adapter-only model directory `dir` (described by `config`, read from its
/// `model.json`): the base model's weights with `dir/adapter` attached and merged.
pub fn load_adapter_only<B: Backend>(
    dir: &Path,
    base: &BaseModel,
    config: &ModelConfig,
    device: &B::Device,
) -> anyhow::Result<Model<B>> {
    load_at_depth(dir, base, config, device, 0)
}

fn load_at_depth<B: Backend>(
    dir: &Path,
    base: &BaseModel,
    config: &ModelConfig,
    device: &B::Device,
    depth: usize,
) -> anyhow::Result<Model<B>> {
    anyhow::ensure!(
        depth < MAX_DEPTH,
        "{}: more than {MAX_DEPTH} adapter-only model directories stand on each other (or \
         their base.json files form a cycle); fix: rerun one of the trainings with --merge",
        dir.display()
    );
    let fix = format!(
        "fix: restore {} as it was, or retrain {} with --merge to get a self-contained model \
         directory",
        base.path.display(),
        dir.display()
    );
    anyhow::ensure!(
        base.path.is_dir(),
        "{} holds LoRA adapters for the base model {}, which is not there any more; {fix}",
        dir.display(),
        base.path.display()
    );
    let now = model_dir_digest(&base.path)?;
    anyhow::ensure!(
        now == base.digest,
        "{} holds LoRA adapters trained on {}, whose files have changed since (digest {} in \
         {BASE_FILE}, {} now); {fix}",
        dir.display(),
        base.path.display(),
        base.digest,
        now
    );
    let model = base_weights::<B>(&base.path, device, depth)?;
    anyhow::ensure!(
        model.config() == *config,
        "{}/model.json does not describe its base model {} (another architecture); {fix}",
        dir.display(),
        base.path.display()
    );
    let adapter = dir.join("adapter");
    let model = model
        .with_adapter_files(&adapter, device)
        .with_context(|| format!("attaching the adapters of {}", adapter.display()))?;
    Ok(model.merge_lora())
}

/// The (merged) weights of a base model directory: a firempo model directory, itself perhaps
/// adapter-only, or a HF checkpoint.
fn base_weights<B: Backend>(
    dir: &Path,
    device: &B::Device,
    depth: usize,
) -> anyhow::Result<Model<B>> {
    if dir.join("model.json").is_file() {
        let config = super::model_dir::read_model_config(dir)?;
        match BaseModel::read(dir)? {
            Some(base) => load_at_depth(dir, &base, &config, device, depth + 1),
            None => super::model_dir::load_record_weights(dir, &config, device),
        }
    } else {
        Model::load_hf(dir, &LoadOptions::default(), device)
            .with_context(|| format!("loading the base checkpoint {}", dir.display()))
    }
}
