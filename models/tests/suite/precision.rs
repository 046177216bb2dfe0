//! Mixed precision on the `flex` CPU backend: decoder projections' base weights in bf16/f16,
//! adapters, norms and logits in f32. Checks bf16 logits against f32 on the parity fixtures, that
//! a LoRA step over a bf16 base moves the adapters like f32 does, that an lr-1e-6 AdamW step is
//! not rounded away, and the errors for ndarray and half-precision full fine-tuning. The same
//! logit and LoRA-step checks run on the suite's backend (`common::B`: wgpu through lavapipe in
//! CI) for each half dtype it has; one it lacks must be refused by name.

use crate::common;

use burn::backend::{Autodiff, Flex, NdArray};
use burn::module::Param;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::{activation::log_softmax, backend::Backend, DType, FloatDType, Int, Tensor};
use common::{fixture, Expected, B};
use firempo_models::loading::LoadOptions;
use firempo_models::precision::cast_base_weights;
use firempo_models::{
    check_backend_dtype, check_full_finetune, load_pretrained, load_pretrained_with, LoraConfig,
    Vlm, VlmInput, WeightDType,
};

/// Left padding of row 1 in the parity fixtures: those positions are garbage in every run.
const PAD: usize = 3;

fn load<Bk: Backend>(dir: &str, dtype: WeightDType) -> Vlm<Bk> {
    let options = LoadOptions {
        dtype,
        ..LoadOptions::default()
    };
    load_pretrained_with::<Bk>(&fixture(dir), &options, &Default::default()).unwrap()
}

fn floats<Bk: Backend, const D: usize>(t: Tensor<common::B, D>) -> Tensor<Bk, D> {
    Tensor::from_data(t.into_data(), &Default::default())
}

fn ints<Bk: Backend, const D: usize>(t: Tensor<common::B, D, Int>) -> Tensor<Bk, D, Int> {
    Tensor::from_data(t.into_data(), &Default::default())
}

fn fixture_input<Bk: Backend>(dir: &str) -> VlmInput<Bk> {
    let exp = Expected::open(fixture(dir).join("expected.safetensors"));
    VlmInput::new(ints(exp.ints::<2>("input_ids")))
        .with_pixels(floats(exp.floats::<4>("pixel_values")))
        .with_attention_mask(ints(exp.ints::<2>("attention_mask")))
}

/// Host logits of `[batch, seq, vocab]` with row 1's padding dropped, as one flat list.
fn attended<Bk: Backend>(logits: Tensor<Bk, 3>) -> Vec<f32> {
    let [_, seq, vocab] = logits.dims();
    let row0 = logits.clone().slice([0..1, 0..seq, 0..vocab]);
    let row1 = logits.slice([1..2, PAD..seq, 0..vocab]);
    let mut v = row0.into_data().convert::<f32>().to_vec::<f32>().unwrap();
    v.extend(row1.into_data().convert::<f32>().to_vec::<f32>().unwrap());
    v
}

struct Deviation {
    max_abs: f32,
    /// max |logit| of the f32 run.
    scale: f32,
}

fn deviation(got: &[f32], want: &[f32]) -> Deviation {
    let max_abs = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - w).abs())
        .fold(0f32, |m, d| if d.is_nan() { f32::NAN } else { m.max(d) });
    let scale = want.iter().fold(0f32, |m, w| m.max(w.abs()));
    Deviation { max_abs, scale }
}

/// bf16 (or f16) logits against f32 on one parity fixture, both on `Bk`; returns the deviation.
fn half_vs_f32<Bk: Backend>(dir: &str, dtype: WeightDType) -> Deviation {
    let f32_model = load::<Bk>(dir, WeightDType::F32);
    let half_model = load::<Bk>(dir, dtype);
    let q = &half_model.decoder.layers[0].self_attn.q_proj.base.weight;
    assert_eq!(
        q.val().dtype(),
        dtype.dtype(),
        "{dir}: q_proj stored in {dtype}"
    );
    let want = attended(f32_model.forward(fixture_input(dir)).unwrap());
    let logits = half_model.forward(fixture_input(dir)).unwrap();
    assert_eq!(logits.dtype(), DType::F32, "logits stay f32");
    let got = attended(logits);
    // The f32 run on flex itself matches transformers as on ndarray.
    let exp = Expected::open(fixture(dir).join("expected.safetensors"));
    let hf = attended::<Bk>(floats(exp.floats::<3>("logits")));
    let parity = deviation(&want, &hf).max_abs;
    let backend = Bk::name(&Default::default());
    assert!(
        parity <= 1e-4,
        "{dir}: {backend} f32 vs transformers {parity:e}"
    );
    let d = deviation(&got, &want);
    eprintln!(
        "{dir} {dtype} on {backend}: max |Δlogit| vs f32 {:.3e}, max |logit| {:.3}, relative {:.3e}",
        d.max_abs,
        d.scale,
        d.max_abs / d.scale
    );
    d
}

