//! The loop: AdamW, warmup + cosine schedule, gradient accumulation, global-norm clipping,
//! checkpoints every N steps and at the end, exact `--resume`, NaN stops, Ctrl-C checkpoints.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use burn::module::AutodiffModule;
use burn::optim::{AdamWConfig, GradientsAccumulator, GradientsParams, Optimizer};
use burn::tensor::backend::AutodiffBackend;
use firempo_losses::LossOutput;
use firempo_models::{backward_checkpointed, DecoderTape};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use super::checkpoint::{self, TrainerState};
use super::clip::clip_grad_norm;
use super::data_parallel::{shard, DeviceSpec};
use super::interrupt;
use super::metrics_log::{MetricRow, MetricsLog};
use super::order::{micro_batch, splitmix64};
use super::run_identity::{RunIdentity, RUN_IDENTITY_FILE};
use super::schedule::LrSchedule;
use super::trainable::trainable_shapes;

/// Optimization settings of one training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrainerConfig {
    /// Optimizer steps.
    pub steps: usize,
    /// Examples per forward/backward.
    pub micro_batch_size: usize,
    /// Micro-batches accumulated per optimizer step (effective batch = product).
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warmup steps before the cosine decay.
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of `lr`.
    pub min_lr_ratio: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Clip gradients to this global L2 norm (`None`: no clipping).
    pub max_grad_norm: Option<f64>,
    /// Write a checkpoint every N optimizer steps (0: only at the end).
    pub checkpoint_every: usize,
    /// Keep the newest N checkpoints, removing older ones (0: keep all).
    pub keep_checkpoints: usize,
    /// Seed of data order and of the backend RNG (dropout), reseeded per step.
    pub seed: u64,
    /// Draw a progress bar on a terminal.
    pub progress: bool,
    /// Recompute each decoder layer's activations in the backward instead of keeping them
    /// (`--gradient-checkpointing`): less memory, about one more forward of compute, the same
    /// gradients (so not part of the run's identity: a resume may switch it).
    pub gradient_checkpointing: bool,
    /// Data-parallel peers (`--devices`): a count (`2`) or a GPU list (`cuda:0,cuda:1`); one
    /// trains on the run's device as always. The number of peers is part of the run's
    /// identity, the device names are not ([`super::data_parallel`]).
    pub devices: DeviceSpec,
    /// Allow `--resume` with another number of peers than the run had (`--reshard`): the data
    /// position does not depend on it, the peers' dropout draws and summation order do.
    pub reshard: bool,
}

impl Default for TrainerConfig {
    fn default() -> Self {
        Self {
            steps: 100,
            micro_batch_size: 4,
            grad_accum: 1,
            lr: 1e-4,
            warmup_steps: 0,
            min_lr_ratio: 0.0,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            checkpoint_every: 0,
            keep_checkpoints: 2,
            seed: 0,
            progress: true,
            gradient_checkpointing: false,
            devices: DeviceSpec::default(),
            reshard: false,
        }
    }
}

impl TrainerConfig {
    /// Checks the settings; errors name the field.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(self.steps > 0, "trainer: `steps` must be > 0");
        anyhow::ensure!(
            self.micro_batch_size > 0,
            "trainer: `micro_batch_size` must be > 0"
        );
        anyhow::ensure!(self.grad_accum > 0, "trainer: `grad_accum` must be > 0");
        anyhow::ensure!(
            self.lr.is_finite() && self.lr > 0.0,
            "trainer: `lr` must be a finite number > 0, got {}",
            self.lr
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.min_lr_ratio),
            "trainer: `min_lr_ratio` must be in [0, 1]"
        );
        anyhow::ensure!(
            self.weight_decay.is_finite() && self.weight_decay >= 0.0,
            "trainer: `weight_decay` must be >= 0"
        );
        let peers = self.devices.world_size();
        anyhow::ensure!(
            self.micro_batch_size >= peers,
            "trainer: a micro-batch of {} example(s) (--batch) cannot be split over the {peers} \
             data-parallel peers of --devices {}: every peer needs at least one example; raise \
             --batch to at least {peers} or lower --devices",
            self.micro_batch_size,
            self.devices
        );
        if let Some(norm) = self.max_grad_norm {
            anyhow::ensure!(
                norm.is_finite() && norm > 0.0,
                "trainer: `max_grad_norm` must be > 0 (or omitted)"
            );
        }
        Ok(())
    }

    /// The learning-rate schedule over the whole run.
    pub fn schedule(&self) -> LrSchedule {
        LrSchedule {
            peak_lr: self.lr,
            warmup_steps: self.warmup_steps,
            total_steps: self.steps,
            min_lr_ratio: self.min_lr_ratio,
        }
    }
}

