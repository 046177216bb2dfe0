//! Arguments of the pipeline stages (`synth`, `sft`, `align`) and their conversion to stage
//! settings. Every computing stage takes `--backend`.

use std::path::PathBuf;

use clap::Args;
use firempo_datasets::synth::{generate, SynthConfig};
use firempo_datasets::{AnswerType, CorruptionConfig, CorruptionMode, JudgeConfig};
use firempo_models::precision::WeightDType;
use firempo_models::{LoraConfig, PROMPT_FORMATS};

use super::owned_dir::claim_output_dir;
use super::LossArgs;
use crate::backend::{run_on, BackendKind};
use crate::stages::align::AlignStage;
use crate::stages::demo::{Demo, DemoSizes};
use crate::stages::eval::{AnswerSampling, EvalStage, AVG_METRICS};
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

/// Optimization flags shared by the training stages. The flags that a stage (or `align
/// --preset`) defaults differently are options here, so an explicit flag can be told from a
/// default and always wins.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Optimizer steps. Default: 200 (`align --preset paper`: one epoch of the pairs).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Examples per micro-batch. Default: 8 (`--preset paper`: 1).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Micro-batches accumulated per optimizer step. Default: 1 (`--preset paper`: 8).
    #[arg(long)]
    pub grad_accum: Option<usize>,
    /// Peak AdamW learning rate (cosine decay to 0). Default: 3e-3 for `sft`, 1e-3 for `align`
    /// (`--preset paper`: 1e-6).
    #[arg(long)]
    pub lr: Option<f64>,
    /// Linear warmup steps. Default: 10 (`--preset paper`: 0).
    #[arg(long)]
    pub warmup: Option<usize>,
    /// AdamW weight decay. Default: 0.
    #[arg(long)]
    pub weight_decay: Option<f64>,
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
    /// Recompute each decoder layer's activations during the backward instead of keeping them:
    /// much less memory for about one more forward of compute, the same gradients (a resume may
    /// switch it). Needs LoRA dropout 0 (`--lora-dropout 0`, also with `--preset paper`).
    #[arg(long)]
    pub gradient_checkpointing: bool,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
    /// Data-parallel peers, one thread each: a count (`2`: on the CPU backends 2 peers sharing
    /// the CPU, on CUDA GPUs 0 and 1) or a GPU list (`cuda:0,cuda:1`, `wgpu:0,wgpu:1`). Each
    /// peer scores its share of every micro-batch; the update equals one device's on the whole
    /// batch. Needs the `distributed` feature; a resume needs the same number of peers.
    #[arg(long, default_value = "1", value_name = "N|DEVICES")]
    pub devices: crate::train::DeviceSpec,
    /// With --resume: go on with another number of peers (--devices) than the run had. The data
    /// order and position stay; the peers' dropout draws and the summation order change.
    #[arg(long)]
    pub reshard: bool,
    #[command(flatten)]
    pub dtype: DtypeArgs,
}

/// `--dtype`, for the stages that load a model.
#[derive(Debug, Clone, Args)]
pub struct DtypeArgs {
    /// Dtype of the decoder's frozen projection weights: `bf16`/`f16` halve their memory while
    /// LoRA adapters, their optimizer state, norms, softmax and losses stay f32. Default: bf16 on
    /// `--backend cuda` (f32 for full fine-tuning, which half precision refuses), else f32; half
    /// precision needs `--backend flex`, `wgpu` or `cuda`.
    #[arg(long, value_name = "f32|bf16|f16")]
    pub dtype: Option<WeightDType>,
}

impl DtypeArgs {
    /// The dtype asked for, or the default for `backend` (`trains_all_weights`: full fine-tuning).
    pub fn resolve(&self, backend: BackendKind, trains_all_weights: bool) -> WeightDType {
        self.dtype
            .unwrap_or(if backend == BackendKind::Cuda && !trains_all_weights {
                WeightDType::Bf16
            } else {
                WeightDType::F32
            })
    }
}