/// Measured on these fixtures (random tiny LLaVAs, max |logit| 1.14 and 1.22): bf16 moves the
/// logits by ≤ 0.39 % of the largest |logit| (4.5e-3 and 3.4e-3), f16 by ≤ 0.058 % (6.6e-4,
/// 4.5e-4). The bounds leave ~2.5× headroom; a bf16 weight read as garbage or a lost cast moves
/// them by the logits' own scale.
const BF16_REL_TOL: f32 = 1e-2;
const F16_REL_TOL: f32 = 1.5e-3;

/// The logit bound of `dtype`.
fn rel_tol(dtype: WeightDType) -> f32 {
    match dtype {
        WeightDType::Bf16 => BF16_REL_TOL,
        _ => F16_REL_TOL,
    }
}

/// `dtype`'s logits on `Bk` track f32's on both fixtures within [`rel_tol`] (and differ: the
/// weights were really rounded).
fn check_half_logits<Bk: Backend>(dtype: WeightDType) {
    for dir in ["llava_llama", "llava_qwen2"] {
        let d = half_vs_f32::<Bk>(dir, dtype);
        assert!(
            d.max_abs <= rel_tol(dtype) * d.scale && d.max_abs > 0.0,
            "{dir} {dtype}: {:e} vs scale {}",
            d.max_abs,
            d.scale
        );
    }
}

#[test]
fn bf16_and_f16_logits_track_f32_on_the_parity_fixtures() {
    check_half_logits::<Flex>(WeightDType::Bf16);
    check_half_logits::<Flex>(WeightDType::F16);
}

#[test]
fn decoding_straight_to_bf16_rounds_each_weight_to_nearest() {
    // llava_llama stores f32, llava_qwen2 bf16 (copied bit for bit). Reference: `half`'s
    // round-to-nearest-even `bf16::from_f32` of the f32 load. (flex's own `cast` goes through
    // `bf16::from_f64` and rounds llava_llama's value 0xbc908002 down instead of up: converting
    // after an f32 load is 1 ulp off there, so it is not the reference.)
    for dir in ["llava_llama", "llava_qwen2"] {
        let direct = load::<Flex>(dir, WeightDType::Bf16);
        let reference = load::<Flex>(dir, WeightDType::F32);
        let converted = cast_base_weights(reference.decoder.clone(), WeightDType::Bf16);
        for ((a, b), c) in direct
            .decoder
            .layers
            .iter()
            .zip(&reference.decoder.layers)
            .zip(&converted.layers)
        {
            for (((name, p), (_, q)), (_, r)) in a
                .projections()
                .iter()
                .zip(b.projections())
                .zip(c.projections())
            {
                let got = p.base.weight.val();
                assert_eq!(got.dtype(), DType::BF16, "{dir} {name}");
                assert_eq!(r.base.weight.val().dtype(), DType::BF16, "{dir} {name}");
                let got = got.into_data().to_vec::<half::bf16>().unwrap();
                let want: Vec<half::bf16> = q
                    .base
                    .weight
                    .val()
                    .into_data()
                    .to_vec::<f32>()
                    .unwrap()
                    .into_iter()
                    .map(half::bf16::from_f32)
                    .collect();
                assert!(got == want, "{dir} {name}: not the nearest bf16 values");
            }
        }
        let head = direct
            .decoder
            .lm_head
            .as_ref()
            .map(|h| h.weight.val().dtype());
        assert!(
            matches!(head, None | Some(DType::F32)),
            "{dir}: head stays f32"
        );
        assert_eq!(
            direct.decoder.layers[0].input_layernorm.gamma.val().dtype(),
            DType::F32,
            "{dir}: norms stay f32"
        );
    }
}

