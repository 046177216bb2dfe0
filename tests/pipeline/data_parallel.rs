//! Data-parallel training (`--devices`) on 2 local CPU peers (threads on ndarray, through burn's
//! collective): 3 steps end at the weights of a single-device run on the same batches (full SFT
//! of the demo VLM; FiRe-MPO with LoRA), with the same logged loss and gradient norm; a resume
//! with another number of peers is refused naming `--devices` and `--reshard`, which allows it.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use firempo::backend::TestCpu;
use firempo::losses::{FiReMpoConfig, PreferenceLoss};
use firempo::pipeline::align::{align_examples, reference_of, AlignObjective};
use firempo::pipeline::model::Model;
use firempo::pipeline::sft::{sft_examples, SftObjective};
use firempo::train::metrics_log::MetricRow;
use firempo::train::trainable::{trainable_params, trainable_shapes};
use firempo::train::{train, DeviceSpec, RunIdentity, TrainOutcome, TrainerConfig};
use firempo_models::LoraConfig;

use crate::align::presence_pairs;
use crate::common::TinySetup;

type B = Autodiff<TestCpu>;

/// Weights after 3 steps: max |Δ| (f32) between 1 and 2 peers.
const WEIGHT_TOL: f32 = 1e-5;
/// Logged loss and gradient norm: relative difference (f32 partial sums added in another order).
const METRIC_REL: f64 = 1e-5;

/// 3 steps of 3 examples (split 2 + 1 over 2 peers) × 2 accumulated micro-batches.
fn trainer(devices: usize) -> TrainerConfig {
    TrainerConfig {
        steps: 3,
        micro_batch_size: 3,
        grad_accum: 2,
        lr: 1e-2,
        progress: false,
        devices: DeviceSpec::Count(devices),
        ..TrainerConfig::default()
    }
}

fn lora(dropout: f64) -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout,
        ..LoraConfig::default()
    }
}

/// `model` with its lazily initialized parameters drawn now (burn draws them at first use): both
/// runs start from the same weights (a data-parallel run materializes the model before copying it).
fn materialized(model: Model<B>) -> Model<B> {
    struct Read;
    impl ModuleVisitor<B> for Read {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            let _ = param.val();
        }
    }
    model.visit(&mut Read);
    model
}

/// The trained tensors of a model, in module order.
fn weights(model: &Model<B>) -> Vec<Vec<f32>> {
    trainable_params(model)
        .params
        .into_iter()
        .map(|p| p.val().into_data().to_vec::<f32>().unwrap())
        .collect()
}

fn sft_run(setup: &TinySetup, devices: usize) -> TrainOutcome<Model<B>> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 0);
    let model = materialized(Model::from(setup.config.init::<B>(&device)));
    let objective = SftObjective::<B> {
        processor: &setup.processor,
        examples: sft_examples(&setup.processor, &setup.records, &setup.root).unwrap(),
        device,
    };
    let run = setup.dir.join(format!("sft-{devices}"));
    train(
        &trainer(devices),
        &objective,
        model,
        &run,
        false,
        &RunIdentity::new("test"),
        &device,
    )
    .unwrap()
}

/// FiRe-MPO with LoRA (dropout `dropout`) on the tiny setup's pairs, into `run`.
fn align_run(
    setup: &TinySetup,
    config: &TrainerConfig,
    run: &str,
    resume: bool,
    dropout: f64,
) -> anyhow::Result<TrainOutcome<Model<B>>> {
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 0);
    let pairs = presence_pairs(&setup.records, &setup.root);
    let policy = materialized(
        Model::from(setup.config.init::<B>(&device))
            .freeze_vision()
            .with_lora(&lora(dropout), &device)
            .unwrap(),
    );
    let objective = AlignObjective::<B> {
        processor: &setup.processor,
        examples: align_examples(&setup.processor, &pairs, &setup.root).unwrap(),
        loss: PreferenceLoss::FireMpo(FiReMpoConfig {
            gamma: 0.5,
            beta: 0.5,
            ..FiReMpoConfig::default()
        }),
        reference: reference_of(&policy),
        device,
    };
    train(
        config,
        &objective,
        policy,
        &setup.dir.join(run),
        resume,
        &RunIdentity::new("test"),
        &device,
    )
}