/// What the trainer optimizes: a model and a loss over numbered examples.
///
/// `Send`: a data-parallel run moves each peer's copy ([`Objective::for_device`]) to its thread.
pub trait Objective<B: AutodiffBackend>: Send {
    /// The trained module (frozen parts excluded from gradients by the module itself).
    type Model: AutodiffModule<B>;
    /// Examples in one epoch.
    fn num_examples(&self) -> usize;
    /// The loss on the examples with these indices.
    fn loss(&self, model: &Self::Model, examples: &[usize]) -> anyhow::Result<LossOutput<B>>;
    /// [`Objective::loss`] with the decoder's layers checkpointed (`--gradient-checkpointing`):
    /// run without their autodiff graph, with the tapes [`backward_checkpointed`] recomputes
    /// them from. Objectives that cannot checkpoint refuse.
    fn checkpointed_loss(
        &self,
        model: &Self::Model,
        examples: &[usize],
    ) -> anyhow::Result<CheckpointedLoss<B>> {
        let _ = (model, examples);
        anyhow::bail!("this training objective does not support --gradient-checkpointing")
    }
    /// The weight of `examples` in the mean loss of a micro-batch that holds them (the loss is
    /// the `loss_weight`-weighted mean of its parts' losses): a data-parallel peer scales its
    /// share's loss by `weight(share) / weight(micro-batch)`, so the peers' summed gradients
    /// are the whole micro-batch's. Default: the example count (a mean over examples, as the
    /// preference losses); a token mean (SFT) weighs by tokens.
    fn loss_weight(&self, examples: &[usize]) -> f64 {
        examples.len() as f64
    }
    /// A copy of this objective that builds its batches (and keeps any frozen model it scores
    /// with) on `device`: a data-parallel peer's objective (`--devices` > 1). Objectives that
    /// cannot be copied refuse.
    fn for_device(&self, device: &B::Device) -> anyhow::Result<Self>
    where
        Self: Sized,
    {
        let _ = device;
        anyhow::bail!(
            "this training objective does not support data-parallel training; use --devices 1"
        )
    }
    /// Extra values logged with the row of optimizer step `step` (after its update), e.g. a
    /// held-out evaluation every K steps; none by default.
    fn step_metrics(&self, _model: &Self::Model, _step: usize) -> anyhow::Result<MetricRow> {
        Ok(MetricRow::new())
    }
}

/// A loss whose decoder layers ran checkpointed, with their tapes (one per scoring call).
pub struct CheckpointedLoss<B: AutodiffBackend> {
    pub output: LossOutput<B>,
    pub tapes: Vec<DecoderTape<B>>,
}

impl<B: AutodiffBackend> CheckpointedLoss<B> {
    /// Runs `loss` with a checkpointing trunk and keeps the trunk's tapes: how an objective that
    /// computes its loss through a [`firempo_models::Trunk`] implements
    /// [`Objective::checkpointed_loss`].
    pub fn run(
        loss: impl FnOnce(&mut dyn firempo_models::Trunk<B>) -> anyhow::Result<LossOutput<B>>,
    ) -> anyhow::Result<Self> {
        let mut trunk = firempo_models::Checkpointed::new();
        let output = loss(&mut trunk)?;
        Ok(Self {
            output,
            tapes: trunk.into_tapes(),
        })
    }
}

