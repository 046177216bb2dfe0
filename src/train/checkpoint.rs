//! Checkpoints: the trained parameters, optimizer state and the trainer's position, written
//! atomically, checksummed, pruned to the newest few.
//!
//! Layout of a run directory:
//! ```text
//! checkpoints/step-000050/{trainable.mpk, optimizer.mpk, state.json, checksums.json}
//! checkpoints/latest            # name of the newest complete checkpoint
//! ```
//! A checkpoint is written into `step-N.partial/` and renamed when complete, and `latest` is
//! replaced by rename, so a crash mid-write never leaves a checkpoint that looks complete. Only
//! the parameters that require gradients are stored (see [`super::trainable`]): a LoRA run's
//! checkpoint is its adapters. `checksums.json` holds the SHA-256 of every other file; a
//! checkpoint that fails it on load is skipped with a warning and the previous one is used.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::{AutodiffModule, Param};
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::Tensor;
use serde::{Deserialize, Serialize};

use super::run_identity::file_digest;
use super::storage::explain_write_failure;
use super::trainable::{restore_trainable, trainable_params, trainable_shapes};

/// Where the trainer stands; enough, with the weights and optimizer, to continue exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    /// Micro-batches consumed (the data position).
    pub micro_batches: usize,
    /// Seed of data order and per-step backend RNG.
    pub seed: u64,
    /// Total optimizer steps the run was configured for.
    pub total_steps: usize,
    /// Shapes of the stored trainable parameters, in module order.
    #[serde(default)]
    pub trainable_shapes: Vec<Vec<usize>>,
}

const CHECKSUMS: &str = "checksums.json";
const STEP_PREFIX: &str = "step-";

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// The checkpoints directory of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Saves the trainable parameters, optimizer and state as `checkpoints/step-<step>`, then keeps
/// only the newest `keep` checkpoints (0: all); returns its path.
pub fn save<B, M, O>(
    run_dir: &Path,
    model: &M,
    optimizer: &O,
    state: &TrainerState,
    keep: usize,
) -> anyhow::Result<PathBuf>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let dir = checkpoints_dir(run_dir);
    let name = format!("{STEP_PREFIX}{:06}", state.step);
    let partial = dir.join(format!("{name}.partial"));
    let done = dir.join(&name);
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("removing stale {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let trainable = trainable_params(model);
    let state = TrainerState {
        trainable_shapes: trainable.shapes,
        ..state.clone()
    };
    recorder()
        .record(trainable.params, partial.join("trainable"))
        .map_err(|e| explain_write_failure(&partial, "the trained parameters", e))?;
    recorder()
        .record(optimizer.to_record(), partial.join("optimizer"))
        .map_err(|e| explain_write_failure(&partial, "the optimizer state", e))?;
    fs::write(
        partial.join("state.json"),
        serde_json::to_string_pretty(&state)?,
    )
    .map_err(|e| explain_write_failure(&partial, "the trainer state", e))?;
    let checksums = checksums_of(&partial)?;
    fs::write(
        partial.join(CHECKSUMS),
        serde_json::to_string_pretty(&checksums)?,
    )
    .map_err(|e| explain_write_failure(&partial, "the checksums", e))?;
    if done.exists() {
        fs::remove_dir_all(&done)?;
    }
    fs::rename(&partial, &done)
        .with_context(|| format!("finalizing checkpoint {}", done.display()))?;
    let latest_tmp = dir.join("latest.tmp");
    fs::write(&latest_tmp, &name).map_err(|e| explain_write_failure(&dir, "`latest`", e))?;
    fs::rename(&latest_tmp, dir.join("latest"))?;
    prune(&dir, keep)?;
    Ok(done)
}

/// SHA-256 of every file of a checkpoint folder except the checksums themselves.
fn checksums_of(dir: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let mut sums = BTreeMap::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name != CHECKSUMS && entry.file_type()?.is_file() {
            sums.insert(name, file_digest(&entry.path())?);
        }
    }
    Ok(sums)
}

/// Why a checkpoint folder cannot be trusted, or `None` when every checksum matches.
fn damage(path: &Path) -> Option<String> {
    let listed = path.join(CHECKSUMS);
    let text = match fs::read_to_string(&listed) {
        Ok(text) => text,
        Err(e) => return Some(format!("{} cannot be read: {e}", listed.display())),
    };
    let expected: BTreeMap<String, String> = match serde_json::from_str(&text) {
        Ok(sums) => sums,
        Err(e) => return Some(format!("{} is damaged: {e}", listed.display())),
    };
    for (file, sum) in &expected {
        match file_digest(&path.join(file)) {
            Ok(found) if &found == sum => {}
            Ok(_) => return Some(format!("{file} does not match its checksum")),
            Err(e) => return Some(format!("{e:#}")),
        }
    }
    None
}