/// The optimization settings a stage (or preset) uses where no flag is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainDefaults {
    pub steps: usize,
    pub batch: usize,
    pub grad_accum: usize,
    pub lr: f64,
    pub warmup: usize,
    pub weight_decay: f64,
}

impl TrainDefaults {
    /// `sft`: full fine-tuning of the demo's tiny VLM.
    pub const SFT: Self = Self {
        steps: 200,
        batch: 8,
        grad_accum: 1,
        lr: 3e-3,
        warmup: 10,
        weight_decay: 0.0,
    };
    /// `align`: LoRA alignment at the demo's scale.
    pub const ALIGN: Self = Self {
        lr: 1e-3,
        ..Self::SFT
    };
    /// `align --preset paper`: the authors' optimization (METHOD.md, "What the authors' code
    /// does differently"): AdamW lr 1e-6, cosine, warmup 0, weight decay 0, global batch 8 as
    /// one pair per micro-batch accumulated 8 times. `steps` is unused: the preset trains one
    /// epoch of the pairs.
    pub const PAPER: Self = Self {
        steps: 0,
        batch: 1,
        grad_accum: 8,
        lr: 1e-6,
        warmup: 0,
        weight_decay: 0.0,
    };
}

impl TrainArgs {
    fn trainer(&self, defaults: &TrainDefaults) -> TrainerConfig {
        TrainerConfig {
            steps: self.steps.unwrap_or(defaults.steps),
            micro_batch_size: self.batch.unwrap_or(defaults.batch),
            grad_accum: self.grad_accum.unwrap_or(defaults.grad_accum),
            lr: self.lr.unwrap_or(defaults.lr),
            warmup_steps: self.warmup.unwrap_or(defaults.warmup),
            weight_decay: self.weight_decay.unwrap_or(defaults.weight_decay),
            max_grad_norm: Some(self.max_grad_norm),
            checkpoint_every: self.checkpoint_every,
            keep_checkpoints: self.keep_checkpoints,
            seed: self.seed,
            gradient_checkpointing: self.gradient_checkpointing,
            devices: self.devices.clone(),
            reshard: self.reshard,
            ..TrainerConfig::default()
        }
    }
}

/// LoRA flags shared by the training stages.
#[derive(Debug, Clone, Args)]
pub struct LoraArgs {
    /// LoRA rank; 0 trains all weights (full fine-tuning). Default: 0 for `sft`, 8 for `align`
    /// (`--preset paper`: 128).
    #[arg(long)]
    pub lora_rank: Option<usize>,
    /// LoRA alpha (the update is scaled by alpha / rank, or alpha / √rank with --use-rslora).
    /// Default: 16 (`--preset paper`: 256).
    #[arg(long)]
    pub lora_alpha: Option<f64>,
    /// LoRA dropout. Default: 0 (`--preset paper`: 0.05).
    #[arg(long)]
    pub lora_dropout: Option<f64>,
    /// rsLoRA (Kalajdzievski 2023; PEFT `use_rslora`): scale the update by alpha / √rank
    /// instead of alpha / rank. `--use-rslora=false` turns off what a preset turned on.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub use_rslora: Option<bool>,
    /// Write the merged model (all weights, self-contained) instead of the default for LoRA
    /// runs from a model directory: the adapters alone (`adapter/`, PEFT format) and `base.json`
    /// naming the starting model, which later stages load and merge.
    #[arg(long)]
    pub merge: bool,
}

/// The LoRA settings a stage (or preset) uses where no flag is given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraDefaults {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub use_rslora: bool,
}

