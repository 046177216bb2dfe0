//! The pipeline's stages as functions over files: each reads its inputs from disk and writes its
//! outputs, so any stage can be rerun or inspected alone (`firempo <stage> --help`).

pub mod align;
pub mod convert;
pub mod data;
pub mod demo;
pub mod eval;
pub mod pairs;
pub mod sample;
pub mod sft;

use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::module::Module;
use burn::tensor::backend::{AutodiffBackend, Backend};
use firempo_models::{save_adapter, Vlm};

use crate::pipeline::model_dir::save_model_dir;
use crate::pipeline::processor::Processor;
use crate::train::{train, Objective, TrainerConfig};

/// Freezes the vision tower and projector (no gradients), as the paper does for pretrained models.
pub fn freeze_vision<B: Backend>(mut model: Vlm<B>) -> Vlm<B> {
    model.vision = model.vision.map(|v| v.no_grad());
    model.projector = model.projector.map(|p| p.no_grad());
    model
}

/// Trains `model` on `objective` (checkpoints and metrics in `out/run`) and writes the result,
/// adapters merged, as a model directory at `out`; LoRA adapters are also written alone, in PEFT
/// format, to `out/adapter` (small enough to share for a 7B model). `what` names the stage in
/// errors.
#[allow(clippy::too_many_arguments)]
pub fn train_into_model_dir<B, T>(
    what: &str,
    trainer: &TrainerConfig,
    objective: &T,
    model: Vlm<B>,
    processor: &Processor,
    out: &Path,
    resume: bool,
    device: &B::Device,
) -> anyhow::Result<PathBuf>
where
    B: AutodiffBackend,
    T: Objective<B, Model = Vlm<B>>,
{
    let outcome = train(trainer, objective, model, &out.join("run"), resume, device)?;
    anyhow::ensure!(
        !outcome.interrupted,
        "{what} interrupted at step {}; rerun with --resume",
        outcome.steps_done
    );
    if outcome.model.lora.is_some() {
        let adapter = out.join("adapter");
        save_adapter(&outcome.model, &adapter, None)
            .with_context(|| format!("writing the LoRA adapters to {}", adapter.display()))?;
    }
    save_model_dir(out, &outcome.model.merge_lora(), processor)?;
    Ok(out.to_path_buf())
}