#[test]
fn ndarray_refuses_half_precision_by_name() {
    let options = LoadOptions {
        dtype: WeightDType::Bf16,
        ..LoadOptions::default()
    };
    let err = load_pretrained_with::<NdArray<f32>>(
        &fixture("llava_llama"),
        &options,
        &Default::default(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("ndarray") && err.contains("bf16") && err.contains("--backend flex"),
        "{err}"
    );
    // f32 on ndarray is what it always was.
    load_pretrained::<NdArray<f32>>(&fixture("llava_llama"), &Default::default()).unwrap();
}

#[test]
fn half_precision_full_finetuning_is_refused() {
    check_full_finetune(WeightDType::F32).unwrap();
    for dtype in [WeightDType::Bf16, WeightDType::F16] {
        let err = check_full_finetune(dtype).unwrap_err().to_string();
        assert!(err.contains("LoRA") && err.contains("--dtype f32"), "{err}");
    }
    assert_eq!("BF16".parse::<WeightDType>().unwrap(), WeightDType::Bf16);
    let err = "int8".parse::<WeightDType>().unwrap_err().to_string();
    assert!(err.contains("int8") && err.contains("bf16"), "{err}");
}

/// The fixture model with rank-4 adapters whose A and B are set to fixed non-zero values (so both
/// get gradients; no RNG, so both dtypes start identical).
fn adapted<Bk: Backend>(dtype: WeightDType) -> Vlm<Autodiff<Bk>> {
    let config = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        ..LoraConfig::default()
    };
    let device = Default::default();
    let model = load::<Autodiff<Bk>>("llava_llama", dtype)
        .with_lora(&config, &device)
        .unwrap();
    let mut k = 0f32;
    let mut fixed = |shape: [usize; 2]| {
        k += 1.0;
        let n = shape[0] * shape[1];
        let v: Vec<f32> = (0..n)
            .map(|i| 0.2 * ((i as f32 * 0.37 + k * 1.3).sin()))
            .collect();
        Param::from_tensor(Tensor::<Autodiff<Bk>, 2>::from_data(
            burn::tensor::TensorData::new(v, shape),
            &device,
        ))
    };
    let mut model = model;
    model.decoder = model.decoder.map_projections(|_, mut p| {
        let adapter = p.adapter.as_mut().unwrap();
        adapter.a = fixed(adapter.a.dims());
        adapter.b = fixed(adapter.b.dims());
        p
    });
    model
}

/// Next-token cross-entropy on the fixture's first row (log-softmax in f32).
fn loss<Bk: Backend>(model: &Vlm<Autodiff<Bk>>) -> Tensor<Autodiff<Bk>, 1> {
    let input = fixture_input::<Autodiff<Bk>>("llava_llama");
    let ids = input.input_ids.clone();
    let logits = model.forward(input).unwrap();
    let [_, seq, _] = logits.dims();
    let logp = log_softmax(logits.slice([0..1, 0..seq - 1]), 2);
    let targets = ids.slice([0..1, 1..seq]).unsqueeze_dim::<3>(2);
    logp.gather(2, targets).mean().neg()
}

/// Every adapter value, flattened in layer and projection order.
fn adapter_values<Bk: Backend>(model: &Vlm<Autodiff<Bk>>) -> Vec<f32> {
    let mut v = Vec::new();
    for layer in &model.decoder.layers {
        for (_, p) in layer.projections() {
            let a = p.adapter.as_ref().unwrap();
            for t in [a.a.val(), a.b.val()] {
                assert_eq!(t.dtype(), DType::F32, "adapters are f32 master weights");
                v.extend(t.into_data().to_vec::<f32>().unwrap());
            }
        }
    }
    v
}

/// Gradients of every adapter value, in [`adapter_values`] order.
fn adapter_grads<Bk: Backend>(
    model: &Vlm<Autodiff<Bk>>,
    grads: &<Autodiff<Bk> as burn::tensor::backend::AutodiffBackend>::Gradients,
) -> Vec<f32> {
    let mut v = Vec::new();
    for layer in &model.decoder.layers {
        for (_, p) in layer.projections() {
            let a = p.adapter.as_ref().unwrap();
            for t in [&a.a, &a.b] {
                let g = t.grad(grads).expect("adapters get gradients");
                assert_eq!(g.dtype(), DType::F32, "adapter gradients are f32");
                v.extend(g.into_data().to_vec::<f32>().unwrap());
            }
        }
    }
    v
}

/// (gradients, update of one AdamW step at `lr`) of the adapters.
fn lora_step<Bk: Backend>(dtype: WeightDType, lr: f64) -> (Vec<f32>, Vec<f32>) {
    let model = adapted::<Bk>(dtype);
    let before = adapter_values(&model);
    let grads = loss(&model).backward();
    let g = adapter_grads(&model, &grads);
    let q = &model.decoder.layers[0].self_attn.q_proj.base.weight;
    assert!(q.grad(&grads).is_none(), "the base is frozen");
    let params = GradientsParams::from_grads(grads, &model);
    let mut optim = AdamWConfig::new().init::<Autodiff<Bk>, Vlm<Autodiff<Bk>>>();
    let model = optim.step(lr, model, params);
    let after = adapter_values(&model);
    let update = after.iter().zip(&before).map(|(a, b)| a - b).collect();
    (g, update)
}

