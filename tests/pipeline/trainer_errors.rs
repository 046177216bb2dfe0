//! Trainer failures are clear: a NaN loss stops the run naming the step, the examples and the
//! last good checkpoint; bad settings name the field.

use std::cell::Cell;

use burn::backend::Autodiff;
use burn::module::Param;
use firempo::backend::TestCpu;
use firempo::losses::{DpoConfig, LossOutput, PreferenceLoss};
use firempo::playground::{LogitTable, Playground, PlaygroundConfig};
use firempo::train::{train, Objective, TrainerConfig};

type B = Autodiff<TestCpu>;

/// The playground, with the policy logits turned to NaN from the `after`-th loss call on.
struct PoisonedAfter {
    inner: Playground<B>,
    calls: Cell<usize>,
    after: usize,
}

impl Objective<B> for PoisonedAfter {
    type Model = LogitTable<B>;

    fn num_examples(&self) -> usize {
        self.inner.num_examples()
    }

    fn loss(&self, model: &LogitTable<B>, examples: &[usize]) -> anyhow::Result<LossOutput<B>> {
        let call = self.calls.get();
        self.calls.set(call + 1);
        if call < self.after {
            return self.inner.loss(model, examples);
        }
        let poisoned = LogitTable {
            logits: Param::from_tensor(model.logits.val().mul_scalar(f64::NAN).detach()),
        };
        self.inner.loss(&poisoned, examples)
    }
}

fn config(name: &str) -> PlaygroundConfig {
    let run_dir = std::env::temp_dir().join(format!("firempo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&run_dir);
    PlaygroundConfig {
        loss: PreferenceLoss::Dpo(DpoConfig::default()),
        pairs: 4,
        answer_len: 3,
        vocab: 7,
        trainer: TrainerConfig {
            steps: 5,
            micro_batch_size: 2,
            lr: 0.01,
            checkpoint_every: 2,
            progress: false,
            ..TrainerConfig::default()
        },
        run_dir,
        resume: false,
    }
}

#[test]
fn nan_loss_stops_with_step_examples_and_last_checkpoint() {
    let _serial = crate::common::exclusive();
    let device = Default::default();
    let cfg = config("nan");
    let (inner, table) = Playground::<B>::new(&cfg, &device);
    let objective = PoisonedAfter {
        inner,
        calls: Cell::new(0),
        after: 2,
    };
    let err = train(
        &cfg.trainer,
        &objective,
        table,
        &cfg.run_dir,
        false,
        &firempo::train::RunIdentity::new("test"),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("loss is NaN at step 3"), "{err}");
    assert!(err.contains("examples ["), "{err}");
    assert!(
        err.contains("step-000002"),
        "names the last good checkpoint: {err}"
    );
    assert!(cfg
        .run_dir
        .join("checkpoints/step-000002/state.json")
        .exists());
    assert!(
        !cfg.run_dir.join("checkpoints/step-000003").exists(),
        "no checkpoint of the bad step"
    );
}

#[test]
fn invalid_trainer_settings_name_the_field() {
    let _serial = crate::common::exclusive();
    let device = Default::default();
    let mut cfg = config("invalid");
    cfg.trainer.lr = -1.0;
    let (objective, table) = Playground::<B>::new(&cfg, &device);
    let err = train(
        &cfg.trainer,
        &objective,
        table,
        &cfg.run_dir,
        false,
        &firempo::train::RunIdentity::new("test"),
        &device,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("`lr`"), "{err}");
}
