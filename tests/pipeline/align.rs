//! Alignment of the tiny demo VLM with LoRA: at step 1 policy = reference, so FiRe-MPO's loss is
//! exactly ln 2 · (1 + γ·present); training raises the reward margin; the base weights (the
//! reference) never change.

use std::path::Path;

use burn::backend::Autodiff;
use firempo::backend::TestCpu;
use firempo::losses::{FiReMpoConfig, PreferenceLoss};
use firempo::pipeline::align::{align_examples, reference_of, AlignObjective};
use firempo::pipeline::model::Model;
use firempo::train::{train, TrainerConfig};
use firempo_datasets::{
    corrupt, load_image, save_png, AnswerType, CorruptionConfig, PairBranch, PhraseSpan,
    PreferencePair, Record,
};
use firempo_models::LoraConfig;

type B = Autodiff<TestCpu>;

/// Presence questions become pairs: the truth as `y+`, the opposite as `y−`; the first half get a
/// whole-image-noise corrupted image, the rest none.
pub(crate) fn presence_pairs(records: &[Record], root: &Path) -> Vec<PreferencePair> {
    let presence: Vec<&Record> = records
        .iter()
        .filter(|r| r.answer_type == AnswerType::Closed && (r.answer == "yes" || r.answer == "no"))
        .collect();
    let half = presence.len() / 2;
    presence
        .iter()
        .enumerate()
        .map(|(i, record)| {
            let opposite = if record.answer == "yes" { "no" } else { "yes" };
            let corrupted_image = (i < half).then(|| {
                let image = load_image(&record.image_path(root)).unwrap();
                let corrupted =
                    corrupt(&image, None, &CorruptionConfig::default(), &record.id).unwrap();
                let path = std::path::PathBuf::from(format!("corrupted/{}.png", record.id));
                save_png(&corrupted.image, &root.join(&path)).unwrap();
                path
            });
            PreferencePair {
                id: record.id.clone(),
                record_id: record.id.clone(),
                question: record.question.clone(),
                answer_type: record.answer_type,
                chosen: record.answer.clone(),
                rejected: opposite.to_string(),
                chosen_spans: vec![PhraseSpan {
                    start: 0,
                    end: record.answer.len(),
                    id: 1,
                }],
                rejected_spans: vec![PhraseSpan {
                    start: 0,
                    end: opposite.len(),
                    id: 1,
                }],
                branch: PairBranch::OppositeSpliced,
                editor: "test".into(),
                image: record.image.clone(),
                corrupted_image,
                corruption: None,
                meta: Default::default(),
            }
        })
        .collect()
}

#[test]
fn lora_fire_mpo_starts_at_ln2_and_raises_the_margin() {
    let _serial = crate::common::exclusive();
    let crate::common::TinySetup {
        dir,
        root,
        records,
        config,
        processor,
    } = crate::common::tiny_setup("align");
    let pairs = presence_pairs(&records, &root);
    assert!(pairs.len() >= 4, "{} presence pairs", pairs.len());
    let device = Default::default();
    let lora = LoraConfig {
        dropout: 0.0,
        ..LoraConfig::default()
    };
    // burn's RNG is process-wide: seed it, or the initial weights depend on what other tests of
    // this binary drew before (the margin below then varied from run to run).
    <B as burn::tensor::backend::Backend>::seed(&device, 0);
    let policy = Model::from(config.init::<B>(&device).with_lora(&lora, &device).unwrap());
    let gamma = 0.5;
    let loss = PreferenceLoss::FireMpo(FiReMpoConfig {
        gamma,
        beta: 0.5,
        ..FiReMpoConfig::default()
    });
    let examples = align_examples(&processor, &pairs, &root).unwrap();
    let all = examples.len();
    let with_corrupted = examples
        .iter()
        .filter(|e| e.corrupted_image.is_some())
        .count();
    let objective = AlignObjective::<B> {
        processor: &processor,
        examples,
        loss,
        reference: reference_of(&policy),
        device,
    };
    let trainer = TrainerConfig {
        steps: 8,
        micro_batch_size: all,
        lr: 1e-2,
        progress: false,
        ..TrainerConfig::default()
    };
    let outcome = train(
        &trainer,
        &objective,
        policy,
        &dir.join("align"),
        false,
        &firempo::train::RunIdentity::new("test"),
        &Default::default(),
    )
    .unwrap();

    let first = &outcome.rows[0];
    let expected = std::f64::consts::LN_2 * (1.0 + gamma * with_corrupted as f64 / all as f64);
    assert!(
        (first["loss"] - expected).abs() < 1e-5,
        "step-1 loss {} vs {expected}",
        first["loss"]
    );
    let last = outcome.rows.last().unwrap();
    assert!(
        last["rewards/margin"] > 0.01,
        "margin grew: {:?}",
        outcome
            .rows
            .iter()
            .map(|r| r["rewards/margin"])
            .collect::<Vec<_>>()
    );
    assert!(last["loss"] < first["loss"]);
}
