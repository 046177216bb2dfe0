//! Shared setup of the pipeline tests: a tiny synthetic dataset and the demo's processor.

use std::path::PathBuf;

use firempo::pipeline::demo_model::demo_processor;
use firempo::pipeline::file_processor::FileProcessor;
use firempo_datasets::synth::{generate, SynthConfig};
use firempo_datasets::{read_jsonl, BadRecordPolicy, Record};
use firempo_models::VlmConfig;

/// Serializes the tests of this binary: burn's ndarray RNG is process-wide, so tests training
/// at the same time would draw from one stream and lose their determinism.
pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A fresh synthetic dataset of 8 training images and the demo model config and processor.
pub struct TinySetup {
    /// Scratch folder of the test.
    pub dir: PathBuf,
    /// Dataset root (records' paths are relative to it).
    pub root: PathBuf,
    /// Training records.
    pub records: Vec<Record>,
    /// The demo model config.
    pub config: VlmConfig,
    /// Its processor.
    pub processor: FileProcessor,
}

/// Builds the setup in a temporary folder named after `name`.
pub fn tiny_setup(name: &str) -> TinySetup {
    let dir = std::env::temp_dir().join(format!("firempo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let root = dir.join("data");
    let synth = SynthConfig {
        n_train: 8,
        n_val: 2,
        n_test: 2,
        ..SynthConfig::default()
    };
    generate(&synth, &root).unwrap();
    let records = read_jsonl(&root.join("train.jsonl"), BadRecordPolicy::Stop)
        .unwrap()
        .items;
    let (config, processor) = demo_processor(&records).unwrap();
    TinySetup {
        dir,
        root,
        records,
        config,
        processor,
    }
}

/// The demo model of `setup`, seeded (backend seed 0), vision frozen, with `lora` adapters, and
/// the tokenized presence pairs of its records.
pub fn policy_and_examples(
    setup: &TinySetup,
    lora: &firempo_models::LoraConfig,
) -> (
    firempo::pipeline::model::Model<burn::backend::Autodiff<firempo::backend::TestCpu>>,
    Vec<firempo::pipeline::align::AlignExample>,
) {
    type B = burn::backend::Autodiff<firempo::backend::TestCpu>;
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 0);
    let pairs = crate::align::presence_pairs(&setup.records, &setup.root);
    let policy = firempo::pipeline::model::Model::from(setup.config.init::<B>(&device))
        .freeze_vision()
        .with_lora(lora, &device)
        .unwrap();
    let examples =
        firempo::pipeline::align::align_examples(&setup.processor, &pairs, &setup.root).unwrap();
    (policy, examples)
}
