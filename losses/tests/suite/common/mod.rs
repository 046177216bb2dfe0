//! Shared test support: plain-data batches (the same layout as the Python reference fixture),
//! conversion to burn tensors, a seeded generator, and loss evaluation with gradients.
#![allow(dead_code)]

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Int, Tensor, TensorData};
use firempo_losses::{
    CorruptedAnswers, MetricValues, PreferenceBatch, PreferenceLoss, ReferenceScores, ScoredAnswer,
};
use serde::Deserialize;

/// The f32 CPU backend of the f32 tests: ndarray, or flex with `--features test-flex`. The f64
/// reference tests name `NdArray<f64>` themselves (flex implements `Backend` for f32 only).
#[cfg(not(feature = "test-flex"))]
pub type CpuF32 = burn::backend::NdArray<f32>;
/// The f32 CPU backend of the f32 tests: flex (`--features test-flex`).
#[cfg(feature = "test-flex")]
pub type CpuF32 = burn::backend::Flex;

/// One answer variant as flat row-major vectors.
#[derive(Debug, Clone, Deserialize)]
pub struct VariantData {
    pub policy_logits: Vec<f64>,
    pub reference_logits: Vec<f64>,
    pub labels: Vec<i64>,
    pub answer_mask: Vec<f64>,
    pub phrase_ids: Vec<i64>,
}

/// A preference batch as plain data: `n` examples, `t` answer positions, `v` vocabulary entries.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchData {
    pub n: usize,
    pub t: usize,
    pub v: usize,
    pub chosen: VariantData,
    pub rejected: VariantData,
    pub corrupted_chosen: Option<VariantData>,
    pub corrupted_rejected: Option<VariantData>,
    pub present: Option<Vec<f64>>,
}

/// Names of the variants in the order [`BatchData::variants_mut`] yields them.
pub const VARIANTS: [&str; 4] = [
    "chosen",
    "rejected",
    "corrupted_chosen",
    "corrupted_rejected",
];

impl BatchData {
    /// Variants that exist, with their names.
    pub fn variants_mut(&mut self) -> Vec<(&'static str, &mut VariantData)> {
        let mut out = vec![
            ("chosen", &mut self.chosen),
            ("rejected", &mut self.rejected),
        ];
        if let Some(v) = self.corrupted_chosen.as_mut() {
            out.push(("corrupted_chosen", v));
        }
        if let Some(v) = self.corrupted_rejected.as_mut() {
            out.push(("corrupted_rejected", v));
        }
        out
    }

    /// Builds the burn batch on `device`.
    pub fn to_batch<B: Backend>(&self, device: &B::Device) -> PreferenceBatch<B> {
        let variant = |data: &VariantData| self.variant::<B>(data, device);
        let corrupted = self
            .corrupted_chosen
            .as_ref()
            .map(|chosen| CorruptedAnswers {
                chosen: variant(chosen),
                rejected: self.corrupted_rejected.as_ref().map(variant),
                present: Tensor::from_data(
                    TensorData::new(
                        self.present.clone().unwrap_or_else(|| vec![1.0; self.n]),
                        [self.n],
                    ),
                    device,
                ),
            });
        PreferenceBatch {
            chosen: variant(&self.chosen),
            rejected: variant(&self.rejected),
            corrupted,
        }
    }

    fn variant<B: Backend>(&self, data: &VariantData, device: &B::Device) -> ScoredAnswer<B> {
        let (n, t, v) = (self.n, self.t, self.v);
        let float3 =
            |x: &Vec<f64>| Tensor::<B, 3>::from_data(TensorData::new(x.clone(), [n, t, v]), device);
        let float2 =
            |x: &Vec<f64>| Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [n, t]), device);
        let int2 = |x: &Vec<i64>| {
            Tensor::<B, 2, Int>::from_data(TensorData::new(x.clone(), [n, t]), device)
        };
        ScoredAnswer {
            policy_logits: float3(&data.policy_logits),
            reference: ReferenceScores::Logits(float3(&data.reference_logits)),
            labels: int2(&data.labels),
            answer_mask: float2(&data.answer_mask),
            phrase_ids: int2(&data.phrase_ids),
        }
    }
}

