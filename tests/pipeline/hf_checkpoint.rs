//! A HuggingFace LLaVA checkpoint directory through the stages: the models crate's tiny
//! LLaVA+LLaMA parity fixture (made by `models/tests/fixtures/make_parity_fixtures.py`) with its
//! HF tokenizer, loaded by `sample`, `sft`, `align` and `eval`, with the prompt format of a
//! checkpoint chat template or of `--prompt-format`.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use firempo::backend::{BackendTask, TestCpu};
use firempo::losses::{FiReMpoConfig, PreferenceLoss};
use firempo::pipeline::model_dir::{load_model, load_model_as};
use firempo::stages::align::AlignStage;
use firempo::stages::eval::EvalStage;
use firempo::stages::sample::SampleStage;
use firempo::stages::sft::{ModelSource, SftStage};
use firempo::train::TrainerConfig;
use firempo_datasets::{write_jsonl, CorruptionConfig};
use firempo_models::{LoraConfig, PromptFormat};

type B = Autodiff<TestCpu>;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures")
}

/// A HF checkpoint directory in `dir`: the LLaVA+LLaMA fixture and the fixture tokenizer (which
/// has ChatML's special tokens); no chat template.
fn hf_checkpoint(dir: &Path) -> PathBuf {
    let hf = dir.join("hf");
    std::fs::create_dir_all(&hf).unwrap();
    for file in [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ] {
        std::fs::copy(fixtures().join("llava_llama").join(file), hf.join(file)).unwrap();
    }
    std::fs::copy(fixtures().join("tokenizer.json"), hf.join("tokenizer.json")).unwrap();
    hf
}

fn trainer(steps: usize) -> TrainerConfig {
    TrainerConfig {
        steps,
        micro_batch_size: 2,
        lr: 1e-3,
        warmup_steps: 0,
        checkpoint_every: 0,
        ..TrainerConfig::default()
    }
}

fn lora() -> Option<LoraConfig> {
    Some(LoraConfig {
        rank: 4,
        alpha: 8.0,
        ..LoraConfig::default()
    })
}

/// The ChatML prompt format the fixture ids were made with, as rendered from `origin`.
fn chatml(origin: String) -> PromptFormat {
    PromptFormat {
        template: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
                   <image>\n{question}<|im_end|>\n<|im_start|>assistant\n"
            .into(),
        bos_token: None,
        eos_token: "<|im_end|>".into(),
        origin: Some(origin),
    }
}

