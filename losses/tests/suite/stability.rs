//! Numerical stability: logits of ±80 and a 32k vocabulary give finite losses and gradients, in f32.

use crate::common;

use burn::backend::Autodiff;
use common::{all_losses, evaluate, random_batch, CpuF32};

type B = Autodiff<CpuF32>;

#[test]
fn extreme_logits_and_large_vocabulary_stay_finite() {
    let device = Default::default();
    let mut data = random_batch(21, 2, 3, 32_000, 80.0);
    // Make the chosen label the least likely token of its row: log π(y) ≈ −160.
    let (t, v) = (data.t, data.v);
    for (row, label) in data.chosen.labels.iter().enumerate() {
        let base = row * v;
        data.chosen.policy_logits[base..base + v]
            .iter_mut()
            .for_each(|x| *x = 80.0);
        data.chosen.policy_logits[base + *label as usize] = -80.0;
    }
    assert_eq!(data.chosen.labels.len(), 2 * t);
    for (name, loss) in all_losses() {
        let out = evaluate::<B>(&loss, &data, &device);
        assert!(out.loss.is_finite(), "{name}: loss {}", out.loss);
        assert!(
            out.loss > 0.0,
            "{name}: loss is a positive NLL here, got {}",
            out.loss
        );
        for (metric, value) in &out.metrics.values {
            assert!(value.is_finite(), "{name}: {metric} = {value}");
        }
        for (variant, grad) in &out.grads {
            assert!(
                grad.iter().all(|g| g.is_finite()),
                "{name}: non-finite gradient in {variant}"
            );
        }
    }
}