impl LoraDefaults {
    /// `sft`: full fine-tuning unless `--lora-rank` is given.
    pub const SFT: Self = Self {
        rank: 0,
        alpha: 16.0,
        dropout: 0.0,
        use_rslora: false,
    };
    /// `align`: rank-8 adapters.
    pub const ALIGN: Self = Self {
        rank: 8,
        ..Self::SFT
    };
    /// `align --preset paper`: rsLoRA r128 / α256 (scale 256/√128 ≈ 22.6), dropout 0.05, on the
    /// LLM's attention and MLP projections (METHOD.md).
    pub const PAPER: Self = Self {
        rank: 128,
        alpha: 256.0,
        dropout: 0.05,
        use_rslora: true,
    };
}

impl LoraArgs {
    /// The adapters to train, `None` for full fine-tuning.
    fn config(&self, defaults: &LoraDefaults) -> Option<LoraConfig> {
        let rank = self.lora_rank.unwrap_or(defaults.rank);
        (rank > 0).then(|| LoraConfig {
            rank,
            alpha: self.lora_alpha.unwrap_or(defaults.alpha),
            dropout: self.lora_dropout.unwrap_or(defaults.dropout),
            use_rslora: self.use_rslora.unwrap_or(defaults.use_rslora),
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
    /// HuggingFace checkpoint directory, LLaVA-style or Qwen-VL (config.json, safetensors,
    /// tokenizer.json, preprocessor_config.json).
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
    args.train.devices.check_backend(args.train.backend)?;
    let lora = args.lora.config(&LoraDefaults::SFT);
    let stage = SftStage {
        dtype: args.train.dtype.resolve(args.train.backend, lora.is_none()),
        records: args.records,
        out: args.out,
        model: if args.model == "demo" {
            ModelSource::Demo
        } else {
            ModelSource::Dir(args.model.into())
        },
        limit: args.limit,
        freeze_vision: args.freeze_vision,
        lora,
        trainer: args.train.trainer(&TrainDefaults::SFT),
        resume: args.train.resume,
        merge: args.lora.merge,
        prompt_format: args.prompt.prompt_format,
    };
    interrupt::install_ctrl_c_handler();
    let out = run_on(args.train.backend, stage)?;
    println!("SFT model written to {}", out.display());
    Ok(())
}

/// A named set of `align` settings; explicit flags given with it override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AlignPreset {
    /// The authors' configuration (METHOD.md): rsLoRA r128/α256 (dropout 0.05) on the LLM, vision
    /// tower and projector frozen, AdamW lr 1e-6, cosine, warmup 0, weight decay 0, one epoch of
    /// the pairs at global batch 8 (`--batch 1 --grad-accum 8`).
    Paper,
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
    /// Model to align: a firempo model directory (the SFT output) or a HuggingFace checkpoint
    /// directory (LLaVA-style or Qwen-VL).
    #[arg(long)]
    pub model: PathBuf,
    /// Output model directory.
    #[arg(long, default_value = "runs/align")]
    pub out: PathBuf,
    /// Start from a named configuration (`paper`: the authors'); flags given with it win.
    #[arg(long, value_enum)]
    pub preset: Option<AlignPreset>,
    /// Train this many epochs of the pairs: steps = ⌈pairs × epochs / (batch × grad-accum)⌉,
    /// counted once the pairs are read (`--preset paper`: 1). Excludes --steps.
    #[arg(long, conflicts_with = "steps")]
    pub epochs: Option<usize>,
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
    /// Score the frozen reference on every pair once, before training, and keep its log-probs
    /// in OUT/run/reference_logps (resumable; scored again when the pairs, model or method
    /// change), so each step runs the policy only. DPO and mDPO only: RRPO's and FiRe-MPO's KL
    /// read the reference's whole distribution, which is not cached.
    #[arg(long)]
    pub precompute_reference: bool,
    #[command(flatten)]
    pub train: TrainArgs,
    #[command(flatten)]
    pub prompt: PromptFormatArgs,
}

impl AlignArgs {
    /// The stage these flags describe: the preset's settings (or `align`'s defaults), each
    /// replaced by the flag given for it.
    pub fn stage(&self) -> anyhow::Result<AlignStage> {
        let (lora_defaults, train_defaults, default_epochs) = match self.preset {
            Some(AlignPreset::Paper) => (LoraDefaults::PAPER, TrainDefaults::PAPER, Some(1)),
            None => (LoraDefaults::ALIGN, TrainDefaults::ALIGN, None),
        };
        let epochs = match (self.epochs, self.train.steps) {
            (Some(epochs), _) => Some(epochs),
            (None, Some(_)) => None,
            (None, None) => default_epochs,
        };
        anyhow::ensure!(epochs != Some(0), "--epochs must be at least 1");
        self.train.devices.check_backend(self.train.backend)?;
        let lora = self.lora.config(&lora_defaults);
        let mut stage = AlignStage {
            dtype: self.train.dtype.resolve(self.train.backend, lora.is_none()),
            pairs: self.pairs.clone(),
            root: self.root.clone(),
            model: self.model.clone(),
            out: self.out.clone(),
            loss: self.loss.to_loss()?,
            lora,
            freeze_vision: !self.train_vision,
            ground_truth_chosen: self.ground_truth_chosen.clone(),
            trainer: self.train.trainer(&train_defaults),
            resume: self.train.resume,
            merge: self.lora.merge,
            prompt_format: self.prompt.prompt_format.clone(),
            held_out: None,
            precompute_reference: self.precompute_reference,
        };
        if let Some(epochs) = epochs {
            let pairs = stage.train_epochs(epochs)?;
            println!(
                "{epochs} epoch(s) of {pairs} pairs at global batch {} = {} steps",
                stage.trainer.micro_batch_size * stage.trainer.grad_accum,
                stage.trainer.steps
            );
        }
        Ok(stage)
    }
}

/// One line per setting of an alignment run, as resolved from preset, defaults and flags.
pub fn describe_align(stage: &AlignStage) -> String {
    let t = &stage.trainer;
    let lora = match &stage.lora {
        Some(l) => format!(
            "LoRA r{} α{} {} (scale {:.3}), dropout {}",
            l.rank,
            l.alpha,
            if l.use_rslora {
                "rsLoRA α/√r"
            } else {
                "α/r"
            },
            l.scaling(),
            l.dropout
        ),
        None => "full fine-tuning (no LoRA)".to_string(),
    };
    format!(
        "loss:      {:?}\nadapters:  {lora}\nvision:    {}\noptimizer: AdamW lr {:e}, cosine to {}×, warmup {}, weight decay {}, max grad norm {:?}\nbatch:     {} × grad-accum {} = global {}\nsteps:     {}\nseed:      {}",
        stage.loss,
        if stage.freeze_vision {
            "tower and projector frozen"
        } else {
            "tower and projector trained"
        },
        t.lr,
        t.min_lr_ratio,
        t.warmup_steps,
        t.weight_decay,
        t.max_grad_norm,
        t.micro_batch_size,
        t.grad_accum,
        t.micro_batch_size * t.grad_accum,
        t.steps,
        t.seed,
    )
}

/// Runs `firempo align`.
pub fn align(args: AlignArgs) -> anyhow::Result<()> {
    let stage = args.stage()?;
    println!("{}", describe_align(&stage));
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
    /// checkpoint directory (LLaVA-style or Qwen-VL).
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
    pub decoding: DecodingDevicesArgs,
    #[command(flatten)]
    pub dtype: DtypeArgs,
    #[command(flatten)]
    pub prompt: PromptFormatArgs,
}

/// `--devices` of the stages that generate (`sample`, `eval`).
#[derive(Debug, Clone, Args)]
pub struct DecodingDevicesArgs {
    /// Devices that generate, one thread each, the prompt batches dealt out among them: a count
    /// (`2`: on the CPU backends 2 threads, on CUDA GPUs 0 and 1) or a GPU list
    /// (`cuda:0,cuda:1`). Each batch is decoded whole on one device with its own seed, so the
    /// answers are the same for any count.
    #[arg(long, default_value = "1", value_name = "N|DEVICES")]
    pub devices: crate::train::DeviceSpec,
}

impl DecodingDevicesArgs {
    /// The devices, checked against `--backend`.
    fn resolve(&self, backend: BackendKind) -> anyhow::Result<crate::train::DeviceSpec> {
        self.devices.check_backend(backend)?;
        Ok(self.devices.clone())
    }
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
        dtype: args.dtype.resolve(args.backend, false),
        prompt_format: args.prompt.prompt_format,
        devices: args.decoding.resolve(args.backend)?,
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
    #[command(flatten)]
    pub no_concept: NoConceptSigmaArgs,
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
    /// without it the rule editor builds the pairs (pairs) or only rule metrics are computed
    /// (eval).
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

/// `--no-concept-sigma`, for the stages that corrupt images.
#[derive(Debug, Clone, Args)]
pub struct NoConceptSigmaArgs {
    /// Noise σ (0–255 levels) on the whole image of a record without a concept or mask, where
    /// lesion corruption falls back to whole-image noise (the authors' default 12).
    #[arg(long, value_name = "SIGMA", default_value_t = CorruptionConfig::default().no_concept_sigma)]
    pub no_concept_sigma: f32,
}

/// Parses a corruption mode name (`none` → no corrupted images).
pub fn corruption_config(
    name: &str,
    seed: u64,
    no_concept: &NoConceptSigmaArgs,
) -> anyhow::Result<Option<CorruptionConfig>> {
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
    let config = CorruptionConfig {
        mode,
        seed,
        no_concept_sigma: no_concept.no_concept_sigma,
        ..CorruptionConfig::default()
    };
    config.validate()?;
    Ok(Some(config))
}

/// Runs `firempo pairs`.
pub fn pairs(args: PairsArgs) -> anyhow::Result<()> {
    let stage = PairsStage {
        records: args.records,
        samples: args.samples,
        out: args.out,
        corruption: corruption_config(&args.corruption, args.seed, &args.no_concept)?,
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
    /// Model: a firempo model directory or a HuggingFace checkpoint directory (LLaVA-style or
    /// Qwen-VL).
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
    /// Seed of the lesion corruption used by the visual-sensitivity probe, and of the answer
    /// sampler (--samples).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Answers per question; with more than one, every metric is the mean over them (needs
    /// --temperature > 0).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    /// Sampling temperature of the answers (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Nucleus (top-p) mass of the sampled answers, in (0, 1].
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// The judge of the paper's metrics (--judge-url; without it, rule metrics only).
    #[command(flatten)]
    pub judge: JudgeArgs,
    #[command(flatten)]
    pub no_concept: NoConceptSigmaArgs,
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
    pub decoding: DecodingDevicesArgs,
    #[command(flatten)]
    pub dtype: DtypeArgs,
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
            no_concept_sigma: args.no_concept.no_concept_sigma,
            ..CorruptionConfig::default()
        },
        finding_vocabulary: args.finding_vocabulary,
        dtype: args.dtype.resolve(args.backend, false),
        prompt_format: args.prompt.prompt_format,
        judge: args.judge.config(),
        sampling: AnswerSampling {
            samples: args.samples,
            temperature: args.temperature,
            top_p: args.top_p,
            seed: args.seed,
        },
        devices: args.decoding.resolve(args.backend)?,
    };
    let report = run_on(args.backend, stage)?;
    let width = report.labels.values().map(String::len).max().unwrap_or(14);
    for (name, value) in &report.metrics {
        let label = report.labels.get(name).unwrap_or(name);
        println!("{label:<width$} {value:>8.2}");
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
    /// Also run the FiRe-MPO paper's ablations (w/o KL, w/o RKL, w/o FKL, w/o visual; pairs
    /// corrupted by image noise, crop or black-out instead of lesion noise), each compared with
    /// FiRe-MPO, in `ablations.md` and `ablation_differences.md`.
    #[arg(long)]
    pub ablations: bool,
    /// Alignment seeds per method, all from the one SFT model (the table shows mean ± std over
    /// them; the CIs average each question over them).
    #[arg(long, default_value_t = 3)]
    pub seeds: usize,
    /// Seed of the data, the SFT model, the corruption and the bootstrap; alignment seeds are
    /// `seed .. seed + seeds`.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Compute backend.
    #[arg(long, value_enum, default_value_t = BackendKind::Ndarray)]
    pub backend: BackendKind,
    /// Devices that generate the answers when sampling and evaluating (the batches dealt out
    /// among them; the tables do not change). Default: on ndarray one thread per CPU core (at
    /// most 4), else 1. Training runs on one device.
    #[arg(long, value_name = "N|DEVICES")]
    pub devices: Option<crate::train::DeviceSpec>,
}

/// The demo's decoding devices without `--devices`: on ndarray (single-threaded ops) one
/// thread per core, at most 4; flex already spreads each op over its threads, and a GPU is one
/// device.
fn default_decoders(backend: BackendKind) -> crate::train::DeviceSpec {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    match backend {
        BackendKind::Ndarray => crate::train::DeviceSpec::Count(cores.clamp(1, 4)),
        _ => crate::train::DeviceSpec::Count(1),
    }
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
        seed: args.seed,
        align_seeds: (args.seed..args.seed + args.seeds as u64).collect(),
        ablations: args.ablations,
        decoders: match args.devices {
            Some(devices) => {
                devices.check_backend(args.backend)?;
                devices
            }
            None => default_decoders(args.backend),
        },
    };
    let removed = claim_output_dir(&demo.out, "demo", &demo.output_entries())?;
    if !removed.is_empty() {
        println!("replacing the previous demo in {}", demo.out.display());
    }
    let started = std::time::Instant::now();
    let outcome = run_on(args.backend, demo)?;
    println!("\n{}", outcome.table.to_markdown(2));
    println!(
        "mean ± std over {} alignment seeds from one SFT model. closed_acc, open_recall, \
         finding_f1, rouge_l, avg: % (higher is better); avg = mean of {} (those measured); \
         answer_change: % of answers that change when the lesion is corrupted; logp_drop: nats \
         the answer loses then (higher = more visually grounded); pair_acc: % of held-out pairs \
         whose DPO implicit reward margin (β 0.1, whole answers, against SFT) is > 0; \
         pair_margin: its mean.",
        args.seeds,
        AVG_METRICS.join(", ")
    );
    println!("\n{}", outcome.differences_markdown());
    println!(
        "Δ: method − baseline of the per-question means (each question averaged over the \
         alignment seeds), paired bootstrap 95% CI over questions (2000 resamples) in brackets, \
         bold where it excludes 0; closed accuracy also McNemar's exact p on the majority \
         answer over seeds; pair_acc over the held-out pairs."
    );
    if let Some(ablations) = &outcome.ablations {
        println!("\nAblations (FiRe-MPO's terms and corruptions; same seeds and pairs):\n");
        println!("{}", ablations.table.to_markdown(2));
        println!("\n{}", ablations.differences_markdown());
        println!("Δ: ablation − FiRe-MPO, paired bootstrap 95% CI as above.");
    }
    for file in &outcome.files {
        println!("wrote {}", file.display());
    }
    println!("total time {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::path::Path;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        align: AlignArgs,
    }

    /// A pairs file of `n` valid closed-question pairs.
    fn pairs_file(name: &str, n: usize) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("firempo-align-args-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{name}.jsonl"));
        let lines: String = (0..n)
            .map(|i| {
                format!(
                    "{{\"id\":\"p{i}\",\"record_id\":\"r{i}\",\"question\":\"Is there a lesion?\",\
                     \"answer_type\":\"closed\",\"chosen\":\"yes\",\"rejected\":\"no\",\
                     \"chosen_spans\":[{{\"start\":0,\"end\":3,\"id\":1}}],\
                     \"rejected_spans\":[{{\"start\":0,\"end\":2,\"id\":1}}],\
                     \"branch\":\"corrected\",\"editor\":\"rule\",\"image\":\"images/{i}.png\"}}\n"
                )
            })
            .collect();
        std::fs::write(&path, lines).unwrap();
        path
    }

