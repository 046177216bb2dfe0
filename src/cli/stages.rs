//! Arguments of the pipeline stages (`synth`, `sft`, `align`) and their conversion to stage
//! settings. Every computing stage takes `--backend`.

use std::path::PathBuf;

use clap::Args;
use firempo_datasets::synth::{generate, SynthConfig};
use firempo_datasets::{AnswerType, CorruptionConfig, CorruptionMode, JudgeConfig};
use firempo_models::{LoraConfig, PROMPT_FORMATS};

use super::owned_dir::claim_output_dir;
use super::LossArgs;
use crate::backend::{run_on, BackendKind};
use crate::stages::align::AlignStage;
use crate::stages::demo::{Demo, DemoSizes};
use crate::stages::eval::{EvalStage, AVG_METRICS};
use crate::stages::pairs::PairsStage;
use crate::stages::sample::SampleStage;
use crate::stages::sft::{ModelSource, SftStage};
use crate::train::{interrupt, TrainerConfig};

/// `firempo synth`: the synthetic lesion benchmark.
#[derive(Debug, Clone, Args)]
pub struct SynthArgs {
    /// Output folder (train/val/test JSONL, images, masks).
    #[arg(long, default_value = "runs/synth")]
    pub out: PathBuf,
    /// Seed (same seed, byte-identical output).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Training images.
    #[arg(long, default_value_t = 1000)]
    pub train: usize,
    /// Validation images.
    #[arg(long, default_value_t = 200)]
    pub val: usize,
    /// Test images.
    #[arg(long, default_value_t = 200)]
    pub test: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 64)]
    pub image_size: u32,
    /// Range of lesion peak brightness over the lung, 0–255 levels, as MIN,MAX (the default is
    /// deliberately faint; the demo uses 250,255).
    #[arg(long, value_name = "MIN,MAX", value_delimiter = ',', default_values_t = SynthConfig::default().contrast)]
    pub contrast: Vec<f32>,
    /// Pixel noise σ, 0–255 levels (the demo uses 0).
    #[arg(long, default_value_t = SynthConfig::default().noise_sigma)]
    pub noise_sigma: f32,
}

/// Runs `firempo synth`.
pub fn synth(args: SynthArgs) -> anyhow::Result<()> {
    let &[low, high] = args.contrast.as_slice() else {
        anyhow::bail!(
            "--contrast takes two values, MIN,MAX (e.g. 250,255); got {:?}",
            args.contrast
        );
    };
    let config = SynthConfig {
        seed: args.seed,
        n_train: args.train,
        n_val: args.val,
        n_test: args.test,
        image_size: args.image_size,
        contrast: [low, high],
        noise_sigma: args.noise_sigma,
        ..SynthConfig::default()
    };
    let summary = generate(&config, &args.out)?;
    for split in &summary.splits {
        println!(
            "{:<5} {:>5} images {:>6} records ({} with lesions) -> {}",
            split.split.name(),
            split.images,
            split.records,
            split.with_lesions,
            args.out.join(&split.records_path).display()
        );
    }
    Ok(())
}

/// Optimization flags shared by the training stages.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Optimizer steps.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Micro-batches accumulated per optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Peak AdamW learning rate.
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: usize,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm.
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Checkpoint every N steps (0: only at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Keep the newest N checkpoints and remove older ones (0: keep all). A LoRA run's
    /// checkpoints hold only the adapters and optimizer state.
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Seed of initialization, data order and dropout.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Continue the interrupted run in --out.
    #[arg(long)]
    pub resume: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
}

impl TrainArgs {
    fn trainer(&self, default_lr: f64) -> TrainerConfig {
        TrainerConfig {
            steps: self.steps,
            micro_batch_size: self.batch,
            grad_accum: self.grad_accum,
            lr: self.lr.unwrap_or(default_lr),
            warmup_steps: self.warmup,
            weight_decay: self.weight_decay,
            max_grad_norm: Some(self.max_grad_norm),
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            seed: self.seed,
            ..TrainerConfig::default()
        }
    }
}

/// LoRA flags shared by the training stages.
#[derive(Debug, Clone, Args)]
pub struct LoraArgs {
    /// LoRA rank; 0 trains all weights (full fine-tuning). Default: 0 for `sft`, 8 for `align`.
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha / rank).
    #[arg(long, default_value_t = 16.0)]
    pub lora_alpha: f64,
    /// LoRA dropout.
    #[arg(long, default_value_t = 0.0)]
    pub lora_dropout: f64,
}

impl LoraArgs {
    /// The adapters to train, `None` for full fine-tuning.
    fn config(&self, default_rank: usize) -> Option<LoraConfig> {
        let rank = self.lora_rank.unwrap_or(default_rank);
        (rank > 0).then(|| LoraConfig {
            rank,
            alpha: self.lora_alpha,
            dropout: self.lora_dropout,
            ..LoraConfig::default()
        })
    }
}

