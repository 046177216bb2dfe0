//! Low-rank adapters (LoRA, Hu et al. 2021; rsLoRA scaling, Kalajdzievski 2023) on linear layers,
//! laid out like PEFT's `tuners/lora/layer.py` so adapters travel to and from PEFT unchanged.
//!
//! `y = x W + b + s · dropout(x) A B`, with `A` `[d_in, rank]`, `B` `[rank, d_out]` (PEFT stores the
//! transposes `lora_A.weight` `[rank, d_in]`, `lora_B.weight` `[d_out, rank]`) and
//! `s = alpha / rank` (or `alpha / sqrt(rank)` with rsLoRA). `B` starts at zero, so a fresh adapter
//! leaves the model unchanged.
//!
//! Mixed precision: the base weight may be bf16/f16 (frozen, [`crate::precision`]); `A` and `B`
//! are always f32, so their gradients and AdamW moments are f32 master weights and small updates
//! are not rounded away.

use burn::module::{Initializer, Module, Param};
use burn::nn::{Dropout, DropoutConfig, Linear};
use burn::tensor::{backend::Backend, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::dropout::lora_dropout;
use crate::error::ModelError;
use crate::precision;

/// Decoder projections LoRA can target (PEFT `target_modules` suffixes).
pub const LORA_TARGETS: [&str; 7] = [
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
];

/// The largest update scale `alpha / rank` (`alpha / √rank` with rsLoRA) accepted: far above
/// any published setting (1–4, rsLoRA up to ~16 at large ranks).
pub const MAX_LORA_SCALING: f64 = 256.0;

/// LoRA hyperparameters; mirrors the fields of PEFT's `LoraConfig` that matter here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f64,
    /// Decoder projections to adapt, by PEFT module name (default: all seven of [`LORA_TARGETS`]).
    pub target_modules: Vec<String>,
    /// rsLoRA: scale by `alpha / sqrt(rank)` instead of `alpha / rank`.
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    fn default() -> Self {
        Self {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            target_modules: LORA_TARGETS.iter().map(|s| s.to_string()).collect(),
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor `s` multiplying `A B`.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }

    /// Whether the decoder projection called `name` (e.g. `q_proj`) gets an adapter.
    pub fn targets(&self, name: &str) -> bool {
        self.target_modules.iter().any(|t| t == name)
    }

    /// Rejects rank 0, non-finite alpha, dropout outside `[0, 1)` and unknown targets.
    pub fn validate(&self) -> Result<(), ModelError> {
        let bad = |field: &str, message: String| {
            Err(ModelError::InvalidConfig {
                field: format!("lora.{field}"),
                message,
            })
        };
        if self.rank == 0 {
            return bad("rank", "must be > 0".into());
        }
        if !self.alpha.is_finite() || self.alpha <= 0.0 {
            return bad(
                "alpha",
                format!("{} must be a finite number > 0", self.alpha),
            );
        }
        if self.scaling() > MAX_LORA_SCALING {
            return bad(
                "alpha",
                format!(
                    "{} gives the update a scale of {} (alpha / {}rank), above {MAX_LORA_SCALING}: \
                     the first steps would blow the weights up; usual alphas are 1–4 × the rank",
                    self.alpha,
                    self.scaling(),
                    if self.use_rslora { "√" } else { "" }
                ),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} must be in [0, 1)", self.dropout));
        }
        if let Some(t) = self
            .target_modules
            .iter()
            .find(|t| !LORA_TARGETS.contains(&t.as_str()))
        {
            return bad(
                "target_modules",
                format!("`{t}` is not a decoder projection; choose from {LORA_TARGETS:?}"),
            );
        }
        Ok(())
    }
}

/// The trainable pair `A`, `B` of one adapted layer.
#[derive(Module, Debug)]
pub struct LoraAdapter<B: Backend> {
    /// `[d_in, rank]`, PEFT's `lora_A.weight` transposed.
    pub a: Param<Tensor<B, 2>>,
    /// `[rank, d_out]`, PEFT's `lora_B.weight` transposed.
    pub b: Param<Tensor<B, 2>>,
    pub scaling: f64,
    pub dropout: Dropout,
}

impl<B: Backend> LoraAdapter<B> {
    /// PEFT's default init: `A ~ U(±1/sqrt(d_in))` (Kaiming-uniform with a = √5), `B = 0`.
    pub fn init(d_in: usize, d_out: usize, config: &LoraConfig, device: &B::Device) -> Self {
        let bound = 1.0 / (d_in as f64).sqrt();
        let a = Initializer::Uniform {
            min: -bound,
            max: bound,
        }
        .init_with([d_in, config.rank], Some(d_in), Some(config.rank), device);
        let b = Initializer::Zeros.init([config.rank, d_out], device);
        Self {
            a,
            b,
            scaling: config.scaling(),
            dropout: DropoutConfig::new(config.dropout).init(),
        }
    }

    /// `s · A B` as `[d_in, d_out]`, the update merged into the base weight.
    pub fn delta(&self) -> Tensor<B, 2> {
        self.a.val().matmul(self.b.val()) * self.scaling
    }
}

/// A linear layer with an optional adapter that can be switched off without removing it.
#[derive(Module, Debug)]
pub struct LoraLinear<B: Backend> {
    pub base: Linear<B>,
    pub adapter: Option<LoraAdapter<B>>,
    /// When false the layer computes the base projection only (the reference model).
    pub adapter_enabled: bool,
}

impl<B: Backend> LoraLinear<B> {
    /// Wraps a plain linear layer (no adapter).
    pub fn new(base: Linear<B>) -> Self {
        Self {
            base,
            adapter: None,
            adapter_enabled: true,
        }
    }

    /// `[..., d_in]` → `[..., d_out]`.
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match (&self.adapter, self.adapter_enabled) {
            (Some(adapter), true) => {
                // `s` scales the rank-r activations, not the d_out-wide update: one pass over
                // `[.., r]` instead of `[.., d_out]`, forward and backward.
                let low =
                    lora_dropout(&adapter.dropout, x.clone()).matmul(unsqueeze_to(adapter.a.val()));
                let update = (low * adapter.scaling).matmul(unsqueeze_to(adapter.b.val()));
                precision::linear(&self.base, x) + update
            }
            _ => precision::linear(&self.base, x),
        }
    }

    /// `(d_in, d_out)` of the base weight.
    pub fn dims(&self) -> (usize, usize) {
        let [d_in, d_out] = self.base.weight.dims();
        (d_in, d_out)
    }

    /// Adds a fresh adapter (replacing any existing one).
    pub fn attach(mut self, config: &LoraConfig, device: &B::Device) -> Self {
        let (d_in, d_out) = self.dims();
        self.adapter = Some(LoraAdapter::init(d_in, d_out, config, device));
        self.adapter_enabled = true;
        self
    }

    /// Folds `s · A B` into the base weight and drops the adapter: same outputs, no extra cost.
    /// The sum is taken in f32 and stored in the base weight's dtype.
    pub fn merge(mut self) -> Self {
        if let Some(adapter) = self.adapter.take() {
            let weight = self.base.weight.val();
            let dtype = precision::float_dtype(weight.dtype());
            let merged = (weight.cast(FloatDType::F32) + adapter.delta()).cast(dtype);
            self.base.weight = Param::from_tensor(merged.detach()).set_require_grad(false);
        }
        self.adapter_enabled = true;
        self
    }

    pub fn set_adapter_enabled(mut self, enabled: bool) -> Self {
        self.adapter_enabled = enabled;
        self
    }
}