/// Result of [`train`].
#[derive(Debug)]
pub struct TrainOutcome<M> {
    /// The trained model.
    pub model: M,
    /// Optimizer steps completed (equals the configured steps unless interrupted).
    pub steps_done: usize,
    /// The last checkpoint written.
    pub last_checkpoint: Option<PathBuf>,
    /// Whether the run stopped early on a stop request (Ctrl-C).
    pub interrupted: bool,
    /// All metric rows of the run (including those before a resume).
    pub rows: Vec<MetricRow>,
}

/// Trains `model` on `objective`, writing metrics and checkpoints under `run_dir`.
///
/// `identity` says what defines the run (stage, data digests, model, hyperparameters; the
/// trainer adds its own settings); it is written to `run_dir/run.json` when the run starts.
/// With `resume`, continues from the newest intact checkpoint in `run_dir` (trained parameters,
/// optimizer state, step and data position) after checking that the run's identity equals
/// `identity`, naming every field that differs; on ndarray the result is bit-identical to an
/// uninterrupted run. Without `resume`, a `run_dir` that already holds checkpoints is an error
/// (nothing is overwritten by accident).
///
/// With `config.devices` > 1 the steps run data-parallel (see [`super::data_parallel`]): the
/// objective is copied to each peer's device with [`Objective::for_device`].
pub fn train<B, T>(
    config: &TrainerConfig,
    objective: &T,
    model: T::Model,
    run_dir: &Path,
    resume: bool,
    identity: &RunIdentity,
    device: &B::Device,
) -> anyhow::Result<TrainOutcome<T::Model>>
where
    B: AutodiffBackend,
    T: Objective<B>,
{
    config.validate()?;
    let num_examples = objective.num_examples();
    anyhow::ensure!(
        num_examples > 0,
        "nothing to train on: the objective has no examples"
    );
    let optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init::<B, T::Model>();
    let identity = identity.clone().with_trainer(config);
    let existing = if resume {
        if check_resume_identity(run_dir, &identity, config.reshard)? {
            identity.save(run_dir)?;
        }
        checkpoint::latest_intact(run_dir)?
    } else {
        checkpoint::latest(run_dir)?
    };
    let (model, optimizer, state) = match (resume, existing) {
        (true, Some(path)) => {
            let (model, optimizer, state) = checkpoint::load(&path, model, optimizer, device)?;
            tracing::info!("resuming from {} at step {}", path.display(), state.step);
            (model, optimizer, state)
        }
        (false, Some(path)) => anyhow::bail!(
            "{} already holds checkpoints (newest: {}); pass --resume to continue, or choose another output directory",
            run_dir.display(),
            path.display()
        ),
        (_, None) => {
            identity.save(run_dir)?;
            let state = TrainerState {
                step: 0,
                micro_batches: 0,
                seed: config.seed,
                total_steps: config.steps,
                trainable_shapes: Vec::new(),
            };
            (model, optimizer, state)
        }
    };
    let report = Report {
        run_dir: run_dir.to_path_buf(),
        log: MetricsLog::open(run_dir, state.step)?,
        progress: progress_bar(config, state.step),
        last_checkpoint: None,
    };
    if config.devices.is_single() {
        return run_steps(
            config,
            objective,
            model,
            optimizer,
            state,
            Some(report),
            &Alone,
            device,
        );
    }
    super::data_parallel::train_peers(config, objective, model, optimizer, state, report, device)
}

/// How the peers of a run combine their work each step. A run on one device is its own only
/// peer ([`Alone`]): nothing to combine.
pub(crate) trait Peers {
    /// This peer's index (0 logs and checkpoints).
    fn rank(&self) -> usize;
    /// Number of peers.
    fn world_size(&self) -> usize;
    /// `values` summed over the peers (every peer gets the sums).
    fn sum_values(&self, values: Vec<f64>) -> anyhow::Result<Vec<f64>>;
    /// The gradients summed over the peers.
    fn sum_gradients(&self, grads: GradientsParams) -> anyhow::Result<GradientsParams>;
}

