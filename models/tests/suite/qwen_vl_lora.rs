//! LoRA on Qwen-VL and PEFT adapter files: adapters written by `PeftModel.save_pretrained` on the
//! tiny Qwen2.5-VL and Qwen3-VL fixtures load (transformers-5 and transformers-4/Hub names) and
//! give PEFT's logits; save → load round-trips; merge equals adapters-on; adapters-off equals the
//! base model; vision-tower adapters are refused by name. Fixtures from
//! `fixtures/make_qwen_vl_peft_fixtures.py` (rank 4, alpha 8, rsLoRA, q/v/o/gate/down, random B).

use crate::common;
use crate::qwen_vl_fixture;

use std::path::{Path, PathBuf};

use burn::tensor::Tensor;
use common::{fixture, Expected, B};
use firempo_models::{load_adapter, save_adapter, LoraConfig, QwenVl, QwenVlInput};
use qwen_vl_fixture::{fixture_input, floats, load};

/// Max |Δ| over the real (unmasked) positions.
fn diff(got: Tensor<B, 3>, want: Tensor<B, 3>, mask: &[Vec<bool>]) -> f32 {
    let [_, seq, vocab] = want.dims();
    let (got, want) = (floats(got), floats(want));
    let mut worst = 0f32;
    for (b, row) in mask.iter().enumerate() {
        for s in (0..seq).filter(|&s| row[s]) {
            let at = (b * seq + s) * vocab;
            for v in 0..vocab {
                worst = worst.max((got[at + v] - want[at + v]).abs());
            }
        }
    }
    worst
}

fn peft_dir(dir: &str, name: &str) -> PathBuf {
    fixture("qwen_vl_peft").join(dir).join(name)
}

