//! A Qwen2.5-VL checkpoint directory through the stages (the tiny one of
//! `tests/support/qwen_checkpoint.rs`): its prompts and pixels, `sample`, `sft`, `align` and
//! `eval`, and LoRA outputs written adapter-only or merged.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use burn::tensor::Tensor;
use firempo::backend::{BackendTask, TestCpu};
use firempo::pipeline::batch::scoring_batch;
use firempo::pipeline::model::{Model, ModelConfig};
use firempo::pipeline::model_dir::load_model;
use firempo::stages::sft::{ModelSource, SftStage};
use firempo::train::TrainerConfig;
use firempo_models::{LoraConfig, Pixels};

use crate::qwen_checkpoint::{qwen_checkpoint, qwen_checkpoint_of};

type B = Autodiff<TestCpu>;

#[test]
fn qwen_prompts_hold_one_image_pad_per_merged_patch() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("qwen-prompt");
    let checkpoint = qwen_checkpoint(&setup.dir);
    let (model, processor) = load_model::<TestCpu>(&checkpoint, &Default::default()).unwrap();
    assert!(matches!(model, Model::QwenVl(_)));
    // The chat template's `<|vision_start|><|image_pad|><|vision_end|>` holds the image.
    assert_eq!(
        processor.format.template,
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
         <|vision_start|><image><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
    );
    assert_eq!(processor.format.eos_token, "<|im_end|>");
    assert_eq!(processor.format.bos_token, None);
    // A 64×64 image with at most 2240 pixels (longest_edge) and factor 8 (patch 4 · merge 2):
    // smart_resize gives 40×40, a 10×10 patch grid, 25 merged patches.
    let image = setup.records[0].image_path(&setup.root);
    assert_eq!(processor.image_tokens_of(&image).unwrap(), 25);
    let ids = processor
        .prompt_for(&setup.records[0].question, &image)
        .unwrap();
    let start = ids.iter().position(|&id| id == 122).unwrap();
    assert_eq!(ids[start + 1..start + 26], [120; 25]);
    assert_eq!(ids[start + 26], 123);
    assert_eq!(ids.iter().filter(|&&id| id == 120).count(), 25);
    let Pixels::Patches { values, grids } = processor
        .pixels::<TestCpu>(&[&image, &image], &Default::default())
        .unwrap()
    else {
        panic!("Qwen-VL takes patches");
    };
    assert_eq!(grids, vec![[1, 10, 10]; 2]);
    assert_eq!(values.dims(), [200, 3 * 2 * 4 * 4]);
    std::fs::remove_dir_all(&setup.dir).ok();
}

#[test]
fn qwen_checkpoint_runs_through_sample_sft_align_and_eval() {
    crate::hf_checkpoint::runs_through_sample_sft_align_and_eval(
        "qwen-stages",
        qwen_checkpoint,
        None,
    );
}

#[test]
fn qwen2_vl_and_qwen3_vl_checkpoints_run_through_the_stages_too() {
    // Qwen2-VL: Hub layout, LayerNorm vision blocks; Qwen3-VL: DeepStack, interleaved M-RoPE,
    // q/k-normed decoder, patch 16 (a 64×64 image: 4 image tokens).
    for family in ["qwen2_vl", "qwen3_vl"] {
        crate::hf_checkpoint::runs_through_sample_sft_align_and_eval(
            &format!("{family}-stages"),
            |dir: &Path| qwen_checkpoint_of(dir, family),
            None,
        );
    }
}

/// Answer log-probs of the first records under the model in `dir`.
fn scores(dir: &Path, setup: &crate::common::TinySetup) -> Vec<f32> {
    let device = Default::default();
    let (model, processor) = load_model::<TestCpu>(dir, &device).unwrap();
    let records = &setup.records[..2];
    let images: Vec<PathBuf> = records.iter().map(|r| r.image_path(&setup.root)).collect();
    let prompts: Vec<Vec<i64>> = records
        .iter()
        .zip(&images)
        .map(|(r, image)| processor.prompt_for(&r.question, image).unwrap())
        .collect();
    let answers: Vec<Vec<Vec<i64>>> = records
        .iter()
        .map(|r| vec![processor.answer_ids(&r.answer).unwrap()])
        .collect();
    let refs: Vec<&Path> = images.iter().map(PathBuf::as_path).collect();
    let pixels = processor.pixels::<TestCpu>(&refs, &device).unwrap();
    let batch = scoring_batch::<TestCpu>(&prompts, &answers, processor.special.pad, &device);
    let logits: Tensor<TestCpu, 4> = model.score_answers(&batch.packed, pixels).unwrap();
    logits.into_data().to_vec().unwrap()
}

#[test]
fn qwen_lora_runs_write_adapters_or_merged_weights_that_load_alike() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("qwen-merge");
    let checkpoint = qwen_checkpoint(&setup.dir);
    let sft = |name: &str, merge: bool| {
        SftStage {
            records: setup.root.join("train.jsonl"),
            out: setup.dir.join(name),
            model: ModelSource::Dir(checkpoint.clone()),
            limit: Some(4),
            freeze_vision: true,
            lora: Some(LoraConfig {
                rank: 4,
                alpha: 8.0,
                ..LoraConfig::default()
            }),
            trainer: TrainerConfig {
                steps: 2,
                micro_batch_size: 2,
                lr: 1e-2,
                warmup_steps: 0,
                checkpoint_every: 0,
                ..TrainerConfig::default()
            },
            resume: false,
            merge,
            dtype: Default::default(),
            prompt_format: None,
        }
        .run::<B>(Default::default())
        .unwrap()
    };
    let adapter_only = sft("adapter-only", false);
    let merged = sft("merged", true);
    assert!(adapter_only.join("base.json").is_file());
    assert!(!adapter_only.join("model.mpk").exists());
    assert!(merged.join("model.mpk").is_file());
    let (model, _) = load_model::<TestCpu>(&merged, &Default::default()).unwrap();
    assert!(matches!(model.config(), ModelConfig::QwenVl(_)));
    // Same seed, same data: the two runs trained the same adapters, so the directories hold the
    // same model whichever way they store it; and training moved it off the base.
    let base = scores(&checkpoint, &setup);
    let (a, b) = (scores(&adapter_only, &setup), scores(&merged, &setup));
    let max_diff = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0.0f32, f32::max)
    };
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
    assert!(max_diff(&a, &base) > 1e-3, "{}", max_diff(&a, &base));
    std::fs::remove_dir_all(&setup.dir).ok();
}
