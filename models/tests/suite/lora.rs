//! LoRA on the whole model: fresh adapters change nothing, adapters-off is the base (the reference
//! model) after training, merging keeps outputs, and PEFT save → load is exact.

use crate::common;

use burn::backend::Autodiff;
use burn::module::{AutodiffModule, Module};
use burn::optim::{GradientsParams, Optimizer, SgdConfig};
use burn::tensor::{activation::log_softmax, Distribution, Int, Tensor, TensorData};
use common::max_abs_diff;
use firempo_models::{load_adapter, save_adapter, LoraConfig, Vlm, VlmConfig, VlmInput};

type A = Autodiff<common::B>;

fn input(config: &VlmConfig) -> VlmInput<A> {
    let device = Default::default();
    let n = config.image_tokens_per_image();
    let mut ids = vec![1i64, 5];
    ids.extend(std::iter::repeat_n(config.image_token_id as i64, n));
    ids.extend([9, 10, 11, 12]);
    let len = ids.len();
    let ids = Tensor::<A, 2, Int>::from_data(TensorData::new(ids, [1, len]), &device);
    VlmInput::new(ids).with_pixels(Tensor::random(
        [1, 3, 32, 32],
        Distribution::Normal(0.0, 1.0),
        &device,
    ))
}

fn logits(model: &Vlm<A>, input: &VlmInput<A>) -> Tensor<A, 3> {
    model.forward(input.clone()).unwrap()
}

fn lora_config() -> LoraConfig {
    LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        use_rslora: true,
        ..LoraConfig::default()
    }
}

/// One SGD step on the adapters; returns the trained model.
fn train_step(model: Vlm<A>, input: &VlmInput<A>) -> Vlm<A> {
    let loss = log_softmax(logits(&model, input), 2)
        .slice([0..1, 0..20, 7..8])
        .mean()
        .neg();
    let grads = loss.backward();
    assert!(
        model.decoder.layers[0]
            .self_attn
            .q_proj
            .base
            .weight
            .grad(&grads)
            .is_none(),
        "the base weights are frozen"
    );
    let grads = GradientsParams::from_grads(grads, &model);
    let mut optim = SgdConfig::new().init::<A, Vlm<A>>();
    optim.step(0.5, model, grads)
}

