//! `--gradient-checkpointing` through the training objectives: the per-layer recompute gives the
//! gradients of the plain backward for a FiRe-MPO LoRA alignment step (the demo LLaVA and a
//! Qwen3-VL checkpoint, DeepStack included) and a full SFT step (every weight, the vision tower
//! through the surrogate pass), and two alignment steps end at the same adapters.

use burn::backend::Autodiff;
use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::backend::AutodiffBackend;
use burn::tensor::{ElementConversion, Tensor};
use firempo::backend::TestCpu;
use firempo::losses::{FiReMpoConfig, PreferenceLoss};
use firempo::pipeline::align::{align_examples, reference_of, AlignObjective};
use firempo::pipeline::model::Model;
use firempo::pipeline::model_dir::load_model;
use firempo::pipeline::sft::{sft_examples, SftObjective};
use firempo::train::trainable::trainable_params;
use firempo::train::{train, CheckpointedLoss, Objective, RunIdentity, TrainerConfig};
use firempo_models::{backward_checkpointed, LoraConfig};

use crate::align::presence_pairs;
use crate::qwen_checkpoint::qwen_checkpoint_of;

type B = Autodiff<TestCpu>;

/// Gradients of relative difference ≤ this (f32; ndarray gives exactly equal ones).
const GRAD_REL: f64 = 1e-6;

/// The accumulated gradients of one micro-batch, plain or checkpointed, as the trainer sums them.
fn gradients<O: Objective<B, Model = Model<B>>>(
    objective: &O,
    model: &Model<B>,
    examples: &[usize],
    checkpointing: bool,
) -> GradientsParams {
    let CheckpointedLoss { output, tapes } = if checkpointing {
        objective.checkpointed_loss(model, examples).unwrap()
    } else {
        CheckpointedLoss {
            output: objective.loss(model, examples).unwrap(),
            tapes: Vec::new(),
        }
    };
    assert_eq!(tapes.is_empty(), !checkpointing);
    let mut acc = GradientsAccumulator::<Model<B>>::new();
    backward_checkpointed(output.loss, tapes, |g| {
        acc.accumulate(model, GradientsParams::from_grads(g, model))
    });
    acc.grads()
}

/// Worst relative difference (per tensor, to its largest entry) over the trainable parameters,
/// the parameters with a gradient in one set only, and the plain gradients' total |·|.
struct Compare<'a> {
    plain: &'a GradientsParams,
    ckpt: &'a GradientsParams,
    worst_rel: f64,
    missing: usize,
    plain_sum: f64,
    params: usize,
}

impl<Bk: AutodiffBackend> ModuleVisitor<Bk> for Compare<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
        if !param.val().is_require_grad() {
            return;
        }
        self.params += 1;
        match (
            self.plain.get::<Bk::InnerBackend, D>(param.id),
            self.ckpt.get::<Bk::InnerBackend, D>(param.id),
        ) {
            (Some(p), Some(c)) => {
                let scale = p.clone().abs().max().into_scalar().elem::<f64>();
                let diff = (p.clone() - c).abs().max().into_scalar().elem::<f64>();
                self.plain_sum += p.abs().sum().into_scalar().elem::<f64>();
                self.worst_rel = self.worst_rel.max(diff / scale.max(1e-30));
            }
            (None, None) => {}
            _ => self.missing += 1,
        }
    }
}

fn assert_same_gradients<O: Objective<B, Model = Model<B>>>(
    name: &str,
    objective: &O,
    model: &Model<B>,
    examples: &[usize],
) {
    let plain = gradients(objective, model, examples, false);
    let ckpt = gradients(objective, model, examples, true);
    let mut cmp = Compare {
        plain: &plain,
        ckpt: &ckpt,
        worst_rel: 0.0,
        missing: 0,
        plain_sum: 0.0,
        params: 0,
    };
    model.visit(&mut cmp);
    eprintln!(
        "{name}: {} trainable tensors, worst relative |Δgrad| {:e}",
        cmp.params, cmp.worst_rel
    );
    assert!(cmp.plain_sum > 0.0, "{name}: the gradients are all zero");
    assert_eq!(cmp.missing, 0, "{name}: a gradient in one mode only");
    assert!(
        cmp.worst_rel <= GRAD_REL,
        "{name}: relative |Δgrad| {:e}",
        cmp.worst_rel
    );
}

fn lora() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        ..LoraConfig::default()
    }
}

fn fire_mpo() -> PreferenceLoss {
    PreferenceLoss::FireMpo(FiReMpoConfig {
        gamma: 0.5,
        beta: 0.5,
        ..FiReMpoConfig::default()
    })
}