/// `firempo sft`: supervised fine-tuning.
#[derive(Debug, Clone, Args)]
pub struct SftArgs {
    /// Training records (firempo JSONL, e.g. runs/synth/train.jsonl).
    #[arg(long)]
    pub records: PathBuf,
    /// Output model directory.
    #[arg(long, default_value = "runs/sft")]
    pub out: PathBuf,
    /// Starting model: `demo` (tiny VLM from scratch), a firempo model directory, or a
    /// HuggingFace LLaVA checkpoint directory (config.json, safetensors, tokenizer.json,
    /// preprocessor_config.json).
    #[arg(long, default_value = "demo")]
    pub model: String,
    /// Use at most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Freeze the vision tower and projector (pretrained checkpoints, as in the paper; the demo
    /// also freezes its random tower, which trained from scratch stopped carrying the image).
    #[arg(long)]
    pub freeze_vision: bool,
    #[command(flatten)]
    pub lora: LoraArgs,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub prompt: PromptFormatArgs,
}

/// `--prompt-format`, for the stages that take `--model`.
#[derive(Debug, Clone, Args)]
pub struct PromptFormatArgs {
    /// Prompt format of a HuggingFace checkpoint `--model`, instead of its chat template (needed
    /// when it ships none); written into the output model directory.
    #[arg(long, value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(PROMPT_FORMATS))]
    pub prompt_format: Option<String>,
}

/// Runs `firempo sft`.
pub fn sft(args: SftArgs) -> anyhow::Result<()> {
    let stage = SftStage {
        records: args.records,
        out: args.out,
        model: if args.model == "demo" {
            ModelSource::Demo
        } else {
            ModelSource::Dir(args.model.into())
        },
        limit: args.limit,
        freeze_vision: args.freeze_vision,
        lora: args.lora.config(0),
        trainer: args.train.trainer(3e-3),
        resume: args.train.resume,
        prompt_format: args.prompt.prompt_format,
    };
    interrupt::install_ctrl_c_handler();
    let out = run_on(args.train.backend, stage)?;
    println!("SFT model written to {}", out.display());
    Ok(())
}

/// `firempo align`: preference alignment.
#[derive(Debug, Clone, Args)]
pub struct AlignArgs {
    /// Preference pairs (JSONL written by `firempo pairs`).
    #[arg(long)]
    pub pairs: PathBuf,
    /// Folder the pairs' image paths are relative to (default: the pairs file's folder).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Model to align: a firempo model directory (the SFT output) or a HuggingFace LLaVA
    /// checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Output model directory.
    #[arg(long, default_value = "runs/align")]
    pub out: PathBuf,
    #[command(flatten)]
    pub loss: LossArgs,
    #[command(flatten)]
    pub lora: LoraArgs,
    /// Train the vision tower and projector too (frozen by default, as in the paper).
    #[arg(long)]
    pub train_vision: bool,
    /// Off-policy baseline: use the ground-truth answers of this records file as y+.
    #[arg(long, value_name = "RECORDS")]
    pub ground_truth_chosen: Option<PathBuf>,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub prompt: PromptFormatArgs,
}

/// Runs `firempo align`.
pub fn align(args: AlignArgs) -> anyhow::Result<()> {
    let lora = args.lora.config(8);
    let stage = AlignStage {
        pairs: args.pairs,
        root: args.root,
        model: args.model,
        out: args.out,
        loss: args.loss.to_loss()?,
        lora,
        freeze_vision: !args.train_vision,
        ground_truth_chosen: args.ground_truth_chosen,
        trainer: args.train.trainer(1e-3),
        resume: args.train.resume,
        prompt_format: args.prompt.prompt_format,
    };
    interrupt::install_ctrl_c_handler();
    let out = run_on(args.train.backend, stage)?;
    println!("aligned model written to {}", out.display());
    Ok(())
}

/// `firempo sample`: on-policy greedy answers.
#[derive(Debug, Clone, Args)]
pub struct SampleArgs {
    /// Records to answer (e.g. runs/synth/train.jsonl).
    #[arg(long)]
    pub records: PathBuf,
    /// Model (the policy): a firempo model directory, e.g. the SFT output, or a HuggingFace
    /// LLaVA checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Output samples JSONL.
    #[arg(long, default_value = "runs/samples.jsonl")]
    pub out: PathBuf,
    /// Answer at most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Only these answer types, comma-separated (closed, open, report); default: all.
    #[arg(long, value_delimiter = ',')]
    pub answer_types: Option<Vec<String>>,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub prompt: PromptFormatArgs,
}