    fn stage(pairs: &Path, flags: &[&str]) -> anyhow::Result<AlignStage> {
        let mut argv = vec!["align", "--model", "m", "--pairs", pairs.to_str().unwrap()];
        argv.extend_from_slice(flags);
        Harness::try_parse_from(argv)?.align.stage()
    }

    #[test]
    fn paper_preset_is_the_authors_configuration_with_one_epoch() {
        let pairs = pairs_file("paper", 20);
        let s = stage(&pairs, &["--preset", "paper"]).unwrap();
        let lora = s.lora.clone().unwrap();
        assert_eq!(
            (lora.rank, lora.alpha, lora.dropout, lora.use_rslora),
            (128, 256.0, 0.05, true)
        );
        assert!((lora.scaling() - 256.0 / 128f64.sqrt()).abs() < 1e-12);
        let t = &s.trainer;
        assert_eq!((t.micro_batch_size, t.grad_accum), (1, 8));
        assert_eq!((t.lr, t.warmup_steps, t.weight_decay), (1e-6, 0, 0.0));
        assert_eq!(
            t.steps, 3,
            "one epoch of 20 pairs at global batch 8: ⌈20/8⌉"
        );
        assert!(s.freeze_vision);
        let text = describe_align(&s);
        assert!(
            text.contains("rsLoRA") && text.contains("steps:     3"),
            "{text}"
        );
    }

