//! Hand-derived values, identities and special cases of every loss (ndarray, f64).

use crate::common;

use burn::backend::{Autodiff, NdArray};
use common::{evaluate, loss_value, random_batch, BatchData, VariantData};
use firempo_losses::{
    DpoConfig, FiReMpoConfig, LossError, MdpoConfig, Metric, PreferenceLoss, Requirements,
    RrpoConfig,
};

type B = Autodiff<NdArray<f64>>;
type Inner = NdArray<f64>;

const LN_4_3: f64 = 0.287_682_072_451_780_9; // ln(4/3)

fn ln(x: f64) -> f64 {
    x.ln()
}

/// One example, one answer token, two-word vocabulary; the reference is uniform.
/// Clean: π = [1/4, 3/4]; y+ = token 1, y− = token 0. Corrupted: π = [3/4, 1/4].
fn two_token_batch() -> BatchData {
    let variant = |policy: [f64; 2], label: i64| VariantData {
        policy_logits: policy.to_vec(),
        reference_logits: vec![0.0, 0.0],
        labels: vec![label],
        answer_mask: vec![1.0],
        phrase_ids: vec![1],
    };
    BatchData {
        n: 1,
        t: 1,
        v: 2,
        chosen: variant([0.0, ln(3.0)], 1),
        rejected: variant([0.0, ln(3.0)], 0),
        corrupted_chosen: Some(variant([ln(3.0), 0.0], 1)),
        corrupted_rejected: Some(variant([ln(3.0), 0.0], 0)),
        present: Some(vec![1.0]),
    }
}

fn value(loss: PreferenceLoss, data: &BatchData) -> f64 {
    loss_value::<Inner>(&loss, data, &Default::default())
}

fn assert_close(got: f64, expected: f64, what: &str) {
    assert!(
        (got - expected).abs() < 1e-12,
        "{what}: {got} vs {expected}"
    );
}

#[test]
fn dpo_hand_derived() {
    // r+ = ln(3/4) − ln(1/2) = ln 1.5, r− = ln(1/4) − ln(1/2) = ln 0.5 → −ln σ(ln 3) = ln(4/3).
    let got = value(
        PreferenceLoss::Dpo(DpoConfig { beta: 1.0 }),
        &two_token_batch(),
    );
    assert_close(got, LN_4_3, "DPO");
}

#[test]
fn rrpo_hand_derived() {
    // rank ln(4/3) + α · FKL, FKL(ref‖π) = ½ ln 2 + ½ ln(2/3) = ½ ln(4/3).
    let got = value(
        PreferenceLoss::Rrpo(RrpoConfig {
            beta: 1.0,
            alpha: 0.5,
        }),
        &two_token_batch(),
    );
    assert_close(got, LN_4_3 + 0.5 * 0.5 * LN_4_3, "RRPO");
}

#[test]
fn mdpo_hand_derived() {
    // DPO ln(4/3) + conditional −ln σ(ln 1.5 − ln 0.5) = ln(4/3) + anchor −ln σ(ln 1.5) = ln(5/3).
    let got = value(
        PreferenceLoss::Mdpo(MdpoConfig {
            beta: 1.0,
            ..MdpoConfig::default()
        }),
        &two_token_batch(),
    );
    assert_close(got, 2.0 * LN_4_3 + ln(5.0 / 3.0), "mDPO");
}

#[test]
fn fire_mpo_hand_derived() {
    // clean rank ln(4/3); visual: r(v',y−) = ln 1.5, r(v',y+) = ln 0.5 → −ln σ(ln 3) = ln(4/3);
    // FKL = ½ ln(4/3), RKL = ¼ ln ½ + ¾ ln 1.5.
    let config = FiReMpoConfig {
        beta: 1.0,
        gamma: 0.5,
        lambda: 0.25,
        alpha: 2.0,
    };
    let fkl = 0.5 * LN_4_3;
    let rkl = 0.25 * ln(0.5) + 0.75 * ln(1.5);
    let expected = LN_4_3 + 0.5 * LN_4_3 + 2.0 * (0.25 * fkl + 0.75 * rkl);
    let out = evaluate::<B>(
        &PreferenceLoss::FireMpo(config),
        &two_token_batch(),
        &Default::default(),
    );
    assert_close(out.loss, expected, "FiRe-MPO");
    assert_close(
        out.metrics.get(Metric::ForwardKl).unwrap(),
        fkl,
        "FKL metric",
    );
    assert_close(
        out.metrics.get(Metric::ReverseKl).unwrap(),
        rkl,
        "RKL metric",
    );
    assert_close(
        out.metrics.get(Metric::VisualMargin).unwrap(),
        ln(3.0),
        "visual margin",
    );
    assert_close(
        out.metrics.get(Metric::RewardMargin).unwrap(),
        ln(3.0),
        "reward margin",
    );
    assert_close(
        out.metrics.get(Metric::RewardAccuracy).unwrap(),
        1.0,
        "reward accuracy",
    );
}

/// Policy logits replaced by the reference logits in every variant.
fn policy_equals_reference(mut data: BatchData) -> BatchData {
    for (_, variant) in data.variants_mut() {
        variant.policy_logits = variant.reference_logits.clone();
    }
    data
}