/// The only peer of a single-device run.
pub(crate) struct Alone;

impl Peers for Alone {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn sum_values(&self, values: Vec<f64>) -> anyhow::Result<Vec<f64>> {
        Ok(values)
    }
    fn sum_gradients(&self, grads: GradientsParams) -> anyhow::Result<GradientsParams> {
        Ok(grads)
    }
}

/// What the peer that reports (peer 0) keeps: the metrics log, the progress bar, checkpoints.
pub(crate) struct Report {
    run_dir: PathBuf,
    log: MetricsLog,
    progress: ProgressBar,
    last_checkpoint: Option<PathBuf>,
}

/// The optimizer steps from `state` to the end (or a stop request), on one peer of the run:
/// each micro-batch's loss on the peer's share of it, gradients accumulated, then summed over
/// the peers, clipped and applied. Only the peer with a [`Report`] logs and checkpoints; it
/// returns the outcome (the others' is empty).
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_steps<B, T, O, P>(
    config: &TrainerConfig,
    objective: &T,
    mut model: T::Model,
    mut optimizer: O,
    mut state: TrainerState,
    mut report: Option<Report>,
    peers: &P,
    device: &B::Device,
) -> anyhow::Result<TrainOutcome<T::Model>>
where
    B: AutodiffBackend,
    T: Objective<B>,
    O: Optimizer<T::Model, B>,
    P: Peers,
{
    let (rank, world) = (peers.rank(), peers.world_size());
    let num_examples = objective.num_examples();
    let schedule = config.schedule();
    let reduced_mib = reduced_gradient_mib(&model, world);
    let mut interrupted = false;
    let last_checkpoint = |report: &Option<Report>| {
        describe(&report.as_ref().and_then(|r| r.last_checkpoint.clone()))
    };
    while state.step < config.steps {
        let started = Instant::now();
        let seed = peer_seed(step_seed(config.seed, state.step), rank);
        B::seed(device, seed);
        // The CPU backends' RNG is process-wide: peers (threads) draw their dropout masks from
        // their own stream instead, so a multi-peer run with dropout repeats exactly.
        firempo_models::seed_host_dropout(seed);
        let mut accumulator = GradientsAccumulator::<T::Model>::new();
        let mut sums = MetricRow::new();
        for _ in 0..config.grad_accum {
            let batch = micro_batch(
                config.seed,
                num_examples,
                config.micro_batch_size,
                state.micro_batches,
            );
            let examples = shard(&batch, world, rank);
            // This peer's weight in the micro-batch's mean loss (1 alone).
            let share = match world {
                1 => 1.0,
                _ => objective.loss_weight(examples) / objective.loss_weight(&batch),
            };
            let CheckpointedLoss { output, tapes } = if config.gradient_checkpointing {
                objective.checkpointed_loss(&model, examples)?
            } else {
                CheckpointedLoss {
                    output: objective.loss(&model, examples)?,
                    tapes: Vec::new(),
                }
            };
            for (metric, value) in output.metrics.read().values {
                if metric == firempo_losses::Metric::Loss && !value.is_finite() {
                    let peer = match world {
                        1 => String::new(),
                        _ => format!(" on data-parallel peer {rank}"),
                    };
                    anyhow::bail!(
                        "loss is {value} at step {}{peer} (examples {examples:?}); last good checkpoint: {}. \
                         Lower the learning rate or inspect these examples, then --resume",
                        state.step + 1,
                        last_checkpoint(&report)
                    );
                }
                *sums.entry(metric.name().to_string()).or_insert(0.0) +=
                    value * share / config.grad_accum as f64;
            }
            let mut loss = output.loss.div_scalar(config.grad_accum as f64);
            if world > 1 {
                loss = loss.mul_scalar(share);
            }
            // One backward without tapes; with them, also one recompute pass per layer.
            backward_checkpointed(loss, tapes, |grads| {
                accumulator.accumulate(&model, GradientsParams::from_grads(grads, &model))
            });
            state.micro_batches += 1;
        }
        let grads = accumulator.grads();
        // One agreement per step: peer 0's stop request, every peer's gradient count, the
        // metrics (each peer's share-weighted part, so the sums are the whole batch's).
        let stop = rank == 0 && interrupt::take_stop_request();
        let mut values = vec![f64::from(u8::from(stop)), grads.len() as f64];
        values.extend(sums.values().copied());
        let communicating = Instant::now();
        let agreed = peers.sum_values(values)?;
        anyhow::ensure!(
            agreed[1] == (world * grads.len()) as f64,
            "data-parallel peer {rank}: the peers computed gradients for different parameters \
             ({} here, {} in all over {world} peers); every peer must train the same parameters",
            grads.len(),
            agreed[1]
        );
        let stop = agreed[0] > 0.0;
        for (value, agreed) in sums.values_mut().zip(&agreed[2..]) {
            *value = *agreed;
        }
        let grads = peers.sum_gradients(grads)?;
        let collective_s = communicating.elapsed().as_secs_f64();
        let (grads, grad_norm) = clip_grad_norm(&model, grads, config.max_grad_norm);
        anyhow::ensure!(
            grad_norm.is_finite(),
            "gradient norm is {grad_norm} at step {}; last good checkpoint: {}",
            state.step + 1,
            last_checkpoint(&report)
        );
        let lr = schedule.lr(state.step);
        model = optimizer.step(lr, model, grads);
        state.step += 1;

        interrupted = stop;
        let Some(report) = report.as_mut() else {
            if stop {
                break;
            }
            continue;
        };
        let seconds = started.elapsed().as_secs_f64();
        let examples = (config.micro_batch_size * config.grad_accum) as f64;
        sums.insert("step".into(), state.step as f64);
        sums.insert("lr".into(), lr);
        sums.insert("grad_norm".into(), grad_norm);
        sums.insert("examples_per_s".into(), examples / seconds.max(1e-9));
        if world > 1 {
            sums.insert("allreduce_s".into(), collective_s);
            sums.insert("allreduce_mib".into(), reduced_mib);
        }
        sums.extend(objective.step_metrics(&model, state.step)?);
        report.progress.set_message(progress_message(&sums));
        report.progress.set_position(state.step as u64);
        report.log.push(sums)?;

        let due = config.checkpoint_every > 0 && state.step.is_multiple_of(config.checkpoint_every);
        if due || stop || state.step == config.steps {
            report.last_checkpoint = Some(checkpoint::save(
                &report.run_dir,
                &model,
                &optimizer,
                &state,
                config.keep_checkpoints,
            )?);
            report.log.write_csv()?;
        }
        if stop {
            report.progress.abandon_with_message(format!(
                "stopped at step {}; checkpoint {}",
                state.step,
                describe(&report.last_checkpoint)
            ));
            break;
        }
    }
    let (last_checkpoint, rows) = match report {
        Some(report) => {
            if !interrupted {
                report.progress.finish();
                report
                    .log
                    .write_csv()
                    .context("writing the final metrics CSV")?;
            }
            (report.last_checkpoint, report.log.rows().to_vec())
        }
        None => (None, Vec::new()),
    };
    Ok(TrainOutcome {
        model,
        steps_done: state.step,
        last_checkpoint,
        interrupted,
        rows,
    })
}