/// Broadcasts a `[d_in, d_out]` matrix to rank `D` so `matmul` works for any input rank.
fn unsqueeze_to<B: Backend, const D: usize>(w: Tensor<B, 2>) -> Tensor<B, D> {
    w.unsqueeze::<D>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::{Autodiff, NdArray};
    use burn::nn::LinearConfig;

    type B = NdArray<f32>;

    #[test]
    fn fresh_adapter_is_identity_and_merge_matches() {
        let device = Default::default();
        let config = LoraConfig {
            rank: 2,
            alpha: 4.0,
            dropout: 0.0,
            ..LoraConfig::default()
        };
        let base = LinearConfig::new(4, 3).init::<B>(&device);
        let x = Tensor::<B, 3>::random([2, 5, 4], burn::tensor::Distribution::Default, &device);
        let plain = base.forward(x.clone());
        let mut lora = LoraLinear::new(base).attach(&config, &device);
        let fresh = lora.forward(x.clone());
        assert_eq!(plain.to_data(), fresh.to_data());

        // Give B non-zero values, as after training.
        let adapter = lora.adapter.as_mut().unwrap();
        adapter.b = Param::from_tensor(Tensor::ones([2, 3], &device));
        let on = lora.forward(x.clone());
        assert!((on.clone() - plain.clone()).abs().max().into_scalar() > 1e-3);
        let off = lora.clone().set_adapter_enabled(false).forward(x.clone());
        off.to_data()
            .assert_approx_eq::<f32>(&plain.to_data(), Default::default());
        let merged = lora.merge().forward(x);
        merged
            .to_data()
            .assert_approx_eq::<f32>(&on.to_data(), Default::default());
    }

    #[test]
    fn scaling_and_validation() {
        let mut c = LoraConfig {
            rank: 16,
            alpha: 32.0,
            ..LoraConfig::default()
        };
        assert_eq!(c.scaling(), 2.0);
        c.use_rslora = true;
        assert_eq!(c.scaling(), 8.0);
        let absurd = LoraConfig {
            alpha: 1e6,
            ..LoraConfig::default()
        };
        let err = absurd.validate().unwrap_err().to_string();
        assert!(
            err.contains("lora.alpha") && err.contains("125000"),
            "{err}"
        );
        c.target_modules.push("fc1".into());
        assert!(c.validate().unwrap_err().to_string().contains("fc1"));
        let _ = LinearConfig::new(2, 2).init::<Autodiff<B>>(&Default::default());
    }
}
