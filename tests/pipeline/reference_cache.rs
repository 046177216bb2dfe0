//! `--precompute-reference` on the tiny demo VLM: DPO and mDPO trained from the precomputed
//! reference log-probs end at the adapters of the per-step reference; the cache continues an
//! interrupted precompute from its last whole pair and scores a cache of another run again
//! instead of reusing it; RRPO and FiRe-MPO refuse the flag.

use std::path::Path;
use std::sync::Arc;

use burn::backend::Autodiff;
use firempo::backend::{BackendTask, TestCpu};
use firempo::losses::{DpoConfig, FiReMpoConfig, MdpoConfig, PreferenceLoss, RrpoConfig};
use firempo::pipeline::align::{
    reference_model, reference_of, AlignExample, AlignObjective, PairImage, Reference,
};
use firempo::pipeline::model::Model;
use firempo::pipeline::reference_cache::{ReferenceCache, ReferenceLogps, LABEL_LOGPS_FILE};
use firempo::stages::align::AlignStage;
use firempo::train::trainable::trainable_params;
use firempo::train::{train, RunIdentity, TrainerConfig};
use firempo_models::LoraConfig;

use crate::common::TinySetup;

type B = Autodiff<TestCpu>;

/// Pairs per reference forward of the precompute: not the training micro-batch (2), so the
/// scores come from other batches and paddings than the per-step reference's.
const PRECOMPUTE_BATCH: usize = 3;

fn lora() -> LoraConfig {
    LoraConfig {
        dropout: 0.0,
        ..LoraConfig::default()
    }
}

fn precompute(
    setup: &TinySetup,
    run: &str,
    inputs: RunIdentity,
    loss: &PreferenceLoss,
    policy: &Model<B>,
    examples: &[AlignExample],
) -> ReferenceLogps {
    ReferenceCache::new(&setup.dir.join(run), inputs, loss, PRECOMPUTE_BATCH)
        .load_or_score(
            &reference_model(policy),
            &setup.processor,
            examples,
            &Default::default(),
        )
        .unwrap()
}

/// The trained tensors and per-step losses after 3 steps of `loss`, the reference scored at
/// every step or precomputed.
fn three_steps(
    setup: &TinySetup,
    loss: PreferenceLoss,
    precomputed: bool,
) -> (Vec<Vec<f32>>, Vec<f64>) {
    let (policy, examples) = crate::common::policy_and_examples(setup, &lora());
    let run = format!("{}-precomputed-{precomputed}", loss.name());
    let reference = if precomputed {
        let logps = precompute(
            setup,
            &run,
            RunIdentity::new("test"),
            &loss,
            &policy,
            &examples,
        );
        Reference::Precomputed(Arc::new(logps))
    } else {
        reference_of(&policy)
    };
    let objective = AlignObjective::<B> {
        processor: &setup.processor,
        examples,
        loss,
        reference,
        device: Default::default(),
    };
    let trainer = TrainerConfig {
        steps: 3,
        micro_batch_size: 2,
        lr: 1e-2,
        progress: false,
        ..TrainerConfig::default()
    };
    let outcome = train(
        &trainer,
        &objective,
        policy,
        &setup.dir.join(run).join("train"),
        false,
        &RunIdentity::new("test"),
        &Default::default(),
    )
    .unwrap();
    let adapters = trainable_params(&outcome.model)
        .params
        .into_iter()
        .map(|p| p.val().into_data().to_vec::<f32>().unwrap())
        .collect();
    (adapters, outcome.rows.iter().map(|r| r["loss"]).collect())
}

#[test]
fn precomputed_reference_trains_the_adapters_of_the_per_step_reference() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("precompute-equal");
    let losses = [
        PreferenceLoss::Dpo(DpoConfig { beta: 0.5 }),
        PreferenceLoss::Mdpo(MdpoConfig {
            beta: 0.5,
            ..MdpoConfig::default()
        }),
    ];
    for loss in losses {
        let (plain, plain_losses) = three_steps(&setup, loss, false);
        let (cached, cached_losses) = three_steps(&setup, loss, true);
        assert_eq!(plain.len(), cached.len());
        let largest = plain.iter().flatten().fold(0f32, |m, v| m.max(v.abs()));
        let worst = plain
            .iter()
            .flatten()
            .zip(cached.iter().flatten())
            .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        eprintln!(
            "{}: adapters after 3 steps, max |Δ| {worst:e} of largest entry {largest} \
             (relative {:e}); losses {plain_losses:?} vs {cached_losses:?}",
            loss.name(),
            worst / largest
        );
        // B starts at 0: a moved B shows the steps trained.
        assert!(largest > 1e-3, "{}: the adapters moved", loss.name());
        assert!(
            worst <= 1e-6 * largest,
            "{}: precomputed vs per-step reference adapters: max |Δ| {worst:e}",
            loss.name()
        );
        for (a, b) in plain_losses.iter().zip(&cached_losses) {
            assert!(
                (a - b).abs() <= 1e-6 * a.abs(),
                "{}: loss {a} vs {b}",
                loss.name()
            );
        }
    }
    std::fs::remove_dir_all(&setup.dir).ok();
}

