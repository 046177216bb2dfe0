//! Mixed precision: frozen base weights stored and multiplied in bf16/f16, everything that trains
//! or feeds a loss in f32 (master weights, as PyTorch AMP with a frozen half-precision base does,
//! and PEFT/TRL's LoRA on a bf16 model).
//!
//! What burn 0.21 does with mixed dtypes (measured on flex and `Autodiff<Flex>`,
//! `models/tests/suite/precision.rs`): no op promotes. `matmul` of an f32 and a bf16 tensor panics
//! ("matmul: dtype mismatch"), so does `+` ("storage: dtype mismatch"); `Tensor::cast` works and
//! its backward casts the gradient back to the source dtype; `Tensor::from_data` converts to the
//! default float dtype (f32) unless the creation options name a dtype. ndarray has no f16/bf16
//! (`cast` panics "Unsupported dtype"), which [`check_backend_dtype`] turns into an error before
//! anything is built. So the rule here: activations stay f32; a half-precision linear layer casts
//! its input to the weight's dtype, multiplies, and casts the result back ([`linear`]).

use std::fmt;
use std::str::FromStr;

use burn::nn::Linear;
use burn::tensor::{backend::Backend, DType, FloatDType, Tensor};
use serde::{Deserialize, Serialize};

use crate::decoder::Decoder;
use crate::error::ModelError;

/// The dtype frozen base weights are stored and multiplied in (`--dtype`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightDType {
    /// Everything in f32 (the default on CPU backends).
    #[default]
    F32,
    /// bfloat16: f32's range, 8 mantissa bits (relative rounding 2⁻⁸ ≈ 0.4 %).
    Bf16,
    /// IEEE half: 11 mantissa bits, range ±65504.
    F16,
}

impl WeightDType {
    /// The burn float dtype.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            Self::F32 => FloatDType::F32,
            Self::Bf16 => FloatDType::BF16,
            Self::F16 => FloatDType::F16,
        }
    }

    /// The burn tensor dtype.
    pub fn dtype(self) -> DType {
        self.float_dtype().into()
    }

    /// bf16 or f16.
    pub fn is_half(self) -> bool {
        self != Self::F32
    }

    /// The CLI spelling: `f32`, `bf16`, `f16`.
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::Bf16 => "bf16",
            Self::F16 => "f16",
        }
    }
}

impl fmt::Display for WeightDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for WeightDType {
    type Err = ModelError;

    fn from_str(s: &str) -> Result<Self, ModelError> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" | "fp32" => Ok(Self::F32),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "f16" | "float16" | "fp16" | "half" => Ok(Self::F16),
            other => Err(ModelError::InvalidConfig {
                field: "dtype".into(),
                message: format!("`{other}` is not a weight dtype; choose bf16, f16 or f32"),
            }),
        }
    }
}

/// Fails unless backend `B` stores and computes `dtype` on `device`. ndarray is f32-only: asking
/// it for bf16/f16 is an error naming the fix, never a silent f32 run.
pub fn check_backend_dtype<B: Backend>(
    dtype: WeightDType,
    device: &B::Device,
) -> Result<(), ModelError> {
    if B::supports_dtype(device, dtype.dtype()) {
        return Ok(());
    }
    let name = B::name(device);
    // wgpu's WGSL shaders have f16 but no bf16: point at the dtype the backend does have.
    let other = [WeightDType::Bf16, WeightDType::F16]
        .into_iter()
        .find(|&d| d != dtype && B::supports_dtype(device, d.dtype()));
    let fix = match other {
        Some(other) => format!(
            "pass `--dtype {other}` (this backend has it), run with `--backend flex` (CPU) or \
             `--backend cuda` for {dtype}, or pass `--dtype f32`"
        ),
        None => "run with `--backend flex` (CPU), `--backend wgpu` (f16) or `--backend cuda`, \
                 or pass `--dtype f32`"
            .to_string(),
    };
    let only_f32 = if other.is_none() && name.contains("ndarray") {
        " (ndarray is f32-only)"
    } else {
        ""
    };
    Err(ModelError::InvalidConfig {
        field: "dtype".into(),
        message: format!("the {name} backend has no {dtype} tensors{only_f32}; {fix}"),
    })
}

