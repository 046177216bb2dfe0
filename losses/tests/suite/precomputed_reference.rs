//! Precomputed reference label log-probs (`ReferenceScores::LabelLogProbs`, what
//! `firempo align --precompute-reference` feeds the losses): DPO and mDPO give the same loss and
//! policy gradients as with the reference logits; RRPO and FiRe-MPO, whose KL reads the
//! reference's whole distribution, refuse them with an error naming the missing input.

use crate::common;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::Tensor;
use common::{all_losses, evaluate, random_batch, to_vec};
use firempo_losses::logps::VocabLogProbs;
use firempo_losses::{LossError, PreferenceBatch, ReferenceScores, ScoredAnswer};

type B = Autodiff<NdArray<f64>>;

/// `answer` with its reference logits replaced by the label log-probs they give.
fn precomputed(mut answer: ScoredAnswer<B>) -> ScoredAnswer<B> {
    if let ReferenceScores::Logits(logits) = answer.reference {
        let logps = VocabLogProbs::from_logits(logits).label_log_probs(answer.labels.clone());
        answer.reference = ReferenceScores::LabelLogProbs(logps);
    }
    answer
}

/// Every variant of `batch` with precomputed reference label log-probs, the policy logits
/// tracked; returns the batch and the tracked leaves in variant order.
fn precomputed_batch(batch: PreferenceBatch<B>) -> (PreferenceBatch<B>, Vec<Tensor<B, 3>>) {
    let mut leaves = Vec::new();
    let mut track = |answer: ScoredAnswer<B>| {
        let mut answer = precomputed(answer);
        answer.policy_logits = answer.policy_logits.require_grad();
        leaves.push(answer.policy_logits.clone());
        answer
    };
    let chosen = track(batch.chosen);
    let rejected = track(batch.rejected);
    let corrupted = batch.corrupted.map(|mut corrupted| {
        corrupted.chosen = track(corrupted.chosen);
        corrupted.rejected = corrupted.rejected.map(&mut track);
        corrupted
    });
    let batch = PreferenceBatch {
        chosen,
        rejected,
        corrupted,
    };
    (batch, leaves)
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

#[test]
fn sequence_losses_give_the_same_loss_and_gradients_from_precomputed_label_logps() {
    let device = Default::default();
    let data = random_batch(7, 3, 4, 6, 3.0);
    let mut checked = 0;
    for (name, loss) in all_losses() {
        if loss.reads_reference_distribution() {
            continue;
        }
        let want = evaluate::<B>(&loss, &data, &device);
        let (batch, leaves) = precomputed_batch(data.to_batch::<B>(&device));
        let output = loss.loss(batch).expect("valid precomputed inputs");
        let grads = output.loss.backward();
        assert_close(&to_vec(output.loss.clone().into_data()), &[want.loss], name);
        assert_close(
            &to_vec(output.per_example.clone().into_data()),
            &want.per_example,
            &format!("{name} per-example"),
        );
        for (leaf, (variant, grad)) in leaves.iter().zip(&want.grads) {
            let got = leaf
                .grad(&grads)
                .map(|g| to_vec(g.into_data()))
                .unwrap_or_else(|| vec![0.0; grad.len()]);
            assert_close(&got, grad, &format!("{name} d/d {variant}"));
        }
        checked += 1;
    }
    assert_eq!(checked, 2, "DPO and mDPO are checked");
}

#[test]
fn kl_losses_refuse_precomputed_label_logps() {
    let device = Default::default();
    let data = random_batch(3, 2, 3, 5, 2.0);
    for (name, loss) in all_losses() {
        if !loss.reads_reference_distribution() {
            continue;
        }
        let (batch, _) = precomputed_batch(data.to_batch::<B>(&device));
        match loss.loss(batch) {
            Err(LossError::MissingInput { field, .. }) => {
                assert_eq!(field, "reference logits", "{name}")
            }
            other => panic!(
                "{name}: expected a MissingInput error, got {:?}",
                other.err()
            ),
        }
    }
}