fn norm(v: &[f32]) -> f32 {
    v.iter().map(|x| x * x).sum::<f32>().sqrt()
}

/// Measured: bf16-base gradients differ from f32's by 0.75 % (relative L2); every update with
/// |g| above 1 % of the largest keeps f32's sign (3173 of them). Bound 3 %.
const BF16_GRAD_REL_TOL: f32 = 3e-2;

/// A LoRA step on a `dtype` base on `Bk` against f32's: gradients within
/// [`BF16_GRAD_REL_TOL`], every clear update with f32's sign, lr-1e-6 steps kept.
fn check_half_lora_step<Bk: Backend>(dtype: WeightDType) {
    let lr = 1e-6;
    let (g32, u32) = lora_step::<Bk>(WeightDType::F32, lr);
    let (g16, u16) = lora_step::<Bk>(dtype, lr);
    let diff: Vec<f32> = g16.iter().zip(&g32).map(|(a, b)| a - b).collect();
    let rel = norm(&diff) / norm(&g32);
    let big = g32.iter().fold(0f32, |m, g| m.max(g.abs())) * 1e-2;
    let considered: Vec<usize> = (0..g32.len()).filter(|&i| g32[i].abs() > big).collect();
    let same_sign = considered
        .iter()
        .filter(|&&i| u16[i].signum() == u32[i].signum() && u16[i] != 0.0)
        .count();
    eprintln!(
        "LoRA step on {}, {dtype} base vs f32: gradient relative L2 error {rel:.3e}; update sign \
         agrees on {same_sign}/{} adapter values with |g| > 1 % of max",
        Bk::name(&Default::default()),
        considered.len()
    );
    assert!(rel <= BF16_GRAD_REL_TOL, "gradients differ by {rel:e}");
    assert_eq!(same_sign, considered.len(), "every update has f32's sign");
    // lr 1e-6: AdamW's first step moves each value by ~lr (m̂/√v̂ = ±1); in f32 adapters none
    // is lost. (In bf16, 0.2 + 1e-6 rounds back to 0.2: the step would vanish.)
    for (name, u) in [("f32", &u32), (dtype.name(), &u16)] {
        for &i in &considered {
            let step = u[i].abs() as f64;
            assert!(
                (0.5 * lr..=1.5 * lr).contains(&step),
                "{name} base: adapter value {i} moved by {step:e}, not ~{lr:e}"
            );
        }
    }
}

#[test]
fn a_lora_step_on_a_bf16_base_moves_the_adapters_like_f32_and_keeps_tiny_updates() {
    check_half_lora_step::<Flex>(WeightDType::Bf16);
    let w = Tensor::<Flex, 1>::from_floats([0.2f32], &Default::default());
    let bumped = (w.clone().cast(FloatDType::BF16) + 1e-6).cast(FloatDType::F32);
    assert_eq!(
        bumped.into_data(),
        w.cast(FloatDType::BF16).cast(FloatDType::F32).into_data(),
        "why the adapters must be f32: bf16 loses a 1e-6 step"
    );
}

/// Half precision on the suite's backend (`common::B`; CI runs this on wgpu through lavapipe):
/// each half dtype it stores passes the logit and LoRA-step checks flex passes; a dtype it lacks
/// is refused naming the dtype and the fix, never run in f32 silently.
#[test]
fn half_precision_on_the_suite_backend_tracks_f32_or_is_refused() {
    let device = Default::default();
    let backend = B::name(&device);
    for dtype in [WeightDType::Bf16, WeightDType::F16] {
        if B::supports_dtype(&device, dtype.dtype()) {
            check_half_logits::<B>(dtype);
            check_half_lora_step::<B>(dtype);
        } else {
            let err = check_backend_dtype::<B>(dtype, &device)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(dtype.name()) && err.contains("--dtype f32"),
                "{err}"
            );
            // A backend with the other half dtype (wgpu: f16, no bf16) points at it.
            for other in [WeightDType::Bf16, WeightDType::F16] {
                if other != dtype && B::supports_dtype(&device, other.dtype()) {
                    assert!(err.contains(&format!("--dtype {other}")), "{err}");
                }
            }
            eprintln!("{backend} has no {dtype} tensors: refused ({err})");
        }
    }
}