#[test]
fn policy_equal_to_reference_gives_zero_rewards_and_kl() {
    let data = policy_equals_reference(random_batch(3, 3, 4, 6, 3.0));
    let device = Default::default();
    for (name, loss) in common::all_losses() {
        let out = evaluate::<B>(&loss, &data, &device);
        for metric in [
            Metric::ChosenReward,
            Metric::RejectedReward,
            Metric::ForwardKl,
            Metric::ReverseKl,
            Metric::VisualMargin,
        ] {
            if let Some(v) = out.metrics.get(metric) {
                assert!(v.abs() < 1e-12, "{name}: {metric} = {v}");
            }
        }
        if name == "dpo" {
            assert_close(
                out.loss,
                std::f64::consts::LN_2,
                "DPO at policy == reference",
            );
        }
    }
    // FiRe-MPO: every log-sigmoid term is ln 2; the visual term counts for the 2 of 3 present examples.
    let config = FiReMpoConfig {
        gamma: 0.3,
        ..FiReMpoConfig::default()
    };
    let got = value(PreferenceLoss::FireMpo(config), &data);
    assert_close(
        got,
        std::f64::consts::LN_2 * (1.0 + 0.3 * 2.0 / 3.0),
        "FiRe-MPO at policy == reference",
    );
}

/// `answer_mask` replaced by the phrase mask, so sequence-level losses see only phrase tokens.
fn phrase_tokens_only(mut data: BatchData) -> BatchData {
    for (_, variant) in data.variants_mut() {
        variant.answer_mask = variant
            .phrase_ids
            .iter()
            .zip(&variant.answer_mask)
            .map(|(id, m)| if *id > 0 { *m } else { 0.0 })
            .collect();
    }
    data
}

#[test]
fn fire_mpo_without_visual_term_and_kl_is_phrase_masked_dpo() {
    let data = random_batch(5, 3, 4, 6, 3.0);
    let fire = value(
        PreferenceLoss::FireMpo(FiReMpoConfig {
            beta: 0.4,
            gamma: 0.0,
            lambda: 0.5,
            alpha: 0.0,
        }),
        &data,
    );
    let dpo = value(
        PreferenceLoss::Dpo(DpoConfig { beta: 0.4 }),
        &phrase_tokens_only(data),
    );
    assert!((fire - dpo).abs() < 1e-12, "{fire} vs {dpo}");
}

#[test]
fn fire_mpo_with_forward_kl_only_is_rrpo_on_phrase_tokens() {
    let data = random_batch(6, 3, 4, 6, 3.0);
    let fire = value(
        PreferenceLoss::FireMpo(FiReMpoConfig {
            beta: 0.4,
            gamma: 0.0,
            lambda: 1.0,
            alpha: 0.3,
        }),
        &data,
    );
    let rrpo = value(
        PreferenceLoss::Rrpo(RrpoConfig {
            beta: 0.4,
            alpha: 0.3,
        }),
        &phrase_tokens_only(data),
    );
    assert!((fire - rrpo).abs() < 1e-12, "{fire} vs {rrpo}");
}

#[test]
fn lambda_selects_forward_or_reverse_kl() {
    let data = random_batch(7, 2, 4, 6, 3.0);
    let device = Default::default();
    for (lambda, pure) in [(1.0, Metric::ForwardKl), (0.0, Metric::ReverseKl)] {
        let config = FiReMpoConfig {
            lambda,
            ..FiReMpoConfig::default()
        };
        let out = evaluate::<B>(&PreferenceLoss::FireMpo(config), &data, &device);
        let kl = out.metrics.get(Metric::KlLoss).unwrap();
        assert!(kl > 0.0, "λ={lambda}: KL must be positive on random logits");
        assert_close(kl, out.metrics.get(pure).unwrap(), &format!("λ={lambda}"));
    }
}

#[test]
fn empty_phrase_masks_leave_only_ln2_terms() {
    let mut data = random_batch(8, 2, 4, 6, 3.0);
    for (_, variant) in data.variants_mut() {
        variant.phrase_ids.iter_mut().for_each(|id| *id = 0);
    }
    let config = FiReMpoConfig {
        gamma: 0.2,
        ..FiReMpoConfig::default()
    };
    let out = evaluate::<B>(&PreferenceLoss::FireMpo(config), &data, &Default::default());
    // One of the two examples has a corrupted image.
    assert_close(
        out.loss,
        std::f64::consts::LN_2 * (1.0 + 0.2 * 0.5),
        "FiRe-MPO with no phrases",
    );
    for (variant, grad) in &out.grads {
        assert!(
            grad.iter().all(|g| *g == 0.0),
            "{variant}: no phrase tokens, no gradient"
        );
    }
}