/// Refuses to resume the run in `run_dir` when its recorded identity differs from `identity` with
/// `config`'s settings, naming each field. [`train`] checks this itself; stages call it first too,
/// so a mismatched `--resume` fails before loading data and models.
pub fn check_resume(
    run_dir: &Path,
    identity: &RunIdentity,
    config: &TrainerConfig,
) -> anyhow::Result<()> {
    check_resume_identity(
        run_dir,
        &identity.clone().with_trainer(config),
        config.reshard,
    )
    .map(drop)
}

/// Whether the run in `run_dir` may be resumed as `now` (with `reshard`, on another number of
/// peers); returns whether it is resharded (its `run.json` then gets the new number).
fn check_resume_identity(run_dir: &Path, now: &RunIdentity, reshard: bool) -> anyhow::Result<bool> {
    let Some(run) = RunIdentity::load(run_dir)? else {
        if checkpoint::latest(run_dir)?.is_some() {
            anyhow::bail!(
                "cannot resume {}: it has checkpoints but no {RUN_IDENTITY_FILE} saying what run \
                 wrote them (a firempo older than this one, or not a training run); start anew \
                 in another --out",
                run_dir.display()
            );
        }
        return Ok(false);
    };
    let (was, asked) = (run.world_size(), now.world_size());
    let resharded = was != asked;
    anyhow::ensure!(
        !resharded || reshard,
        "cannot resume {}: it was trained on {was} data-parallel peer(s) and --devices now gives \
         {asked}; each peer's dropout draws and the summation order depend on their number. Resume with --devices {was} (a count or a list of {was} devices), pass \
         --reshard to go on with {asked} (the data order and position stay), or start a new run \
         in another --out",
        run_dir.display()
    );
    let differences = run
        .without_world_size()
        .differences(&now.clone().without_world_size());
    anyhow::ensure!(
        differences.is_empty(),
        "cannot resume {}: it was started with other settings or inputs than given now:\n  {}\n\
         resume with the run's original settings and files, or start a new run in another --out",
        run_dir.display(),
        differences.join("\n  ")
    );
    if resharded {
        tracing::warn!(
            "--reshard: resuming {} on {asked} data-parallel peer(s) (it ran on {was})",
            run_dir.display()
        );
    }
    Ok(resharded)
}