/// Asserts equal weights and equal logged loss and gradient norm at every step.
fn assert_same_training(name: &str, one: &TrainOutcome<Model<B>>, two: &TrainOutcome<Model<B>>) {
    let (a, b) = (weights(&one.model), weights(&two.model));
    assert_eq!(a.len(), b.len());
    assert!(!a.is_empty());
    let mut worst = 0f32;
    let mut moved = 0f32;
    for (x, y) in a.iter().zip(&b) {
        for (p, q) in x.iter().zip(y) {
            worst = worst.max((p - q).abs());
        }
    }
    assert_eq!(one.rows.len(), 3);
    assert_eq!(two.rows.len(), 3);
    let get = |row: &MetricRow, key: &str| *row.get(key).unwrap_or_else(|| panic!("{key}"));
    let mut worst_metric = 0f64;
    for (r1, r2) in one.rows.iter().zip(&two.rows) {
        for key in ["loss", "grad_norm"] {
            let (v1, v2) = (get(r1, key), get(r2, key));
            assert!(v1.is_finite() && v1 > 0.0, "{name}: {key} {v1}");
            worst_metric = worst_metric.max((v1 - v2).abs() / v1.abs());
        }
        moved = moved.max(get(r1, "grad_norm") as f32);
        // The collective's cost is logged on several peers only: the f32 gradients of every
        // trained element, and the seconds the step's all-reduces took.
        assert!(!r1.contains_key("allreduce_mib") && !r1.contains_key("allreduce_s"));
        let trained: usize = trainable_shapes(&two.model)
            .iter()
            .map(|s| s.iter().product::<usize>())
            .sum();
        assert_eq!(get(r2, "allreduce_mib"), (4 * trained) as f64 / 1048576.0);
        let seconds = get(r2, "allreduce_s");
        assert!(
            seconds > 0.0 && seconds < 60.0,
            "{name}: allreduce_s {seconds}"
        );
    }
    eprintln!(
        "{name}: 1 vs 2 peers, max |Δweight| {worst:e} over {} tensors, max relative \
         |Δloss|, |Δgrad_norm| {worst_metric:e}",
        a.len()
    );
    assert!(moved > 0.0, "{name}: the gradients are zero");
    assert!(worst <= WEIGHT_TOL, "{name}: max |Δweight| {worst:e}");
    assert!(
        worst_metric <= METRIC_REL,
        "{name}: relative |Δ| of loss or grad_norm {worst_metric:e}"
    );
}

#[test]
fn two_cpu_peers_train_sft_and_fire_mpo_lora_as_one_device() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("data-parallel");

    let one = sft_run(&setup, 1);
    let two = sft_run(&setup, 2);
    assert_same_training("sft full", &one, &two);
    // The run moved away from its start: SFT's loss falls over the 3 steps.
    assert!(two.rows[2]["loss"] < two.rows[0]["loss"]);

    let one = align_run(&setup, &trainer(1), "align-1", false, 0.0).unwrap();
    let two = align_run(&setup, &trainer(2), "align-2", false, 0.0).unwrap();
    assert_same_training("fire-mpo lora", &one, &two);
    let moved = weights(&two.model)
        .iter()
        .flatten()
        .fold(0f32, |m, v| m.max(v.abs()));
    assert!(moved > 1e-3, "the adapters moved ({moved})");

    // The 2-peer run's identity records its peers: resuming it on 1 is refused naming --devices.
    let err = align_run(&setup, &trainer(1), "align-2", true, 0.0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("2 data-parallel peer(s)")
            && err.contains("--devices 2")
            && err.contains("--reshard"),
        "{err}"
    );
    // With --reshard it resumes on 1 peer, and the run now records 1: a plain resume follows.
    let reshard = TrainerConfig {
        reshard: true,
        ..trainer(1)
    };
    let resumed = align_run(&setup, &reshard, "align-2", true, 0.0).unwrap();
    assert_eq!(resumed.steps_done, 3);
    align_run(&setup, &trainer(1), "align-2", true, 0.0).unwrap();
    std::fs::remove_dir_all(&setup.dir).ok();
}