/// Fails for full fine-tuning with half-precision weights: burn 0.21 has no master-weight
/// optimizer, so AdamW would update bf16 weights in place and lose every step smaller than
/// 2⁻⁸ of a weight (an lr-1e-6 update vanishes). LoRA keeps its adapters f32 and is fine.
pub fn check_full_finetune(dtype: WeightDType) -> Result<(), ModelError> {
    if !dtype.is_half() {
        return Ok(());
    }
    Err(ModelError::InvalidConfig {
        field: "dtype".into(),
        message: format!(
            "full fine-tuning with {dtype} weights would round every update into {dtype} and \
             lose small ones; train LoRA adapters (f32 master weights over the {dtype} base) or \
             pass `--dtype f32`"
        ),
    })
}

/// `x W + b` for a linear layer whose weight may be half precision: `x` is cast to the weight's
/// dtype for the product and the result cast back to `x`'s dtype, so callers see f32 in and out.
/// With equal dtypes this is `linear.forward(x)`. The bias is added in `x`'s dtype.
pub fn linear<B: Backend, const D: usize>(linear: &Linear<B>, x: Tensor<B, D>) -> Tensor<B, D> {
    let weight = linear.weight.val();
    let (x_dtype, w_dtype) = (x.dtype(), weight.dtype());
    if x_dtype == w_dtype {
        return linear.forward(x);
    }
    let float = float_dtype;
    let y = x
        .cast(float(w_dtype))
        .matmul(weight.unsqueeze::<D>())
        .cast(float(x_dtype));
    match &linear.bias {
        Some(bias) => y + bias.val().cast(float(x_dtype)).unsqueeze::<D>(),
        None => y,
    }
}

/// The float dtype of tensor dtype `d` (non-float dtypes: f32).
pub(crate) fn float_dtype(d: DType) -> FloatDType {
    match d {
        DType::F64 => FloatDType::F64,
        DType::F16 => FloatDType::F16,
        DType::BF16 => FloatDType::BF16,
        _ => FloatDType::F32,
    }
}

/// The linear layer with its weight and bias cast to `dtype` (frozen: no gradients).
pub fn cast_linear<B: Backend>(mut linear: Linear<B>, dtype: WeightDType) -> Linear<B> {
    let cast = |t: Tensor<B, 1>| t.cast(dtype.float_dtype()).detach();
    let weight = linear.weight.val().cast(dtype.float_dtype()).detach();
    linear.weight = burn::module::Param::from_tensor(weight).set_require_grad(false);
    linear.bias = linear
        .bias
        .map(|b| burn::module::Param::from_tensor(cast(b.val())).set_require_grad(false));
    linear
}

/// The decoder with the base weights of its seven projections per layer in `dtype` (adapters,
/// norms, embeddings and the head untouched, so they stay f32). For models loaded in f32 (a
/// firempo model directory, Qwen-VL): it converts after loading, so the load itself peaks at f32.
pub fn cast_base_weights<B: Backend>(mut decoder: Decoder<B>, dtype: WeightDType) -> Decoder<B> {
    if !dtype.is_half() {
        return decoder;
    }
    decoder.layers = decoder
        .layers
        .into_iter()
        .map(|layer| {
            layer.map_projections(&mut |_, mut p| {
                p.base = cast_linear(p.base, dtype);
                p
            })
        })
        .collect();
    decoder
}

/// Which dtype a float tensor is, as a [`WeightDType`] (f64 and others: `None`).
pub fn weight_dtype_of<B: Backend, const D: usize>(t: &Tensor<B, D>) -> Option<WeightDType> {
    match t.dtype() {
        DType::F32 => Some(WeightDType::F32),
        DType::BF16 => Some(WeightDType::Bf16),
        DType::F16 => Some(WeightDType::F16),
        _ => None,
    }
}
