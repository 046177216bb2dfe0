//! What data parallelism costs per step: 1 against 2 local peers (`--devices 2`, threads on
//! ndarray through burn's collective), full SFT and LoRA SFT of the `small` preset's decoder
//! (4 layers, 256-d, GQA 8/2; the demo's 64 px tower and vocabulary) on the synthetic benchmark.
//! It reports each configuration's step time (median and min over the measured steps) and, on 2
//! peers, the seconds the step's all-reduces took (`allreduce_s` in `metrics.jsonl`: the step's
//! flags and metrics, then the gradients; waiting for the slower peer included) and the MiB of
//! gradients reduced (`allreduce_mib`). The two peer counts alternate within each round, in one
//! run, so a busy machine slows both. On a 2-core machine the point is the overhead, not a
//! speed-up: two peers share the cores one peer's ops already use.
//! Run: `cargo bench --bench data_parallel --profile dev` (about a minute on two cores).

use std::path::{Path, PathBuf};

use burn::backend::{Autodiff, NdArray};
use firempo::pipeline::demo_model::demo_processor;
use firempo::pipeline::model::Model;
use firempo::pipeline::sft::{sft_examples, SftObjective};
use firempo::train::metrics_log::MetricRow;
use firempo::train::{train, DeviceSpec, RunIdentity, TrainerConfig};
use firempo_datasets::synth::{generate, SynthConfig};
use firempo_datasets::{read_jsonl, BadRecordPolicy};
use firempo_models::{LoraConfig, TextConfig, VlmConfig};

type B = Autodiff<NdArray<f32>>;

/// Rounds of (1 peer, 2 peers), the order alternating from round to round.
const ROUNDS: usize = 5;
/// Optimizer steps per run; the first is not measured (lazy initialization, first allocations).
const STEPS: usize = 8;
/// The global micro-batch (split 4 + 4 over 2 peers).
const BATCH: usize = 8;

/// What is trained: the whole model, or rank-8 adapters on the decoder's projections.
#[derive(Clone, Copy)]
enum Trained {
    Full,
    Lora,
}

impl Trained {
    fn name(self) -> &'static str {
        match self {
            Self::Full => "full SFT",
            Self::Lora => "LoRA SFT (rank 8)",
        }
    }
}

/// One run's measured steps: step seconds, and on several peers the all-reduce seconds and MiB.
struct Measured {
    step_s: Vec<f64>,
    allreduce_s: Vec<f64>,
    allreduce_mib: f64,
}

fn measured(rows: &[MetricRow]) -> Measured {
    let examples = BATCH as f64;
    let rows = &rows[1..];
    Measured {
        step_s: rows
            .iter()
            .map(|r| examples / r["examples_per_s"])
            .collect(),
        allreduce_s: rows
            .iter()
            .filter_map(|r| r.get("allreduce_s").copied())
            .collect(),
        allreduce_mib: rows
            .first()
            .and_then(|r| r.get("allreduce_mib").copied())
            .unwrap_or(0.0),
    }
}

/// The `small` preset's decoder widths with the demo's vocabulary and image token.
fn small_decoder(demo: VlmConfig) -> VlmConfig {
    let small = VlmConfig::small().text;
    VlmConfig {
        text: TextConfig {
            vocab_size: demo.text.vocab_size,
            max_position_embeddings: demo.text.max_position_embeddings,
            ..small
        },
        ..demo
    }
}

fn run(setup: &Setup, trained: Trained, devices: usize, out: &Path) -> Measured {
    let device = Default::default();
    let mut model = Model::from(setup.config.init::<B>(&device));
    if let Trained::Lora = trained {
        let lora = LoraConfig {
            dropout: 0.0,
            ..LoraConfig::default()
        };
        model = model.freeze_vision().with_lora(&lora, &device).unwrap();
    }
    let objective = SftObjective::<B> {
        processor: &setup.processor,
        examples: setup.examples.clone(),
        device,
    };
    let config = TrainerConfig {
        steps: STEPS,
        micro_batch_size: BATCH,
        lr: 1e-3,
        progress: false,
        checkpoint_every: 0,
        devices: DeviceSpec::Count(devices),
        ..TrainerConfig::default()
    };
    let outcome = train(
        &config,
        &objective,
        model,
        out,
        false,
        &RunIdentity::new("bench"),
        &device,
    )
    .expect("training");
    measured(&outcome.rows)
}

struct Setup {
    config: VlmConfig,
    processor: firempo::pipeline::file_processor::FileProcessor,
    examples: Vec<firempo::pipeline::sft::SftExample>,
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

fn main() {
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("data_parallel-{}", std::process::id()));
    let root = scratch.join("data");
    let synth = SynthConfig {
        n_train: 64,
        n_val: 2,
        n_test: 2,
        ..SynthConfig::default()
    };
    generate(&synth, &root).expect("synthetic data");
    let records = read_jsonl(&root.join("train.jsonl"), BadRecordPolicy::Stop)
        .expect("records")
        .items;
    let (demo, processor) = demo_processor(&records).expect("demo processor");
    let examples = sft_examples(&processor, &records, &root).expect("examples");
    let setup = Setup {
        config: small_decoder(demo),
        processor,
        examples,
    };
    println!(
        "{STEPS} steps of {BATCH} examples per run (the first not measured), {ROUNDS} rounds, ndarray f32"
    );
    println!("| trained | peers | step s, median / min | all-reduce s per step, median | share of the step | MiB reduced per step |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let mut runs = 0;
    for trained in [Trained::Lora, Trained::Full] {
        let mut by_peers: [Vec<Measured>; 2] = [Vec::new(), Vec::new()];
        for round in 0..ROUNDS {
            let order = if round % 2 == 0 { [1, 2] } else { [2, 1] };
            for devices in order {
                runs += 1;
                let out = scratch.join(format!("run-{runs}"));
                by_peers[devices - 1].push(run(&setup, trained, devices, &out));
            }
        }
        for (i, measured) in by_peers.iter().enumerate() {
            let steps: Vec<f64> = measured.iter().flat_map(|m| m.step_s.clone()).collect();
            let reduce: Vec<f64> = measured
                .iter()
                .flat_map(|m| m.allreduce_s.clone())
                .collect();
            let (reduce_cell, share, mib) = match reduce.is_empty() {
                true => ("–".to_string(), "–".to_string(), "–".to_string()),
                false => (
                    format!("{:.4}", median(&reduce)),
                    format!("{:.1} %", 100.0 * median(&reduce) / median(&steps)),
                    format!("{:.2}", measured[0].allreduce_mib),
                ),
            };
            println!(
                "| {} | {} | {:.3} / {:.3} | {reduce_cell} | {share} | {mib} |",
                trained.name(),
                i + 1,
                median(&steps),
                min(&steps)
            );
        }
    }
    // The bench's own scratch folder (synthetic data and its runs), under cargo's target tmpdir.
    std::fs::remove_dir_all(&scratch).ok();
}