#[test]
fn prompt_ids_match_the_hf_tokenizer_and_chat_template() {
    let _serial = crate::common::exclusive();
    let dir = std::env::temp_dir().join(format!("firempo-hf-prompt-{}", std::process::id()));
    let hf = hf_checkpoint(&dir);
    // The checkpoint's own template: Qwen2-VL's (string content, so `<image>` stays).
    let template = hf.join("chat_template.jinja");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("models/src/templates/qwen-vl.jinja"),
        &template,
    )
    .unwrap();
    let (_, processor) =
        load_model::<TestCpu>(&hf, &Default::default()).expect("HF checkpoint loads");
    assert_eq!(processor.format, chatml(template.display().to_string()));
    // Ids written by HF `tokenizers` in make_parity_fixtures.py; `<image>` (120) expands to one id
    // per patch (32×32 image, 8×8 patches, class token dropped: 16).
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("chat_expected.json")).unwrap(),
    )
    .unwrap();
    let question = expected["question"].as_str().unwrap();
    let ids: Vec<i64> = expected["chatml_ids"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|id| {
            let id = id.as_i64().unwrap();
            std::iter::repeat_n(id, if id == 120 { 16 } else { 1 })
        })
        .collect();
    assert_eq!(
        processor
            .prompt_for(question, Path::new("any.png"))
            .unwrap(),
        ids
    );
    assert_eq!(processor.special.bos, None);
    assert_eq!(
        Some(processor.special.eos as u32),
        processor.tokenizer.token_to_id("<|im_end|>")
    );

    // A named format overrides it: plain ChatML has no default system turn.
    let (_, processor) = load_model_as::<TestCpu>(&hf, Some("chatml"), &Default::default())
        .expect("HF checkpoint loads");
    assert_eq!(
        processor.format.template,
        "<|im_start|>user\n<image>\n{question}<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(processor.format.eos_token, "<|im_end|>");

    // A template that writes no `<image>` for the image (Qwen2-VL's list form does, with string
    // content it would not; this one drops the content's image) is an error naming the file.
    std::fs::write(
        &template,
        "{% for m in messages %}{{ m.content | replace('<image>', '') }}{% endfor %}",
    )
    .unwrap();
    let err = load_model::<TestCpu>(&hf, &Default::default())
        .map(|_| ())
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("chat_template.jinja") && err.contains("exactly one `<image>`"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_llava_hf_processor_template_gives_the_llava_1_5_prompt() {
    let _serial = crate::common::exclusive();
    let dir = std::env::temp_dir().join(format!("firempo-hf-llava-{}", std::process::id()));
    let hf = hf_checkpoint(&dir);
    // llava-hf's list-content template in chat_template.json; answers end with eos_token.
    let template =
        std::fs::read_to_string(fixtures().join("chat_templates/llava_hf.jinja")).unwrap();
    std::fs::write(
        hf.join("chat_template.json"),
        serde_json::json!({ "chat_template": template }).to_string(),
    )
    .unwrap();
    std::fs::write(
        hf.join("tokenizer_config.json"),
        r#"{"eos_token": "<|endoftext|>"}"#,
    )
    .unwrap();
    let (_, processor) =
        load_model::<TestCpu>(&hf, &Default::default()).expect("HF checkpoint loads");
    assert_eq!(
        processor.format,
        PromptFormat {
            template: "USER: <image>\n{question} ASSISTANT:".into(),
            bos_token: None,
            eos_token: "<|endoftext|>".into(),
            origin: Some(hf.join("chat_template.json").display().to_string()),
        }
    );
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("chat_expected.json")).unwrap(),
    )
    .unwrap();
    let question = expected["question"].as_str().unwrap();
    assert_eq!(
        processor.format.prompt(question),
        expected["llava_1_5_prompt"].as_str().unwrap()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_checkpoint_without_chat_template_needs_a_prompt_format() {
    let _serial = crate::common::exclusive();
    let dir = std::env::temp_dir().join(format!("firempo-hf-noformat-{}", std::process::id()));
    let hf = hf_checkpoint(&dir);
    let err = load_model::<TestCpu>(&hf, &Default::default())
        .map(|_| ())
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("no chat template")
            && err.contains("--prompt-format")
            && firempo_models::PROMPT_FORMATS
                .iter()
                .all(|name| err.contains(name)),
        "{err}"
    );
    // llava-1.5 ends answers with `eos_token`, which this checkpoint names nowhere.
    let err = load_model_as::<TestCpu>(&hf, Some("llava-1.5"), &Default::default())
        .map(|_| ())
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("eos_token") && err.contains("tokenizer_config.json"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn hf_checkpoint_runs_through_sample_sft_align_and_eval() {
    runs_through_sample_sft_align_and_eval("hf-stages", hf_checkpoint, Some("qwen-vl"));
}

/// `sample`, `sft` (LoRA), `align` (FiRe-MPO, LoRA) and `eval` on the checkpoint directory
/// `checkpoint` makes in the test folder, with the named `prompt_format` (e.g. `qwen-vl`, the
/// ChatML format the LLaVA fixture ids were made with) or the checkpoint's own chat template.
pub fn runs_through_sample_sft_align_and_eval(
    name: &str,
    checkpoint: impl Fn(&Path) -> PathBuf,
    prompt_format: Option<&str>,
) {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup(name);
    let hf = checkpoint(&setup.dir);
    let device: burn::tensor::Device<TestCpu> = Default::default();
    let prompt_format = prompt_format.map(str::to_string);

    let samples = setup.dir.join("samples.jsonl");
    let count = SampleStage {
        records: setup.root.join("train.jsonl"),
        model: hf.clone(),
        out: samples.clone(),
        limit: Some(3),
        answer_types: None,
        batch: 2,
        max_new_tokens: 4,
        dtype: Default::default(),
        prompt_format: prompt_format.clone(),
        devices: Default::default(),
    }
    .run::<B>(device)
    .unwrap();
    assert_eq!(count, 3);
    assert_eq!(
        std::fs::read_to_string(&samples).unwrap().lines().count(),
        3
    );

    let sft = SftStage {
        records: setup.root.join("train.jsonl"),
        out: setup.dir.join("sft"),
        model: ModelSource::Dir(hf.clone()),
        limit: Some(8),
        freeze_vision: true,
        lora: lora(),
        trainer: trainer(2),
        resume: false,
        merge: false,
        dtype: Default::default(),
        prompt_format: prompt_format.clone(),
    }
    .run::<B>(device)
    .unwrap();
    assert!(sft.join("adapter/adapter_config.json").is_file());
    assert!(sft.join("model.json").is_file());

    let pairs = crate::align::presence_pairs(&setup.records, &setup.root);
    let pairs_path = setup.root.join("pairs.jsonl");
    write_jsonl(&pairs_path, &pairs).unwrap();
    let aligned = AlignStage {
        pairs: pairs_path,
        root: None,
        model: hf.clone(),
        out: setup.dir.join("align"),
        loss: PreferenceLoss::FireMpo(FiReMpoConfig::default()),
        lora: lora(),
        freeze_vision: true,
        ground_truth_chosen: None,
        trainer: trainer(2),
        resume: false,
        merge: false,
        dtype: Default::default(),
        prompt_format: prompt_format.clone(),
        held_out: None,
        precompute_reference: false,
    }
    .run::<B>(device)
    .unwrap();
    assert!(aligned.join("adapter/adapter_model.safetensors").is_file());
    let metrics = std::fs::read_to_string(aligned.join("run/metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");

    // The aligned model directory keeps the prompt format the run used, and says which it is.
    let (_, processor) = load_model::<TestCpu>(&aligned, &device).unwrap();
    let (_, started) = load_model_as::<TestCpu>(&hf, prompt_format.as_deref(), &device).unwrap();
    assert_eq!(processor.format, started.format);
    let origin = processor.format.origin.clone().unwrap();
    if let Some(name) = &prompt_format {
        assert_eq!(origin, format!("prompt format `{name}`"));
        let (_, processor) = load_model_as::<TestCpu>(&aligned, Some(name), &device).unwrap();
        assert_eq!(processor.format.origin.as_deref(), Some(origin.as_str()));
    }
    let err = load_model_as::<TestCpu>(&aligned, Some("chatml"), &device)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--prompt-format chatml") && err.contains(&origin),
        "{err}"
    );

    let report = EvalStage {
        records: setup.root.join("test.jsonl"),
        model: aligned,
        out: setup.dir.join("eval"),
        limit: Some(4),
        batch: 4,
        max_new_tokens: 4,
        corruption: CorruptionConfig::default(),
        finding_vocabulary: None,
        dtype: Default::default(),
        prompt_format: None,
        judge: None,
        sampling: Default::default(),
        devices: Default::default(),
    }
    .run::<B>(device)
    .unwrap();
    assert_eq!(report.counts.values().sum::<usize>(), 4);
    assert!(report.metrics["logp_drop"].is_finite());
    std::fs::remove_dir_all(&setup.dir).ok();
}

#[test]
fn a_folder_that_is_no_model_gets_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("firempo-hf-none-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let err = load_model::<TestCpu>(&dir, &Default::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("neither a firempo model directory"), "{err}");
    // A checkpoint without its tokenizer names the missing file and how to make it.
    let hf = hf_checkpoint(&dir);
    std::fs::remove_file(hf.join("tokenizer.json")).unwrap();
    let err = load_model::<TestCpu>(&hf, &Default::default())
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no tokenizer.json") && err.contains("save_pretrained"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