/// Parses answer-type names (`closed`, `open`, `report`).
fn answer_types(names: &[String]) -> anyhow::Result<Vec<AnswerType>> {
    names
        .iter()
        .map(|name| {
            serde_json::from_value(serde_json::Value::String(name.trim().to_lowercase())).map_err(
                |_| anyhow::anyhow!("unknown answer type `{name}`: use closed, open or report"),
            )
        })
        .collect()
}

/// Runs `firempo sample`.
pub fn sample(args: SampleArgs) -> anyhow::Result<()> {
    let stage = SampleStage {
        records: args.records,
        model: args.model,
        out: args.out.clone(),
        limit: args.limit,
        answer_types: args.answer_types.as_deref().map(answer_types).transpose()?,
        batch: args.batch,
        max_new_tokens: args.max_new_tokens,
        prompt_format: args.prompt.prompt_format,
    };
    let count = run_on(args.backend, stage)?;
    println!("{count} samples written to {}", args.out.display());
    Ok(())
}

/// `firempo pairs`: minimal-edit preference pairs with lesion-corrupted images.
#[derive(Debug, Clone, Args)]
pub struct PairsArgs {
    /// Records with the ground truth (the file the samples answer).
    #[arg(long)]
    pub records: PathBuf,
    /// On-policy samples JSONL (from `firempo sample`).
    #[arg(long)]
    pub samples: PathBuf,
    /// Output folder (pairs.jsonl, corrupted/, previews/, pair_failures.jsonl).
    #[arg(long, default_value = "runs/pairs")]
    pub out: PathBuf,
    /// Corruption: lesion (paper), image-noise, crop, black-out, or none.
    #[arg(long, default_value = "lesion")]
    pub corruption: String,
    /// Seed of the corruption noise.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Write a side-by-side preview PNG per pair (original | mask | corrupted).
    #[arg(long)]
    pub previews: bool,
    /// Succeed even when no pair could be built (by default that is an error, with the reasons in
    /// pair_failures.jsonl).
    #[arg(long)]
    pub allow_failures: bool,
    #[command(flatten)]
    pub judge: JudgeArgs,
}

/// The judge editor: an OpenAI-compatible `/chat/completions` endpoint that finds and corrects
/// the wrong spans of free-text answers (the rule editor handles closed and short answers).
#[derive(Debug, Clone, Args)]
pub struct JudgeArgs {
    /// Endpoint base URL, e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1 (vLLM);
    /// without it the rule editor builds the pairs.
    #[arg(long)]
    pub judge_url: Option<String>,
    /// Model name sent to the judge.
    #[arg(long, default_value = "gpt-4o-mini")]
    pub judge_model: String,
    /// Environment variable holding the judge's API key (`none`: no key).
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub judge_api_key_env: String,
    /// Folder caching the judge's replies (reruns cost nothing).
    #[arg(long)]
    pub judge_cache: Option<PathBuf>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub judge_concurrency: usize,
    /// Retries per request after the first attempt.
    #[arg(long, default_value_t = 3)]
    pub judge_retries: u32,
    /// Seconds one judge request may take before it counts as failed (and is retried).
    #[arg(long, value_name = "SECONDS", default_value_t = JudgeConfig::default().timeout_secs)]
    pub judge_timeout: f64,
    /// Stop with an error after this many judge requests in a row failed (the endpoint is down
    /// or misconfigured); 0 never stops.
    #[arg(long, value_name = "N", default_value_t = JudgeConfig::default().max_consecutive_failures)]
    pub judge_max_failures: usize,
}

impl JudgeArgs {
    fn config(&self) -> Option<JudgeConfig> {
        let base_url = self.judge_url.clone()?;
        Some(JudgeConfig {
            base_url,
            model: self.judge_model.clone(),
            api_key_env: (self.judge_api_key_env != "none").then(|| self.judge_api_key_env.clone()),
            cache_dir: self.judge_cache.clone(),
            concurrency: self.judge_concurrency,
            max_retries: self.judge_retries,
            timeout_secs: self.judge_timeout,
            max_consecutive_failures: self.judge_max_failures,
            ..JudgeConfig::default()
        })
    }
}

/// Parses a corruption mode name (`none` → no corrupted images).
pub fn corruption_config(name: &str, seed: u64) -> anyhow::Result<Option<CorruptionConfig>> {
    if name == "none" {
        return Ok(None);
    }
    let mode: CorruptionMode = serde_json::from_value(serde_json::Value::String(
        name.replace('-', "_"),
    ))
    .map_err(|_| {
        anyhow::anyhow!(
            "unknown corruption `{name}`: use lesion, image-noise, crop, black-out or none"
        )
    })?;
    Ok(Some(CorruptionConfig {
        mode,
        seed,
        ..CorruptionConfig::default()
    }))
}