/// Loss value, per-example losses, metrics, and gradients w.r.t. each variant's policy logits.
pub struct Evaluated {
    pub loss: f64,
    pub per_example: Vec<f64>,
    pub metrics: MetricValues,
    pub grads: Vec<(&'static str, Vec<f64>)>,
}

/// Evaluates `loss` on `data`, backpropagating to the policy logits of every variant.
pub fn evaluate<B: AutodiffBackend>(
    loss: &PreferenceLoss,
    data: &BatchData,
    device: &B::Device,
) -> Evaluated {
    let mut batch = data.to_batch::<B>(device);
    let track = |answer: &mut ScoredAnswer<B>| {
        answer.policy_logits = answer.policy_logits.clone().require_grad();
        answer.policy_logits.clone()
    };
    let mut leaves = vec![
        ("chosen", track(&mut batch.chosen)),
        ("rejected", track(&mut batch.rejected)),
    ];
    if let Some(corrupted) = batch.corrupted.as_mut() {
        leaves.push(("corrupted_chosen", track(&mut corrupted.chosen)));
        if let Some(rejected) = corrupted.rejected.as_mut() {
            leaves.push(("corrupted_rejected", track(rejected)));
        }
    }
    let output = loss.loss(batch).expect("valid loss inputs");
    let grads = output.loss.backward();
    let grads = leaves
        .into_iter()
        .map(|(name, leaf)| {
            let grad = leaf
                .grad(&grads)
                .map(|g| to_vec(g.into_data()))
                .unwrap_or_else(|| vec![0.0; leaf.dims().iter().product()]);
            (name, grad)
        })
        .collect();
    Evaluated {
        loss: to_vec(output.loss.clone().into_data())[0],
        per_example: to_vec(output.per_example.clone().into_data()),
        metrics: output.metrics.read(),
        grads,
    }
}

/// Loss value only (no graph), for finite differences.
pub fn loss_value<B: Backend>(loss: &PreferenceLoss, data: &BatchData, device: &B::Device) -> f64 {
    to_vec(
        loss.loss(data.to_batch::<B>(device))
            .expect("valid loss inputs")
            .loss
            .into_data(),
    )[0]
}

pub fn to_vec(data: TensorData) -> Vec<f64> {
    data.convert::<f64>().to_vec().expect("f64 data")
}

/// SplitMix64: a tiny, seeded, platform-independent generator for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[-scale, scale)`.
    pub fn uniform(&mut self, scale: f64) -> f64 {
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) * scale
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// A random batch with all four variants; every example has at least one answer token and one
/// phrase token; the last position of example 0 is padding. `scale` bounds the logits.
pub fn random_batch(seed: u64, n: usize, t: usize, v: usize, scale: f64) -> BatchData {
    let mut rng = Rng::new(seed);
    let answer = |rng: &mut Rng| {
        let labels: Vec<i64> = (0..n * t).map(|_| rng.below(v) as i64).collect();
        let answer_mask: Vec<f64> = (0..n * t)
            .map(|i| if i == t - 1 && t > 1 { 0.0 } else { 1.0 })
            .collect();
        let phrase_ids: Vec<i64> = (0..n * t)
            .map(|i| match i % t {
                0 => 1,
                j if j == t - 1 => 0,
                _ => (rng.below(3) as i64).min(2),
            })
            .collect();
        (labels, answer_mask, phrase_ids)
    };
    let variant = |rng: &mut Rng, tokens: &(Vec<i64>, Vec<f64>, Vec<i64>)| VariantData {
        policy_logits: (0..n * t * v).map(|_| rng.uniform(scale)).collect(),
        reference_logits: (0..n * t * v).map(|_| rng.uniform(scale)).collect(),
        labels: tokens.0.clone(),
        answer_mask: tokens.1.clone(),
        phrase_ids: tokens.2.clone(),
    };
    let chosen_tokens = answer(&mut rng);
    let rejected_tokens = answer(&mut rng);
    BatchData {
        n,
        t,
        v,
        chosen: variant(&mut rng, &chosen_tokens),
        rejected: variant(&mut rng, &rejected_tokens),
        corrupted_chosen: Some(variant(&mut rng, &chosen_tokens)),
        corrupted_rejected: Some(variant(&mut rng, &rejected_tokens)),
        present: Some(
            (0..n)
                .map(|i| if i == n - 1 && n > 1 { 0.0 } else { 1.0 })
                .collect(),
        ),
    }
}

/// Every loss in a few settings, covering the special cases users ask for.
pub fn all_losses() -> Vec<(&'static str, PreferenceLoss)> {
    use firempo_losses::{DpoConfig, FiReMpoConfig, MdpoConfig, RrpoConfig};
    vec![
        ("dpo", PreferenceLoss::Dpo(DpoConfig { beta: 0.5 })),
        (
            "rrpo",
            PreferenceLoss::Rrpo(RrpoConfig {
                beta: 0.5,
                alpha: 0.2,
            }),
        ),
        (
            "mdpo",
            PreferenceLoss::Mdpo(MdpoConfig {
                beta: 0.5,
                anchor_delta: 0.3,
                conditional_weight: 0.7,
                anchor_weight: 0.4,
            }),
        ),
        (
            "fire-mpo",
            PreferenceLoss::FireMpo(FiReMpoConfig {
                beta: 0.5,
                gamma: 0.3,
                lambda: 0.4,
                alpha: 0.2,
            }),
        ),
        (
            "fire-mpo-fkl-only",
            PreferenceLoss::FireMpo(FiReMpoConfig {
                beta: 0.3,
                gamma: 0.0,
                lambda: 1.0,
                alpha: 0.5,
            }),
        ),
        (
            "fire-mpo-rkl-only",
            PreferenceLoss::FireMpo(FiReMpoConfig {
                beta: 0.3,
                gamma: 0.2,
                lambda: 0.0,
                alpha: 0.5,
            }),
        ),
    ]
}