/// Complete checkpoint folders of a run, newest first.
fn complete_checkpoints(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut found: Vec<(usize, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let step = name
            .strip_prefix(STEP_PREFIX)
            .and_then(|digits| digits.parse::<usize>().ok());
        if let Some(step) = step {
            if entry.path().join("state.json").exists() {
                found.push((step, entry.path()));
            }
        }
    }
    found.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    Ok(found.into_iter().map(|(_, path)| path).collect())
}

/// Removes all but the newest `keep` complete checkpoints (`keep` 0: keeps all). Only folders
/// named `step-N` are touched: the trainer's own.
fn prune(dir: &Path, keep: usize) -> anyhow::Result<()> {
    if keep == 0 {
        return Ok(());
    }
    for old in complete_checkpoints(dir)?.into_iter().skip(keep) {
        fs::remove_dir_all(&old)
            .with_context(|| format!("pruning old checkpoint {}", old.display()))?;
    }
    Ok(())
}

/// The newest complete checkpoint of a run, if any (checksums not yet verified).
pub fn latest(run_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run_dir).join("latest");
    if pointer.exists() {
        let name = fs::read_to_string(&pointer)
            .with_context(|| format!("reading {}", pointer.display()))?;
        let path = checkpoints_dir(run_dir).join(name.trim());
        if path.join("state.json").exists() {
            return Ok(Some(path));
        }
    }
    // No pointer, or it names a checkpoint that is gone: the newest complete one, if any.
    Ok(complete_checkpoints(&checkpoints_dir(run_dir))?
        .into_iter()
        .next())
}

/// The newest checkpoint whose checksums match, newest first; each damaged one is reported with a
/// warning and skipped. An error when checkpoints exist but none is intact.
pub fn latest_intact(run_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let dir = checkpoints_dir(run_dir);
    let mut candidates = complete_checkpoints(&dir)?;
    if let Some(pointed) = latest(run_dir)? {
        candidates.retain(|c| c != &pointed);
        candidates.insert(0, pointed);
    }
    let mut problems = Vec::new();
    for candidate in &candidates {
        match damage(candidate) {
            None => return Ok(Some(candidate.clone())),
            Some(why) => {
                eprintln!(
                    "warning: checkpoint {} is damaged ({why}); trying the previous one",
                    candidate.display()
                );
                problems.push(format!("{}: {why}", candidate.display()));
            }
        }
    }
    anyhow::ensure!(
        problems.is_empty(),
        "every checkpoint of {} is damaged ({}); start a new run in another --out",
        run_dir.display(),
        problems.join("; ")
    );
    Ok(None)
}

/// Loads a checkpoint into `model` and `optimizer` (built as for a fresh run).
pub fn load<B, M, O>(
    path: &Path,
    model: M,
    optimizer: O,
    device: &B::Device,
) -> anyhow::Result<(M, O, TrainerState)>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let state_path = path.join("state.json");
    let state: TrainerState = serde_json::from_str(
        &fs::read_to_string(&state_path)
            .with_context(|| format!("reading {}", state_path.display()))?,
    )
    .with_context(|| format!("parsing {}", state_path.display()))?;
    let expected = trainable_shapes(&model);
    anyhow::ensure!(
        expected == state.trainable_shapes,
        "checkpoint {} holds {} trained parameters that do not fit this model's {} (first \
         difference: {}); resume with the model and LoRA settings the run started with",
        path.display(),
        state.trainable_shapes.len(),
        expected.len(),
        first_difference(&state.trainable_shapes, &expected)
    );
    let saved: Vec<Param<Tensor<B, 1>>> = recorder()
        .load(path.join("trainable"), device)
        .with_context(|| format!("loading the trained parameters from {}", path.display()))?;
    let optimizer_record = recorder()
        .load(path.join("optimizer"), device)
        .with_context(|| format!("loading optimizer state from {}", path.display()))?;
    Ok((
        restore_trainable(model, saved),
        optimizer.load_record(optimizer_record),
        state,
    ))
}

fn first_difference(saved: &[Vec<usize>], expected: &[Vec<usize>]) -> String {
    let index = saved
        .iter()
        .zip(expected)
        .position(|(a, b)| a != b)
        .unwrap_or(saved.len().min(expected.len()));
    format!(
        "parameter {index}: {:?} in the checkpoint vs {:?} in the model",
        saved.get(index),
        expected.get(index)
    )
}
