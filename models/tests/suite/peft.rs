//! PEFT interoperability: adapters written by `PeftModel.save_pretrained` load and give PEFT's
//! logits; adapters firempo cannot apply exactly are refused by name. Fixtures from
//! `fixtures/make_peft_fixtures.py` (rank 4, alpha 8, rsLoRA, on the tiny llava_llama model).

use crate::common;

use common::{fixture, max_abs_diff, Expected, B};
use firempo_models::{load_adapter, load_pretrained, VlmInput};

#[test]
fn a_peft_rslora_adapter_gives_pefts_logits() {
    let device = Default::default();
    let base = load_pretrained::<B>(&fixture("llava_llama"), &device).unwrap();
    let model = load_adapter(base, &fixture("peft/rslora"), &device).unwrap();
    let lora = model.lora.clone().unwrap();
    assert!(lora.use_rslora && lora.rank == 4);
    // The regex targets of the config, recovered from the tensors.
    assert_eq!(
        lora.target_modules,
        ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    );
    let exp = Expected::open(fixture("peft/expected.safetensors"));
    let input = VlmInput::new(exp.ints::<2>("input_ids"))
        .with_pixels(exp.floats::<4>("pixel_values"))
        .with_attention_mask(exp.ints::<2>("attention_mask"));
    let logits = model.forward(input).unwrap();
    let want = exp.floats::<3>("logits");
    let [_, seq, vocab] = want.dims();
    // Row 1 is left-padded by 3: its padding positions are not compared.
    let row0 = max_abs_diff(
        logits.clone().slice([0..1, 0..seq, 0..vocab]),
        want.clone().slice([0..1, 0..seq, 0..vocab]),
    );
    let row1 = max_abs_diff(
        logits.slice([1..2, 3..seq, 0..vocab]),
        want.slice([1..2, 3..seq, 0..vocab]),
    );
    // The adapter moves logits by ~1.4 and rsLoRA's scale is twice plain LoRA's: an adapter
    // dropped, or scaled by alpha/r, fails by orders of magnitude.
    assert!(
        row0 <= 1e-4 && row1 <= 1e-4,
        "max |Δ| row0 {row0:e}, row1 {row1:e}"
    );
}

#[test]
fn an_adapter_on_the_vision_tower_is_refused_naming_its_modules() {
    let device = Default::default();
    let base = load_pretrained::<B>(&fixture("llava_llama"), &device).unwrap();
    let err = load_adapter(base, &fixture("peft/vision"), &device)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("base_model.model.model.vision_tower.encoder.layers.0.self_attn.q_proj")
            && err.contains("firempo does not adapt")
            && err.contains("merge_and_unload"),
        "{err}"
    );
}

#[test]
fn peft_options_firempo_does_not_implement_are_refused_by_field() {
    let device = Default::default();
    let dir = std::env::temp_dir().join(format!("firempo-peft-options-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("peft/rslora/adapter_model.safetensors"),
        dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("peft/rslora/adapter_config.json")).unwrap(),
    )
    .unwrap();
    for (field, value) in [
        ("rank_pattern", serde_json::json!({"q_proj": 8})),
        ("alpha_pattern", serde_json::json!({"v_proj": 2})),
        ("use_dora", serde_json::json!(true)),
        ("modules_to_save", serde_json::json!(["lm_head"])),
        ("bias", serde_json::json!("lora_only")),
    ] {
        let mut edited = config.clone();
        edited[field] = value;
        std::fs::write(dir.join("adapter_config.json"), edited.to_string()).unwrap();
        let base = load_pretrained::<B>(&fixture("llava_llama"), &device).unwrap();
        let err = load_adapter(base, &dir, &device).unwrap_err().to_string();
        assert!(
            err.contains(field) && err.contains("adapter_config.json"),
            "{field}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