    #[test]
    fn flags_given_with_the_preset_override_it() {
        let pairs = pairs_file("override", 20);
        let s = stage(
            &pairs,
            &[
                "--preset",
                "paper",
                "--lr",
                "1e-5",
                "--lora-rank",
                "64",
                "--use-rslora=false",
                "--batch",
                "2",
                "--train-vision",
            ],
        )
        .unwrap();
        let lora = s.lora.unwrap();
        assert_eq!((lora.rank, lora.alpha, lora.use_rslora), (64, 256.0, false));
        assert_eq!(s.trainer.lr, 1e-5);
        assert_eq!(s.trainer.steps, 2, "⌈20 / (2 × 8)⌉");
        assert!(!s.freeze_vision);
        let s = stage(&pairs, &["--preset", "paper", "--steps", "7"]).unwrap();
        assert_eq!(s.trainer.steps, 7, "--steps replaces the epoch");
        let s = stage(&pairs, &["--preset", "paper", "--epochs", "2"]).unwrap();
        assert_eq!(s.trainer.steps, 5, "⌈40 / 8⌉");
        assert!(stage(&pairs, &["--epochs", "1", "--steps", "3"]).is_err());
    }

    #[test]
    fn without_preset_align_keeps_its_defaults_and_rslora_is_a_flag() {
        let pairs = pairs_file("defaults", 20);
        let s = stage(&pairs, &[]).unwrap();
        let lora = s.lora.clone().unwrap();
        assert_eq!((lora.rank, lora.alpha, lora.use_rslora), (8, 16.0, false));
        let t = &s.trainer;
        assert_eq!(
            (
                t.steps,
                t.micro_batch_size,
                t.grad_accum,
                t.lr,
                t.warmup_steps
            ),
            (200, 8, 1, 1e-3, 10)
        );
        let s = stage(&pairs, &["--use-rslora", "--lora-rank", "16"]).unwrap();
        let lora = s.lora.unwrap();
        assert!(lora.use_rslora);
        assert!((lora.scaling() - 16.0 / 4.0).abs() < 1e-12, "α/√r = 16/4");
    }
}
