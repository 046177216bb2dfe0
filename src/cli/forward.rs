//! `firempo forward`: run a checkpoint on a Hugging Face processor's tensors and write (and
//! optionally compare) its logits; see [`crate::stages::forward`].

use std::path::PathBuf;

use clap::Args;
use firempo_models::WeightDType;

use crate::backend::{run_on, BackendKind};
use crate::stages::forward::{ForwardReport, ForwardStage};

/// `firempo forward`: one forward pass, logits to a safetensors file.
#[derive(Debug, Clone, Args)]
pub struct ForwardArgs {
    /// The model: a HuggingFace checkpoint directory (config.json + safetensors: llava-hf LLaVA,
    /// original-layout LLaVA, Qwen2-VL, Qwen2.5-VL) or a firempo model directory. No tokenizer
    /// or image-processor files are needed.
    #[arg(long)]
    pub model: PathBuf,
    /// A PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply.
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// The processor's tensors: `input_ids` [batch, seq] (original LLaVA: with -200 image
    /// placeholders, or expanded), optional `attention_mask` [batch, seq], `pixel_values`
    /// ([n_images, C, H, W]; Qwen-VL: [n_patches, C·T·p·p] with `image_grid_thw` [n_images, 3]).
    /// Other tensors are listed and not read.
    #[arg(long)]
    pub inputs: PathBuf,
    /// Original-LLaVA checkpoints (LLaVA-Med, HuatuoGPT-Vision): the CLIP vision tower directory,
    /// instead of the one the checkpoint's `mm_vision_tower` names.
    #[arg(long)]
    pub vision_tower: Option<PathBuf>,
    /// Output safetensors file with `logits` (f32, [batch, seq, vocab]).
    #[arg(long, default_value = "logits.safetensors")]
    pub out: PathBuf,
    /// Replace `--out` if it exists (by default an existing file is refused, never overwritten).
    #[arg(long)]
    pub overwrite: bool,
    /// A safetensors file with reference `logits` (e.g. transformers' on the same inputs): prints
    /// the largest |difference| per row over attended positions and fails above `--tolerance`.
    #[arg(long)]
    pub compare: Option<PathBuf>,
    /// Largest |difference| `--compare` accepts (f32 on CPU reaches ~1e-5 on small models).
    #[arg(long, default_value_t = 1e-4)]
    pub tolerance: f32,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
    /// Dtype of the decoder's frozen projection weights: `bf16` or `f16` halve their memory
    /// (norms, softmax and the logits stay f32); needs `--backend flex`, `wgpu` or `cuda`
    /// (ndarray is f32-only). bf16 moves logits by ~1 % of their scale: raise `--tolerance`.
    #[arg(long, default_value_t = WeightDType::F32)]
    pub dtype: WeightDType,
}

/// Runs `firempo forward`.
pub fn run(args: ForwardArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.overwrite || !args.out.exists(),
        "{} exists; pick another --out or pass --overwrite to replace it",
        args.out.display()
    );
    anyhow::ensure!(
        args.tolerance.is_finite() && args.tolerance >= 0.0,
        "--tolerance {} must be a finite number ≥ 0",
        args.tolerance
    );
    let stage = ForwardStage {
        model: args.model,
        adapter: args.adapter,
        vision_tower: args.vision_tower,
        inputs: args.inputs,
        out: args.out.clone(),
        compare: args.compare,
        dtype: args.dtype,
    };
    let report = run_on(args.backend, stage)?;
    print_report(&report, &args.out);
    let worst = report.max_abs_diff();
    anyhow::ensure!(
        report.comparison.is_none() || worst <= args.tolerance,
        "the logits differ from the reference by up to {worst:e}, above --tolerance {:e}",
        args.tolerance
    );
    Ok(())
}

fn print_report(report: &ForwardReport, out: &std::path::Path) {
    println!(
        "logits {:?} written to {}",
        report.logits_shape,
        out.display()
    );
    if !report.not_read.is_empty() {
        println!("not read from --inputs: {}", report.not_read.join(", "));
    }
    for row in report.comparison.iter().flatten() {
        println!(
            "row {}: max |Δ logit| {:e} over {} attended positions",
            row.row, row.max_abs_diff, row.positions
        );
    }
}
