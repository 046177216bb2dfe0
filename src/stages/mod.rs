//! The pipeline's stages as functions over files: each reads its inputs from disk and writes its
//! outputs, so any stage can be rerun or inspected alone (`firempo <stage> --help`).

pub mod align;
pub mod convert;
pub mod data;
pub mod decoders;
pub mod demo;
pub mod eval;
pub mod forward;
pub mod held_out;
pub mod pairs;
pub mod sample;
pub mod sft;

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::AutodiffBackend;
use firempo_models::precision::WeightDType;

use crate::pipeline::base_model::{BaseModel, BASE_FILE};
use crate::pipeline::file_processor::FileProcessor;
use crate::pipeline::model::Model;
use crate::pipeline::model_dir::{save_adapter_only_dir, save_model_dir};
use crate::train::storage::explain_write_failure;
use crate::train::{train, Objective, RunIdentity, TrainerConfig};

/// Whether `dtype` is f32 (the default, left out of run identities so runs from before `--dtype`
/// still resume).
pub(crate) fn is_f32(dtype: &WeightDType) -> bool {
    !dtype.is_half()
}

/// How a trained model directory holds its weights.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightsOutput {
    /// All weights, adapters merged, in `model.mpk`: a self-contained directory.
    Merged,
    /// The LoRA adapters alone (`adapter/`) and a reference to the starting model (`base.json`).
    AdapterOnly(BaseModel),
}

impl WeightsOutput {
    /// What a run writes: adapter-only for a LoRA run from a model directory unless `merge`;
    /// merged weights otherwise (full fine-tuning, or a start that is not a directory).
    /// `--merge` without LoRA is refused: there is nothing to merge.
    pub fn choose(lora: bool, merge: bool, base: Option<&Path>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            lora || !merge,
            "--merge applies to LoRA runs (their adapters are merged into the written model);              full fine-tuning writes all weights anyway; fix: drop --merge"
        );
        Ok(match (lora && !merge, base) {
            (true, Some(dir)) => Self::AdapterOnly(BaseModel::of(dir)?),
            _ => Self::Merged,
        })
    }
}

/// Trains `model` on `objective` (checkpoints and metrics in `out/run`) and writes the result as
/// a model directory at `out`, its weights as `weights` says; LoRA adapters are always written
/// alone, in PEFT format, to `out/adapter` (small enough to share for a 7B model). `what` names
/// the stage in errors; `identity` what defines the run (checked on `--resume`).
#[allow(clippy::too_many_arguments)]
pub fn train_into_model_dir<B, T>(
    what: &str,
    trainer: &TrainerConfig,
    objective: &T,
    model: Model<B>,
    processor: &FileProcessor,
    out: &Path,
    resume: bool,
    identity: &RunIdentity,
    weights: &WeightsOutput,
    device: &B::Device,
) -> anyhow::Result<PathBuf>
where
    B: AutodiffBackend,
    T: Objective<B, Model = Model<B>>,
{
    let run_dir = out.join("run");
    let outcome = train(
        trainer, objective, model, &run_dir, resume, identity, device,
    )?;
    anyhow::ensure!(
        !outcome.interrupted,
        "{what} interrupted at step {}; rerun with --resume",
        outcome.steps_done
    );
    if outcome.model.lora().is_some() {
        let adapter = out.join("adapter");
        outcome
            .model
            .save_adapter(&adapter)
            .with_context(|| format!("writing the LoRA adapters to {}", adapter.display()))?;
    }
    let partial = out.join(".model.partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing the stale {}", partial.display()))?;
    }
    let written = match weights {
        WeightsOutput::Merged => save_model_dir(&partial, &outcome.model.merge_lora(), processor),
        WeightsOutput::AdapterOnly(base) => {
            save_adapter_only_dir(&partial, &outcome.model.config(), processor, base)
        }
    };
    written.map_err(|e| explain_write_failure(out, "the trained model", format!("{e:#}")))?;
    publish_model_dir(&partial, out)?;
    Ok(out.to_path_buf())
}

/// Moves a complete model directory written in `partial` into `out`, `model.json` last, so a
/// model directory that has `model.json` is always whole (a crash in between leaves no
/// `model.json`: the loader says the directory is incomplete, and `--resume` writes it again).
/// The other way of holding weights (`model.mpk` or `base.json`), left in `out` by an earlier
/// run, is removed first: it would shadow or contradict this one.
fn publish_model_dir(partial: &Path, out: &Path) -> anyhow::Result<()> {
    const LAST: &str = "model.json";
    let marker = out.join(LAST);
    if marker.exists() {
        std::fs::remove_file(&marker).with_context(|| format!("replacing {}", marker.display()))?;
    }
    let mut names: Vec<_> = std::fs::read_dir(partial)
        .with_context(|| format!("listing {}", partial.display()))?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    for stale in ["model.mpk", BASE_FILE] {
        let path = out.join(stale);
        if path.is_file() && !names.iter().any(|name| name == stale) {
            std::fs::remove_file(&path).with_context(|| format!("replacing {}", path.display()))?;
        }
    }
    names.sort_by_key(|name| name == LAST);
    for name in names {
        let (from, to) = (partial.join(&name), out.join(&name));
        if to.is_dir() {
            std::fs::remove_dir_all(&to).with_context(|| format!("replacing {}", to.display()))?;
        }
        std::fs::rename(&from, &to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    std::fs::remove_dir(partial).with_context(|| format!("removing {}", partial.display()))?;
    Ok(())
}