#[test]
fn lora_reference_switch_merge_and_peft_round_trip() {
    let device = Default::default();
    let config = VlmConfig::tiny();
    let base = config.init::<A>(&device);
    let input = input(&config);
    let base_logits = logits(&base, &input);

    let lora = base.clone().with_lora(&lora_config(), &device).unwrap();
    assert_eq!(
        lora.num_params() - base.num_params(),
        2 * 4 * (64 + 64 + 64 + 32 + 64 + 32 + 64 + 64 + 64 + 128 + 64 + 128 + 128 + 64)
    );
    assert_eq!(
        logits(&lora, &input).into_data(),
        base_logits.to_data(),
        "fresh LoRA equals the base exactly"
    );

    let trained = train_step(lora, &input);
    let on = logits(&trained, &input);
    assert!(
        max_abs_diff(on.clone(), base_logits.clone()) > 1e-4,
        "training moved the adapters"
    );
    let reference = trained.clone().with_adapters(false);
    assert_eq!(
        logits(&reference, &input).into_data(),
        base_logits.to_data(),
        "adapters off is the base"
    );
    // The graph-free reference the trainer uses: inner backend, adapters off.
    let inner_input = VlmInput {
        input_ids: input.input_ids.clone().inner(),
        pixel_values: input.pixel_values.clone().map(|p| p.inner()),
        attention_mask: None,
    };
    let valid_ref = trained
        .valid()
        .with_adapters(false)
        .forward(inner_input.clone())
        .unwrap();
    let valid_on = trained.valid().forward(inner_input.clone()).unwrap();
    // Exact against the base on the same (inner) backend. Against the autodiff logits within
    // f32 rounding: flex runs fused softmax and layer norm on its plain backend while autodiff
    // differentiates the composite ops (≈1e-6 apart; ndarray is bit-identical).
    assert_eq!(
        valid_ref.clone().into_data(),
        base.valid().forward(inner_input).unwrap().into_data()
    );
    assert!(max_abs_diff(Tensor::from_inner(valid_ref), base_logits.clone()) <= 1e-5);
    assert!(max_abs_diff(Tensor::from_inner(valid_on), on.clone()) <= 1e-5);

    let merged = trained.clone().merge_lora();
    assert!(!merged.has_lora());
    let diff = max_abs_diff(logits(&merged, &input), on.clone());
    assert!(diff <= 1e-5, "merged differs from adapter-on by {diff:e}");

    let dir = std::env::temp_dir().join(format!("firempo-lora-{}", std::process::id()));
    save_adapter(&trained, &dir, Some("tiny")).unwrap();
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 4);
    assert_eq!(cfg["use_rslora"], true);
    assert!(cfg["target_modules"]
        .as_str()
        .unwrap()
        .contains("model\\.language_model"));
    let loaded = load_adapter(base.clone(), &dir, &device).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(loaded.lora, trained.lora);
    for (l, t) in loaded.decoder.layers.iter().zip(&trained.decoder.layers) {
        for ((name, lp), (_, tp)) in l.projections().iter().zip(t.projections()) {
            let (la, ta) = (lp.adapter.as_ref().unwrap(), tp.adapter.as_ref().unwrap());
            assert_eq!(
                la.a.val().into_data(),
                ta.a.val().into_data(),
                "{name}.lora_A"
            );
            assert_eq!(
                la.b.val().into_data(),
                ta.b.val().into_data(),
                "{name}.lora_B"
            );
        }
    }
    let diff = max_abs_diff(logits(&loaded, &input), on);
    assert!(diff <= 1e-6, "loaded adapter differs by {diff:e}");
}

#[test]
fn loading_an_adapter_with_wrong_rank_names_every_tensor() {
    let device = Default::default();
    let config = VlmConfig::tiny();
    let model = config
        .init::<A>(&device)
        .with_lora(&lora_config(), &device)
        .unwrap();
    let dir = std::env::temp_dir().join(format!("firempo-lora-bad-{}", std::process::id()));
    save_adapter(&model, &dir, None).unwrap();
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"r\": 4", "\"r\": 2");
    std::fs::write(&path, text).unwrap();
    let err = load_adapter(config.init::<A>(&device), &dir, &device)
        .unwrap_err()
        .to_string();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.contains("layers.1.mlp.down_proj.lora_B.weight"),
        "{err}"
    );
    assert!(err.contains("28 problem(s)"), "{err}");
}

#[test]
fn a_rank_above_the_adapted_layers_width_is_refused_before_allocating() {
    let device = Default::default();
    let config = VlmConfig::tiny(); // k_proj, v_proj: 64 → 32 (2 kv heads of 16); MLP 64 ↔ 128
    let with_rank = |rank: usize, targets: &[&str]| {
        let lora = LoraConfig {
            rank,
            target_modules: targets.iter().map(|t| t.to_string()).collect(),
            ..lora_config()
        };
        config.init::<A>(&device).with_lora(&lora, &device)
    };
    let all = firempo_models::LORA_TARGETS;
    let err = with_rank(100_000, &all).unwrap_err().to_string();
    assert!(
        err.contains("lora.rank")
            && err.contains("100000")
            && err.contains("self_attn.k_proj")
            && err.contains("≤ 32"),
        "{err}"
    );
    assert!(with_rank(33, &all).is_err());
    assert!(with_rank(32, &all).is_ok());
    // Only the MLP adapted: its narrowest side is 64.
    assert!(with_rank(64, &["gate_proj", "up_proj", "down_proj"]).is_ok());
    let err = with_rank(65, &["up_proj"]).unwrap_err().to_string();
    assert!(err.contains("mlp.up_proj") && err.contains("≤ 64"), "{err}");
}
