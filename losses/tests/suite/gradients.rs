//! Gradients of every loss w.r.t. the policy logits of every variant, checked against central
//! finite differences in f64.

use crate::common;

use burn::backend::{Autodiff, NdArray};
use common::{all_losses, evaluate, loss_value, random_batch};

type B = Autodiff<NdArray<f64>>;
type Inner = NdArray<f64>;

const EPS: f64 = 1e-5;

#[test]
fn every_loss_gradient_matches_finite_differences() {
    let device = Default::default();
    for (name, loss) in all_losses() {
        let data = random_batch(11, 2, 3, 5, 2.0);
        let analytic = evaluate::<B>(&loss, &data, &device);
        let mut checked = 0;
        for (variant, grad) in &analytic.grads {
            for (i, g) in grad.iter().enumerate() {
                let mut plus = data.clone();
                let mut minus = data.clone();
                bump(&mut plus, variant, i, EPS);
                bump(&mut minus, variant, i, -EPS);
                let numeric = (loss_value::<Inner>(&loss, &plus, &device)
                    - loss_value::<Inner>(&loss, &minus, &device))
                    / (2.0 * EPS);
                assert!(
                    (numeric - g).abs() <= 1e-7 + 1e-5 * numeric.abs(),
                    "{name}: d/d {variant}[{i}]: analytic {g} vs numeric {numeric}"
                );
                checked += 1;
            }
        }
        assert_eq!(
            checked,
            4 * 2 * 3 * 5,
            "{name}: every element of all four variants is checked"
        );
        // The check must not pass vacuously: the loss depends on the chosen policy logits.
        let chosen = &analytic.grads[0].1;
        assert!(
            chosen.iter().any(|g| g.abs() > 1e-6),
            "{name}: chosen gradient is all zero"
        );
    }
}

fn bump(data: &mut common::BatchData, variant: &str, index: usize, delta: f64) {
    for (name, v) in data.variants_mut() {
        if name == variant {
            v.policy_logits[index] += delta;
        }
    }
}
