//! Compares every loss, metric and gradient with the independent PyTorch reference
//! (`tests/fixtures/make_reference_losses.py`, float64). Tolerance: 1e-9 absolute + 1e-9 relative.

use crate::common;

use burn::backend::{Autodiff, NdArray};
use common::{evaluate, BatchData};
use firempo_losses::PreferenceLoss;
use serde::Deserialize;
use std::collections::BTreeMap;

type B = Autodiff<NdArray<f64>>;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    loss: PreferenceLoss,
    batch: BatchData,
    expected: Expected,
}

#[derive(Deserialize)]
struct Expected {
    loss: f64,
    per_example: Vec<f64>,
    metrics: BTreeMap<String, f64>,
    grads: BTreeMap<String, Vec<f64>>,
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 + 1e-9 * b.abs()
}

#[test]
fn every_loss_matches_the_pytorch_reference() {
    let text = include_str!("../fixtures/reference_losses.json");
    let fixture: Fixture = serde_json::from_str(text).expect("fixture parses");
    assert!(
        fixture.cases.len() >= 9,
        "fixture has {} cases",
        fixture.cases.len()
    );
    let device = Default::default();
    for case in &fixture.cases {
        let got = evaluate::<B>(&case.loss, &case.batch, &device);
        let name = &case.name;
        assert!(
            close(got.loss, case.expected.loss),
            "{name}: loss {} vs {}",
            got.loss,
            case.expected.loss
        );
        for (i, (g, e)) in got
            .per_example
            .iter()
            .zip(&case.expected.per_example)
            .enumerate()
        {
            assert!(close(*g, *e), "{name}: per_example[{i}] {g} vs {e}");
        }
        // Every metric the Rust loss reports is checked, and it reports every metric the reference has.
        assert_eq!(
            got.metrics.values.len(),
            case.expected.metrics.len(),
            "{name}: metric sets differ: {:?} vs {:?}",
            got.metrics.values,
            case.expected.metrics.keys()
        );
        for (metric, value) in &got.metrics.values {
            let expected = case
                .expected
                .metrics
                .get(metric.name())
                .unwrap_or_else(|| panic!("{name}: reference lacks {metric}"));
            assert!(
                close(*value, *expected),
                "{name}: {metric} {value} vs {expected}"
            );
        }
        for (variant, grad) in &got.grads {
            let expected = &case.expected.grads[*variant];
            assert_eq!(
                grad.len(),
                expected.len(),
                "{name}: grad length of {variant}"
            );
            for (i, (g, e)) in grad.iter().zip(expected).enumerate() {
                assert!(
                    close(*g, *e),
                    "{name}: d loss / d {variant}[{i}] {g} vs {e}"
                );
            }
        }
    }
}