#[test]
fn checkpointed_fire_mpo_and_sft_steps_give_the_plain_gradients() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("ckpt-grads");
    let device = Default::default();
    <B as burn::tensor::backend::Backend>::seed(&device, 0);
    let pairs = presence_pairs(&setup.records, &setup.root);
    let batch: Vec<usize> = (0..4.min(pairs.len())).collect();

    // FiRe-MPO, LoRA, on the demo LLaVA: clean and corrupted images, two tapes.
    let processor = &setup.processor;
    let policy = Model::from(setup.config.init::<B>(&device))
        .freeze_vision()
        .with_lora(&lora(), &device)
        .unwrap();
    let objective = AlignObjective::<B> {
        processor,
        examples: align_examples(processor, &pairs, &setup.root).unwrap(),
        loss: fire_mpo(),
        reference: reference_of(&policy),
        device,
    };
    assert!(objective.examples[..batch.len()]
        .iter()
        .any(|e| e.corrupted_image.is_some()));
    assert_same_gradients("llava fire-mpo lora", &objective, &policy, &batch);

    // Full SFT of the demo LLaVA: every weight, the vision tower and embeddings included.
    let model = Model::from(setup.config.init::<B>(&device));
    let sft = SftObjective::<B> {
        processor,
        examples: sft_examples(processor, &setup.records, &setup.root).unwrap(),
        device,
    };
    assert_same_gradients("llava sft full", &sft, &model, &[0, 1, 2]);

    // FiRe-MPO, LoRA, on Qwen3-VL (DeepStack levels added inside the checkpointed trunk).
    let checkpoint = qwen_checkpoint_of(&setup.dir, "qwen3_vl");
    let (model, qwen_processor) = load_model::<B>(&checkpoint, &device).unwrap();
    let policy = model.freeze_vision().with_lora(&lora(), &device).unwrap();
    let objective = AlignObjective::<B> {
        processor: &qwen_processor,
        examples: align_examples(&qwen_processor, &pairs, &setup.root).unwrap(),
        loss: fire_mpo(),
        reference: reference_of(&policy),
        device,
    };
    assert_same_gradients("qwen3_vl fire-mpo lora", &objective, &policy, &batch);
    // Full SFT of Qwen3-VL: the trainable tower's DeepStack features through the surrogate.
    let (model, _) = load_model::<B>(&checkpoint, &device).unwrap();
    let sft = SftObjective::<B> {
        processor: &qwen_processor,
        examples: sft_examples(&qwen_processor, &setup.records, &setup.root).unwrap(),
        device,
    };
    assert_same_gradients("qwen3_vl sft full", &sft, &model, &[0, 1]);
    std::fs::remove_dir_all(&setup.dir).ok();
}

/// The trained (adapter) tensors after two FiRe-MPO steps, with or without checkpointing.
fn two_align_steps(setup: &crate::common::TinySetup, checkpointing: bool) -> Vec<Vec<f32>> {
    let device = Default::default();
    let (policy, examples) = crate::common::policy_and_examples(setup, &lora());
    let objective = AlignObjective::<B> {
        processor: &setup.processor,
        examples,
        loss: fire_mpo(),
        reference: reference_of(&policy),
        device,
    };
    let trainer = TrainerConfig {
        steps: 2,
        micro_batch_size: 2,
        grad_accum: 2,
        lr: 1e-2,
        progress: false,
        gradient_checkpointing: checkpointing,
        ..TrainerConfig::default()
    };
    let run = setup.dir.join(format!("align-ckpt-{checkpointing}"));
    let outcome = train(
        &trainer,
        &objective,
        policy,
        &run,
        false,
        &RunIdentity::new("test"),
        &device,
    )
    .unwrap();
    trainable_params(&outcome.model)
        .params
        .into_iter()
        .map(|p| p.val().into_data().to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn two_checkpointed_align_steps_end_at_the_plain_adapters() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("ckpt-align");
    let plain = two_align_steps(&setup, false);
    let ckpt = two_align_steps(&setup, true);
    assert_eq!(plain.len(), ckpt.len());
    assert!(!plain.is_empty());
    let mut worst = 0f32;
    let mut moved = 0f32;
    for (p, c) in plain.iter().zip(&ckpt) {
        for (a, b) in p.iter().zip(c) {
            worst = worst.max((a - b).abs());
        }
        moved = moved.max(p.iter().map(|v| v.abs()).fold(0.0, f32::max));
    }
    eprintln!("adapters after 2 steps: max |Δ| {worst:e} (largest entry {moved})");
    // B starts at 0: a moved B shows the steps trained.
    assert!(moved > 1e-3, "the adapters moved");
    assert!(
        worst <= 1e-5,
        "checkpointed vs plain adapters: max |Δ| {worst:e}"
    );
    std::fs::remove_dir_all(&setup.dir).ok();
}
