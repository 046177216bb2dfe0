//! SFT of the tiny demo VLM on a few synthetic records: the loss falls and every trainable
//! parameter changes (TRL's `test_train` pattern).

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use firempo::backend::TestCpu;
use firempo::pipeline::model::Model;
use firempo::pipeline::sft::{sft_examples, SftObjective};
use firempo::train::{train, TrainerConfig};

type B = Autodiff<TestCpu>;

/// Every float parameter tensor of the model, flattened, with its module path, in visiting
/// order. The vision tower's `post_layernorm` is left out: LLaVA takes patch features before it,
/// so it never receives a gradient (as in HF transformers).
fn parameter_tensors(model: &Model<B>) -> Vec<(String, Vec<f32>)> {
    struct Collect {
        path: Vec<String>,
        tensors: Vec<(String, Vec<f32>)>,
    }
    impl ModuleVisitor<TestCpu> for Collect {
        fn enter_module(&mut self, name: &str, _container: &str) {
            self.path.push(name.to_string());
        }
        fn exit_module(&mut self, _name: &str, _container: &str) {
            self.path.pop();
        }
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<TestCpu, D>>) {
            let path = self.path.join(".");
            if !path.contains("post_layernorm") {
                self.tensors
                    .push((path, param.val().into_data().to_vec().unwrap()));
            }
        }
    }
    let mut collect = Collect {
        path: Vec::new(),
        tensors: Vec::new(),
    };
    model.clone().valid().visit(&mut collect);
    collect.tensors
}

#[test]
fn sft_lowers_the_loss_and_updates_every_parameter() {
    let _serial = crate::common::exclusive();
    let crate::common::TinySetup {
        dir,
        root,
        records,
        config,
        processor,
    } = crate::common::tiny_setup("sft");
    let device = Default::default();
    // Seeded: burn's RNG is process-wide, shared with the other tests of this binary.
    <B as burn::tensor::backend::Backend>::seed(&device, 0);
    let model = Model::from(config.init::<B>(&device));
    let before = parameter_tensors(&model);
    let objective = SftObjective::<B> {
        processor: &processor,
        examples: sft_examples(&processor, &records, &root).unwrap(),
        device,
    };
    let trainer = TrainerConfig {
        steps: 12,
        micro_batch_size: 8,
        lr: 3e-3,
        progress: false,
        ..TrainerConfig::default()
    };
    let outcome = train(
        &trainer,
        &objective,
        model,
        &dir.join("sft"),
        false,
        &firempo::train::RunIdentity::new("test"),
        &Default::default(),
    )
    .unwrap();
    let losses: Vec<f64> = outcome.rows.iter().map(|r| r["loss"]).collect();
    assert!(
        losses.last().unwrap() < &(losses[0] * 0.8),
        "loss fell: {losses:?}"
    );
    let after = parameter_tensors(&outcome.model);
    assert_eq!(before.len(), after.len());
    assert!(before.len() > 40, "{} parameter tensors", before.len());
    for ((name, a), (_, b)) in before.iter().zip(&after) {
        assert_ne!(a, b, "parameter {name} did not change");
    }
}