#[test]
fn examples_without_corrupted_image_skip_the_visual_term() {
    let mut data = random_batch(9, 3, 4, 6, 3.0);
    data.present = Some(vec![0.0; 3]);
    let config = PreferenceLoss::FireMpo(FiReMpoConfig::default());
    let all_absent = evaluate::<B>(&config, &data, &Default::default());
    let mut none = data.clone();
    none.corrupted_chosen = None;
    none.corrupted_rejected = None;
    assert_close(
        all_absent.loss,
        value(config, &none),
        "absent flags vs no corrupted variants",
    );
    assert_eq!(all_absent.metrics.get(Metric::VisualMargin), Some(0.0));
    assert_eq!(all_absent.metrics.get(Metric::VisualLoss), Some(0.0));
    // Partial presence: the visual term only sees the present example.
    data.present = Some(vec![0.0, 1.0, 0.0]);
    let partial = evaluate::<B>(&config, &data, &Default::default());
    assert!(
        partial.loss > all_absent.loss,
        "a present example adds a positive visual term"
    );
    let cc = &partial
        .grads
        .iter()
        .find(|(n, _)| *n == "corrupted_chosen")
        .unwrap()
        .1;
    let per_example = cc.len() / 3;
    assert!(
        cc[..per_example].iter().all(|g| *g == 0.0),
        "absent example 0 gets no visual gradient"
    );
    assert!(
        cc[per_example..2 * per_example].iter().any(|g| *g != 0.0),
        "present example 1 gets one"
    );
}

#[test]
fn invalid_configs_are_clear_errors() {
    let data = two_token_batch();
    let device = Default::default();
    let cases = [
        (PreferenceLoss::Dpo(DpoConfig { beta: 0.0 }), "beta"),
        (
            PreferenceLoss::Rrpo(RrpoConfig {
                beta: 0.1,
                alpha: -0.1,
            }),
            "alpha",
        ),
        (
            PreferenceLoss::Mdpo(MdpoConfig {
                anchor_delta: f64::NAN,
                ..MdpoConfig::default()
            }),
            "anchor_delta",
        ),
        (
            PreferenceLoss::FireMpo(FiReMpoConfig {
                lambda: 1.5,
                ..FiReMpoConfig::default()
            }),
            "lambda",
        ),
        (
            PreferenceLoss::FireMpo(FiReMpoConfig {
                gamma: f64::INFINITY,
                ..FiReMpoConfig::default()
            }),
            "gamma",
        ),
    ];
    for (loss, field) in cases {
        let err = loss.loss(data.to_batch::<Inner>(&device)).unwrap_err();
        assert!(
            matches!(err, LossError::InvalidConfig { field: f, .. } if f == field),
            "{err}"
        );
        assert!(
            err.to_string().contains(field),
            "message names the field: {err}"
        );
        assert_eq!(loss.validate().unwrap_err().to_string(), err.to_string());
    }
}

#[test]
fn shape_mismatches_and_missing_variants_are_errors() {
    let device = Default::default();
    let bad = two_token_batch();
    let mut batch = bad.to_batch::<Inner>(&device);
    batch.chosen.answer_mask = burn::tensor::Tensor::ones([1, 2], &device);
    let err = DpoConfig::default().loss(batch).unwrap_err();
    assert!(err.to_string().contains("chosen.answer_mask"), "{err}");

    let mut batch = two_token_batch().to_batch::<Inner>(&device);
    batch.corrupted.as_mut().unwrap().rejected = None;
    let err = FiReMpoConfig::default().loss(batch.clone()).unwrap_err();
    assert!(
        matches!(
            err,
            LossError::MissingInput {
                field: "corrupted.rejected",
                ..
            }
        ),
        "{err}"
    );
    // Without the visual term the rejected corrupted variant is not needed.
    assert!(FiReMpoConfig {
        gamma: 0.0,
        ..FiReMpoConfig::default()
    }
    .loss(batch.clone())
    .is_ok());
    // mDPO only needs (v', y+).
    assert!(MdpoConfig::default().loss(batch).is_ok());
}

#[test]
fn configs_deserialize_with_defaults_and_reject_unknown_fields() {
    let loss: PreferenceLoss =
        serde_json::from_str(r#"{"method": "fire-mpo", "gamma": 0.2}"#).unwrap();
    assert_eq!(
        loss,
        PreferenceLoss::FireMpo(FiReMpoConfig {
            gamma: 0.2,
            ..FiReMpoConfig::default()
        })
    );
    assert_eq!(
        FiReMpoConfig::default(),
        FiReMpoConfig {
            beta: 0.1,
            gamma: 0.1,
            lambda: 0.5,
            alpha: 0.01
        }
    );
    let err = serde_json::from_str::<PreferenceLoss>(r#"{"method": "fire-mpo", "gama": 0.2}"#)
        .unwrap_err();
    assert!(err.to_string().contains("gama"), "{err}");
    let err = serde_json::from_str::<PreferenceLoss>(r#"{"method": "ppo"}"#).unwrap_err();
    assert!(err.to_string().contains("ppo"), "{err}");
    assert_eq!(
        PreferenceLoss::FireMpo(FiReMpoConfig::default()).requirements(),
        Requirements {
            corrupted_chosen: true,
            corrupted_rejected: true
        }
    );
    assert_eq!(
        PreferenceLoss::Dpo(DpoConfig::default()).requirements(),
        Requirements::default()
    );
}
