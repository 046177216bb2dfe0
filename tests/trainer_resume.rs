//! Exact resume: a run stopped (as by Ctrl-C) and resumed ends with the same weights and metrics
//! as an uninterrupted run, on ndarray. Kept in its own test binary: the stop flag is global.

use std::path::PathBuf;

use burn::backend::Autodiff;
use firempo::backend::TestCpu;
use firempo::losses::{FiReMpoConfig, PreferenceLoss};
use firempo::playground::{Playground, PlaygroundConfig};
use firempo::train::{interrupt, train, TrainerConfig};

type B = Autodiff<TestCpu>;

fn config(run_dir: PathBuf) -> PlaygroundConfig {
    PlaygroundConfig {
        loss: PreferenceLoss::FireMpo(FiReMpoConfig::default()),
        pairs: 5,
        answer_len: 4,
        vocab: 11,
        trainer: TrainerConfig {
            steps: 6,
            micro_batch_size: 2,
            grad_accum: 2,
            lr: 0.05,
            warmup_steps: 2,
            max_grad_norm: Some(0.5),
            weight_decay: 0.01,
            checkpoint_every: 2,
            seed: 9,
            progress: false,
            ..TrainerConfig::default()
        },
        run_dir,
        resume: false,
    }
}

fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn logits(outcome_model: &firempo::playground::LogitTable<B>) -> Vec<f32> {
    outcome_model.logits.val().into_data().to_vec().unwrap()
}

#[test]
fn stopped_and_resumed_run_equals_uninterrupted_run() {
    let device = Default::default();
    let straight_cfg = config(fresh_dir("straight"));
    let (objective, table) = Playground::<B>::new(&straight_cfg, &device);
    let straight = train(
        &straight_cfg.trainer,
        &objective,
        table,
        &straight_cfg.run_dir,
        false,
        &firempo::train::RunIdentity::new("test"),
        &device,
    )
    .unwrap();
    assert_eq!(straight.steps_done, 6);
    assert!(!straight.interrupted);

    let split_cfg = config(fresh_dir("split"));
    let (objective, table) = Playground::<B>::new(&split_cfg, &device);
    let initial = logits(&table);
    // A stop request (what Ctrl-C sends) makes the trainer checkpoint after the current step.
    interrupt::request_stop();
    let first = train(
        &split_cfg.trainer,
        &objective,
        table,
        &split_cfg.run_dir,
        false,
        &firempo::train::RunIdentity::new("test"),
        &device,
    )
    .unwrap();
    assert!(first.interrupted);
    assert_eq!(first.steps_done, 1);
    assert!(first.last_checkpoint.unwrap().ends_with("step-000001"));
    // Without --resume, an existing run directory is refused.
    let (objective, table) = Playground::<B>::new(&split_cfg, &device);
    let err = train(
        &split_cfg.trainer,
        &objective,
        table,
        &split_cfg.run_dir,
        false,
        &firempo::train::RunIdentity::new("test"),
        &device,
    )
    .unwrap_err();
    assert!(err.to_string().contains("--resume"), "{err}");
    let (objective, table) = Playground::<B>::new(&split_cfg, &device);
    let resumed = train(
        &split_cfg.trainer,
        &objective,
        table,
        &split_cfg.run_dir,
        true,
        &firempo::train::RunIdentity::new("test"),
        &device,
    )
    .unwrap();
    assert_eq!(resumed.steps_done, 6);

    assert_ne!(
        logits(&straight.model),
        initial,
        "training changed the weights"
    );
    assert_eq!(
        logits(&resumed.model),
        logits(&straight.model),
        "resumed weights equal uninterrupted ones"
    );
    let without_timing =
        |rows: &[firempo::train::metrics_log::MetricRow]| -> Vec<Vec<(String, f64)>> {
            rows.iter()
                .map(|r| {
                    r.iter()
                        .filter(|(k, _)| k.as_str() != "examples_per_s")
                        .map(|(k, v)| (k.clone(), *v))
                        .collect()
                })
                .collect()
        };
    assert_eq!(
        without_timing(&resumed.rows),
        without_timing(&straight.rows)
    );
    let jsonl = std::fs::read_to_string(split_cfg.run_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(
        jsonl.lines().count(),
        6,
        "one JSONL row per step, none duplicated by the resume"
    );
    let csv = std::fs::read_to_string(split_cfg.run_dir.join("metrics.csv")).unwrap();
    assert!(csv.starts_with("step,"), "{csv}");
    assert_eq!(csv.lines().count(), 7);
}