/// A distinct, reproducible backend seed for each step (so dropout does not depend on resumes).
fn step_seed(seed: u64, step: usize) -> u64 {
    let mut state = seed ^ (step as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    splitmix64(&mut state)
}

/// Peer `rank`'s seed of a step: peer 0 (and a single-device run) uses the step's seed, the
/// others their own streams, so peers do not draw the same dropout masks.
fn peer_seed(step_seed: u64, rank: usize) -> u64 {
    match rank {
        0 => step_seed,
        _ => {
            let mut state = step_seed ^ (rank as u64).wrapping_mul(0xD1B5_4A32_D192_ED03);
            splitmix64(&mut state)
        }
    }
}

fn describe(checkpoint: &Option<PathBuf>) -> String {
    checkpoint
        .as_ref()
        .map_or_else(|| "none yet".into(), |p| p.display().to_string())
}

fn progress_bar(config: &TrainerConfig, start: usize) -> ProgressBar {
    if !config.progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(config.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} steps {msg} [{elapsed_precise} < {eta_precise}]",
        )
        .expect("valid progress template"),
    );
    bar.set_position(start as u64);
    bar
}

/// MiB of gradients the peers of a `world`-peer run all-reduce per step (0 alone): one f32 value
/// per trainable parameter element, the same on every step.
fn reduced_gradient_mib<B: AutodiffBackend, M: AutodiffModule<B>>(model: &M, world: usize) -> f64 {
    if world == 1 {
        return 0.0;
    }
    let elements: usize = trainable_shapes(model)
        .iter()
        .map(|shape| shape.iter().product::<usize>())
        .sum();
    (elements * std::mem::size_of::<f32>()) as f64 / (1u64 << 20) as f64
}

fn progress_message(row: &MetricRow) -> String {
    let get = |name: &str| row.get(name).copied().unwrap_or(f64::NAN);
    format!(
        "loss {:.4} acc {:.2} {:.1} ex/s",
        get("loss"),
        get("rewards/accuracy"),
        get("examples_per_s")
    )
}