fn peft_logits(dir: &str) -> Tensor<B, 3> {
    Expected::open(peft_dir(dir, "expected.safetensors")).floats::<3>("logits")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-qwen-lora-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn with_peft(dir: &str, adapter: &Path) -> QwenVl<B> {
    load_adapter(load::<B>(dir), adapter, &Default::default()).unwrap()
}

fn check_peft(dir: &str) {
    let input: QwenVlInput<B> = fixture_input(dir);
    let mask = input.attention_mask.clone();
    let model = with_peft(dir, &peft_dir(dir, "rslora"));
    let lora = model.lora.clone().unwrap();
    assert!(lora.use_rslora && lora.rank == 4 && model.has_lora());
    assert_eq!(
        lora.target_modules,
        ["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"]
    );
    let logits = model.forward(&input).unwrap();
    let d = diff(logits.clone(), peft_logits(dir), &mask);
    let base = load::<B>(dir).forward(&input).unwrap();
    let moved = diff(base.clone(), peft_logits(dir), &mask);
    eprintln!("{dir}: PEFT logits |Δ| {d:e}; the adapter moves logits by {moved:.3}");
    assert!(d <= 1e-4, "{dir}: firempo vs PEFT |Δ| {d:e}");
    assert!(moved > 1e-2, "{dir}: the adapter barely moves the logits");

    // Adapters off = the base model.
    let off = model.clone().with_adapters(false).forward(&input).unwrap();
    assert!(diff(off, base, &mask) <= 1e-6, "{dir}: adapters off");

    // merge = adapters on.
    let merged = model.clone().merge_lora();
    assert!(!merged.has_lora() && merged.lora.is_none());
    let m = diff(merged.forward(&input).unwrap(), logits.clone(), &mask);
    eprintln!("{dir}: merged vs adapters-on |Δ| {m:e}");
    assert!(m <= 1e-5, "{dir}: merged vs adapters-on |Δ| {m:e}");

    // save → load round trip, in the transformers-5 names PEFT itself wrote.
    let out = scratch(&format!("{dir}-roundtrip"));
    save_adapter(&model, &out, Some("tiny")).unwrap();
    let names: Vec<String> = {
        let bytes = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.names().into_iter().map(str::to_owned).collect()
    };
    assert!(names.contains(
        &"base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight"
            .to_string()
    ));
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(
        config["target_modules"],
        ".*model\\.language_model\\.layers\\.\\d+\\.(self_attn|mlp)\\.(q_proj|v_proj|o_proj|gate_proj|down_proj)"
    );
    let again = with_peft(dir, &out).forward(&input).unwrap();
    let r = diff(again, logits, &mask);
    assert!(r == 0.0, "{dir}: save → load round trip |Δ| {r:e}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn qwen2_5_vl_peft_adapter_gives_pefts_logits_and_round_trips() {
    check_peft("qwen2_5_vl");
}

#[test]
fn qwen3_vl_peft_adapter_gives_pefts_logits_and_round_trips() {
    check_peft("qwen3_vl");
}

#[test]
fn hub_layout_adapter_names_load_too() {
    // transformers 4 (and Hub adapters made with it) name the decoder `model.layers.N`.
    let dir = "qwen2_5_vl";
    let src = peft_dir(dir, "rslora");
    let out = scratch("hub-names");
    let bytes = std::fs::read(src.join("adapter_model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let renamed: Vec<(String, safetensors::tensor::TensorView<'_>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let name = name.replace(
                "base_model.model.model.language_model.",
                "base_model.model.model.",
            );
            (name, view)
        })
        .collect();
    safetensors::serialize_to_file(renamed, None, &out.join("adapter_model.safetensors")).unwrap();
    std::fs::copy(
        src.join("adapter_config.json"),
        out.join("adapter_config.json"),
    )
    .unwrap();
    let input: QwenVlInput<B> = fixture_input(dir);
    let logits = with_peft(dir, &out).forward(&input).unwrap();
    let d = diff(logits, peft_logits(dir), &input.attention_mask);
    assert!(d <= 1e-4, "Hub-named adapter |Δ| {d:e}");
    std::fs::remove_dir_all(&out).unwrap();
}

#[test]
fn vision_tower_adapters_are_refused_naming_their_modules() {
    for (dir, module) in [
        (
            "qwen2_5_vl",
            "base_model.model.model.visual.blocks.0.mlp.gate_proj",
        ),
        (
            "qwen3_vl",
            "base_model.model.model.visual.blocks.0.mlp.linear_fc1",
        ),
    ] {
        let err = load_adapter(
            load::<B>(dir),
            &peft_dir(dir, "vision"),
            &Default::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(module) && err.contains("firempo does not adapt"),
            "{dir}: {err}"
        );
    }
}

#[test]
fn with_lora_freezes_the_model_and_checks_the_rank() {
    let model = load::<B>("qwen2_vl");
    assert!(!model.has_lora());
    let config = LoraConfig {
        rank: 2,
        alpha: 4.0,
        dropout: 0.0,
        ..LoraConfig::default()
    };
    let adapted = model
        .clone()
        .with_lora(&config, &Default::default())
        .unwrap();
    assert!(adapted.has_lora());
    // A fresh adapter (B = 0) leaves the logits unchanged.
    let input: QwenVlInput<B> = fixture_input("qwen2_vl");
    let d = diff(
        adapted.forward(&input).unwrap(),
        model.forward(&input).unwrap(),
        &input.attention_mask,
    );
    assert!(d == 0.0, "fresh adapter moved logits by {d:e}");
    let too_big = LoraConfig {
        rank: 1000,
        ..config
    };
    let msg = model
        .with_lora(&too_big, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("lora.rank") && msg.contains("_proj"), "{msg}");
}

#[test]
fn only_adapters_train_after_with_lora() {
    use burn::backend::Autodiff;
    use burn::module::{Module, ModuleVisitor, Param};
    use burn::tensor::backend::Backend;
    type A = Autodiff<B>;
    struct Count(usize, usize);
    impl<Bk: Backend> ModuleVisitor<Bk> for Count {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<Bk, D>>) {
            if param.is_require_grad() {
                self.0 += param.num_params();
            } else {
                self.1 += param.num_params();
            }
        }
    }
    let model = load::<A>("qwen3_vl")
        .with_lora(&LoraConfig::default(), &Default::default())
        .unwrap();
    let mut count = Count(0, 0);
    model.visit(&mut count);
    // rank · (d_in + d_out) per adapted projection: every adapter param, nothing else.
    let adapters: usize = model
        .decoder
        .layers
        .iter()
        .flat_map(|l| l.projections())
        .map(|(_, p)| {
            let (d_in, d_out) = p.dims();
            8 * (d_in + d_out)
        })
        .sum();
    assert_eq!(count.0, adapters, "trainable = the adapters only");
    assert!(count.1 > count.0);
}

#[test]
fn preference_scoring_trains_the_adapters_and_leaves_the_tower_frozen() {
    use burn::backend::Autodiff;
    use firempo_models::QwenScoringInput;
    type A = Autodiff<B>;
    let dir = "qwen3_vl";
    let model = load::<A>(dir)
        .with_lora(&LoraConfig::default(), &Default::default())
        .unwrap();
    let prompts: QwenVlInput<A> = fixture_input(dir);
    let input = QwenScoringInput {
        prefix_ids: prompts.input_ids,
        prefix_mask: prompts.attention_mask,
        pixel_values: prompts.pixel_values,
        image_grid_thw: prompts.image_grid_thw,
        answer_ids: vec![vec![vec![5, 6, 7], vec![8, 9, 10]]; 2],
    };
    let grads = model.score_answers(input).unwrap().sum().backward();
    let q = &model.decoder.layers[0].self_attn.q_proj;
    // B starts at 0, so the first gradient lands on B (∂/∂A = s · x^T (∂y · B^T) = 0).
    let b = q
        .adapter
        .as_ref()
        .unwrap()
        .b
        .grad(&grads)
        .expect("adapter B gradient");
    assert!(b.abs().sum().into_scalar() > 0.0, "zero gradient at lora_B");
    assert!(
        model.visual.patch_embed.weight.grad(&grads).is_none(),
        "the frozen vision tower got a gradient"
    );
    assert!(
        q.base.weight.grad(&grads).is_none(),
        "a frozen base weight got a gradient"
    );
}