/// Runs `firempo pairs`.
pub fn pairs(args: PairsArgs) -> anyhow::Result<()> {
    let stage = PairsStage {
        records: args.records,
        samples: args.samples,
        out: args.out,
        corruption: corruption_config(&args.corruption, args.seed)?,
        previews: args.previews,
        judge: args.judge.config(),
    };
    let summary = stage.run()?;
    println!(
        "{} pairs written to {} ({} samples skipped, {} unreadable sample lines; branches {:?}; \
         corruption {:?})",
        summary.pairs,
        summary.path.display(),
        summary.skipped,
        summary.unreadable_samples,
        summary.branches,
        summary.corruption_paths
    );
    if summary.pairs == 0 && !args.allow_failures {
        anyhow::bail!(
            "no pair could be built ({} samples skipped, {} unreadable sample lines; reasons in \
             {}); first: {}; fix: correct the samples or the editor (or pass --allow-failures)",
            summary.skipped,
            summary.unreadable_samples,
            summary.failures_path.display(),
            summary
                .first_failure
                .as_deref()
                .unwrap_or("the samples file holds no samples")
        );
    }
    Ok(())
}

/// `firempo eval`: metrics of a model on test records.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// Test records (e.g. runs/synth/test.jsonl).
    #[arg(long)]
    pub records: PathBuf,
    /// Model: a firempo model directory or a HuggingFace LLaVA checkpoint directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Output folder (eval.json, predictions.jsonl, corrupted/).
    #[arg(long, default_value = "runs/eval")]
    pub out: PathBuf,
    /// Evaluate at most this many records.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompts decoded together.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Longest answer in tokens.
    #[arg(long, default_value_t = 32)]
    pub max_new_tokens: usize,
    /// Seed of the lesion corruption used by the visual-sensitivity probe.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Words report findings are parsed with, for finding_f1: a JSON file `{"sides": [...],
    /// "zones": [...], "lesion_words": [...], "negations": [...]}`, or `synthetic` for the
    /// synthetic benchmark's template. Default: `synthetic` for records written by `firempo
    /// synth` (a synth.json beside them), else finding_f1 is not computed.
    #[arg(long)]
    pub finding_vocabulary: Option<PathBuf>,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
    #[command(flatten)]
    pub prompt: PromptFormatArgs,
}

/// Runs `firempo eval`.
pub fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let stage = EvalStage {
        records: args.records,
        model: args.model,
        out: args.out.clone(),
        limit: args.limit,
        batch: args.batch,
        max_new_tokens: args.max_new_tokens,
        corruption: CorruptionConfig {
            seed: args.seed,
            ..CorruptionConfig::default()
        },
        finding_vocabulary: args.finding_vocabulary,
        prompt_format: args.prompt.prompt_format,
    };
    let report = run_on(args.backend, stage)?;
    for (name, value) in &report.metrics {
        println!("{name:<14} {value:>8.2}");
    }
    if !report.avg_of.is_empty() {
        println!("avg = mean of {}", report.avg_of.join(", "));
    }
    for note in &report.notes {
        println!("note: {note}");
    }
    println!(
        "details: {}/eval.json, {}/predictions.jsonl",
        args.out.display(),
        args.out.display()
    );
    Ok(())
}

/// `firempo demo`: the whole pipeline on synthetic data.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Output folder.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// Toy sizes (under two minutes; what the tests run).
    #[arg(long)]
    pub quick: bool,
    /// Number of seeds (the table shows mean ± std when > 1).
    #[arg(long, default_value_t = 1)]
    pub seeds: usize,
    /// First seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
}

/// Runs `firempo demo`.
pub fn demo(args: DemoArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.seeds > 0, "--seeds must be at least 1");
    let demo = Demo {
        out: args.out,
        sizes: if args.quick {
            DemoSizes::quick()
        } else {
            DemoSizes::full()
        },
        seeds: (args.seed..args.seed + args.seeds as u64).collect(),
    };
    let removed = claim_output_dir(&demo.out, "demo", &demo.output_entries())?;
    if !removed.is_empty() {
        println!("replacing the previous demo in {}", demo.out.display());
    }
    let started = std::time::Instant::now();
    let outcome = run_on(args.backend, demo)?;
    println!("\n{}", outcome.table.to_markdown(2));
    println!(
        "closed_acc, open_recall, finding_f1, rouge_l, avg: % (higher is better); avg = mean of {} \
         (those measured); answer_change: % of answers that change when the lesion is corrupted; \
         logp_drop: nats the answer loses then (higher = more visually grounded).",
        AVG_METRICS.join(", ")
    );
    for file in &outcome.files {
        println!("wrote {}", file.display());
    }
    println!("total time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