/// The values file of the cache of `run`.
fn values_file(setup: &TinySetup, run: &str) -> std::path::PathBuf {
    setup
        .dir
        .join(run)
        .join("reference_logps")
        .join(LABEL_LOGPS_FILE)
}

fn assert_same_scores(got: &ReferenceLogps, want: &ReferenceLogps, pairs: std::ops::Range<usize>) {
    for pair in pairs {
        let (g, w) = (
            got.of(pair, PairImage::Clean).unwrap(),
            want.of(pair, PairImage::Clean).unwrap(),
        );
        for (g, w) in g.iter().flatten().zip(w.iter().flatten()) {
            assert!(
                (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                "pair {pair}: {g} vs {w}"
            );
        }
    }
}

#[test]
fn cache_continues_an_interrupted_precompute_and_rescores_another_runs() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("precompute-cache");
    let (policy, examples) = crate::common::policy_and_examples(&setup, &lora());
    let n = examples.len();
    assert!(n > PRECOMPUTE_BATCH, "{n} pairs");
    let dpo = PreferenceLoss::Dpo(DpoConfig::default());
    let inputs = || RunIdentity::new("test").with("pairs", "a");
    let full = precompute(&setup, "run", inputs(), &dpo, &policy, &examples);
    assert_eq!(full.pairs(), n);
    let file = values_file(&setup, "run");
    let bytes = std::fs::read(&file).unwrap();
    let tokens: usize = examples
        .iter()
        .map(|e| e.chosen.0.len() + e.rejected.0.len())
        .sum();
    assert_eq!(bytes.len(), 4 * tokens, "one f32 per answer token");

    // An interruption: the last pair half written. A marked first value shows the whole pairs
    // before it are kept, not scored again.
    let mut torn = bytes.clone();
    torn.truncate(bytes.len() - 4 * examples[n - 1].chosen.0.len() - 2);
    torn[..4].copy_from_slice(&123.0f32.to_le_bytes());
    std::fs::write(&file, &torn).unwrap();
    let resumed = precompute(&setup, "run", inputs(), &dpo, &policy, &examples);
    assert_eq!(resumed.pairs(), n);
    assert_eq!(
        resumed.of(0, PairImage::Clean).unwrap()[0][0],
        123.0,
        "kept"
    );
    assert_same_scores(&resumed, &full, 1..n);
    assert_eq!(
        std::fs::read(&file).unwrap().len(),
        bytes.len(),
        "the tail is rescored"
    );

    // Other inputs (another pairs file): scored again, the marked value gone.
    let other = RunIdentity::new("test").with("pairs", "b");
    let rescored = precompute(&setup, "run", other, &dpo, &policy, &examples);
    assert_ne!(rescored.of(0, PairImage::Clean).unwrap()[0][0], 123.0);
    assert_same_scores(&rescored, &full, 0..n);

    // Another method scoring other images (mDPO adds the corrupted one): scored again too.
    let mdpo = PreferenceLoss::Mdpo(MdpoConfig::default());
    let other = || RunIdentity::new("test").with("pairs", "b");
    let with_corrupted = precompute(&setup, "run", other(), &mdpo, &policy, &examples);
    assert_same_scores(&with_corrupted, &full, 0..n);
    let has_corrupted = examples.iter().position(|e| e.corrupted_image.is_some());
    let pair = has_corrupted.expect("some pairs have a corrupted image");
    assert_ne!(
        with_corrupted.of(pair, PairImage::Corrupted).unwrap(),
        with_corrupted.of(pair, PairImage::Clean).unwrap(),
        "the corrupted image changes the scores"
    );
    assert_eq!(std::fs::read(&file).unwrap().len(), 2 * bytes.len());
    // DPO reading mDPO's cache would find no match either.
    assert!(full.of(0, PairImage::Corrupted).is_err());
    std::fs::remove_dir_all(&setup.dir).ok();
}

#[test]
fn kl_methods_refuse_precompute_reference() {
    let missing = Path::new("/nonexistent-firempo");
    for loss in [
        PreferenceLoss::FireMpo(FiReMpoConfig::default()),
        PreferenceLoss::Rrpo(RrpoConfig::default()),
    ] {
        let stage = AlignStage {
            pairs: missing.join("pairs.jsonl"),
            root: None,
            model: missing.join("model"),
            out: missing.join("out"),
            loss,
            lora: Some(lora()),
            freeze_vision: true,
            ground_truth_chosen: None,
            trainer: TrainerConfig::default(),
            resume: false,
            merge: false,
            dtype: Default::default(),
            prompt_format: None,
            held_out: None,
            precompute_reference: true,
        };
        let err = format!("{:#}", stage.run::<B>(Default::default()).unwrap_err());
        assert!(
            err.contains("--precompute-reference") && err.contains(loss.name()),
            "{err}"
        );
    }
}
