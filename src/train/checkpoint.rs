//! Checkpoints: model weights, optimizer state and the trainer's position, written atomically.
//!
//! Layout of a run directory:
//! ```text
//! checkpoints/step-000050/{model.mpk, optimizer.mpk, state.json}
//! checkpoints/latest            # name of the newest complete checkpoint
//! ```
//! A checkpoint is written into `step-N.partial/` and renamed when complete, and `latest` is
//! replaced by rename, so a crash mid-write never leaves a checkpoint that looks complete.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::optim::Optimizer;
use burn::record::{FullPrecisionSettings, NamedMpkFileRecorder, Recorder};
use burn::tensor::backend::AutodiffBackend;
use serde::{Deserialize, Serialize};

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
}

fn recorder() -> NamedMpkFileRecorder<FullPrecisionSettings> {
    NamedMpkFileRecorder::<FullPrecisionSettings>::new()
}

/// The checkpoints directory of a run.
pub fn checkpoints_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("checkpoints")
}

/// Saves model, optimizer and state as `checkpoints/step-<step>`; returns its path.
pub fn save<B, M, O>(
    run_dir: &Path,
    model: &M,
    optimizer: &O,
    state: &TrainerState,
) -> anyhow::Result<PathBuf>
where
    B: AutodiffBackend,
    M: AutodiffModule<B>,
    O: Optimizer<M, B>,
{
    let dir = checkpoints_dir(run_dir);
    let name = format!("step-{:06}", state.step);
    let partial = dir.join(format!("{name}.partial"));
    let done = dir.join(&name);
    if partial.exists() {
        fs::remove_dir_all(&partial)
            .with_context(|| format!("removing stale {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    recorder()
        .record(model.clone().into_record(), partial.join("model"))
        .with_context(|| format!("writing model weights to {}", partial.display()))?;
    recorder()
        .record(optimizer.to_record(), partial.join("optimizer"))
        .with_context(|| format!("writing optimizer state to {}", partial.display()))?;
    fs::write(
        partial.join("state.json"),
        serde_json::to_string_pretty(state)?,
    )?;
    if done.exists() {
        fs::remove_dir_all(&done)?;
    }
    fs::rename(&partial, &done)
        .with_context(|| format!("finalizing checkpoint {}", done.display()))?;
    let latest_tmp = dir.join("latest.tmp");
    fs::write(&latest_tmp, &name)?;
    fs::rename(&latest_tmp, dir.join("latest"))?;
    Ok(done)
}

/// The newest complete checkpoint of a run, if any.
pub fn latest(run_dir: &Path) -> anyhow::Result<Option<PathBuf>> {
    let pointer = checkpoints_dir(run_dir).join("latest");
    if !pointer.exists() {
        return Ok(None);
    }
    let name =
        fs::read_to_string(&pointer).with_context(|| format!("reading {}", pointer.display()))?;
    let path = checkpoints_dir(run_dir).join(name.trim());
    anyhow::ensure!(
        path.join("state.json").exists(),
        "{} names checkpoint {} which is incomplete or missing; delete the pointer to start over",
        pointer.display(),
        path.display()
    );
    Ok(Some(path))
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
    let model_record = recorder()
        .load(path.join("model"), device)
        .with_context(|| {
            format!(
                "loading model weights from {} (was it saved by a different model config?)",
                path.display()
            )
        })?;
    let optimizer_record = recorder()
        .load(path.join("optimizer"), device)
        .with_context(|| format!("loading optimizer state from {}", path.display()))?;
    Ok((
        model.load_record(model_record),
        optimizer.load_record(optimizer_record),
        state,
    ))
}