/// With LoRA dropout, 2 CPU peers repeat exactly: each peer thread draws its masks from its own
/// stream, seeded per step and peer (the CPU backends' RNG is process-wide, and the peers would
/// race for its draws). The masks do act: the weights differ from a run without dropout.
#[test]
fn two_cpu_peers_with_lora_dropout_repeat_exactly() {
    let _serial = crate::common::exclusive();
    // As `run_on` does for the CPU backends (this test calls `train` directly).
    firempo_models::register_host_dropout::<TestCpu>();
    let setup = crate::common::tiny_setup("data-parallel-dropout");
    let run =
        |name: &str, dropout: f64| align_run(&setup, &trainer(2), name, false, dropout).unwrap();
    let first = weights(&run("dropout-a", 0.3).model);
    let second = weights(&run("dropout-b", 0.3).model);
    assert_eq!(first, second, "two 2-peer runs with dropout 0.3 differ");
    let without = weights(&run("no-dropout", 0.0).model);
    assert_ne!(first, without, "dropout 0.3 left the weights of dropout 0");
    std::fs::remove_dir_all(&setup.dir).ok();
}

#[test]
fn bad_device_specs_are_clear_errors() {
    for (spec, says) in [
        ("0", "at least one device"),
        ("gpu:0", "unknown device kind `gpu`"),
        ("cuda:0,cuda:0", "listed twice"),
    ] {
        let err = spec.parse::<DeviceSpec>().unwrap_err();
        assert!(err.contains(says), "{spec}: {err}");
    }
    // More peers than examples per micro-batch: refused naming both flags.
    let config = TrainerConfig {
        micro_batch_size: 1,
        devices: DeviceSpec::Count(2),
        ..TrainerConfig::default()
    };
    let err = config.validate().unwrap_err().to_string();
    assert!(
        err.contains("--batch") && err.contains("--devices"),
        "{err}"
    );
}

/// `sample`/`eval --devices 2`: the decoding batches dealt out over 2 CPU threads give the
/// answers of one device, greedy and sampled (each batch decodes whole on one peer with the seed
/// of its index), in record order.
#[test]
fn two_decoding_peers_answer_like_one_device() {
    use firempo::stages::decoders::Decoders;
    use firempo::stages::sample::{answer_prompts_with, record_prompts};
    use firempo_models::{GenerationConfig, Sampling};

    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("decoding-peers");
    let device = Default::default();
    <TestCpu as burn::tensor::backend::Backend>::seed(&device, 1);
    let model = Model::from(setup.config.init::<TestCpu>(&device));
    let images: Vec<std::path::PathBuf> = setup
        .records
        .iter()
        .map(|r| r.image_path(&setup.root))
        .collect();
    let images: Vec<&std::path::Path> = images.iter().map(|p| p.as_path()).collect();
    let prompts = record_prompts(&setup.processor, &setup.records, &images, 6).unwrap();
    assert!(prompts.len() >= 5, "{} records", prompts.len());
    // Two peers first: that materializes the lazily initialized weights, which one device then
    // shares (a clone made before would draw its own).
    let two = Decoders::new(model, &device, &DeviceSpec::Count(2));
    let one = Decoders::single(two.first().0.clone(), &device);
    assert_eq!(two.len(), 2);
    let sampled = Sampling::TopP {
        temperature: 1.0,
        top_p: 0.9,
    };
    for sampling in [Sampling::Greedy, sampled] {
        let config = GenerationConfig {
            max_new_tokens: 6,
            sampling,
            seed: 7,
            ..GenerationConfig::default()
        };
        // Batches of 2: 3 or more batches, so both peers decode and one decodes two.
        let a = answer_prompts_with(&one, &setup.processor, &prompts, &images, 2, &config).unwrap();
        let b = answer_prompts_with(&two, &setup.processor, &prompts, &images, 2, &config).unwrap();
        assert_eq!(a.len(), prompts.len());
        assert!(
            a.iter().any(|s| !s.is_empty()),
            "no tokens generated: {a:?}"
        );
        assert_eq!(a, b, "{sampling:?}");
    }
    std::fs::remove_dir_all(&setup.dir).ok();
}
