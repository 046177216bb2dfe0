//! Original-LLaVA checkpoints (LLaVA-Med v1.5 / HuatuoGPT-Vision layout), from the tiny fixture
//! `fixtures/llava_original/` that `fixtures/make_original_llava_fixtures.py` builds out of the
//! llava-hf parity fixture: same weights, so the llava-hf fixture's transformers logits are the
//! expected ones (≤ 1e-4), from the expanded ids and from the `-200` ids. Also LLaVA's
//! `expand2square` on two real non-square crops.

use crate::common;

use std::path::{Path, PathBuf};

use burn::tensor::{Tensor, TensorData};
use common::{fixture, max_abs_diff, Expected, B};
use firempo_models::loading::{image_preprocessor, load_pretrained_with, LoadOptions};
use firempo_models::{
    expand2square, load_pretrained, GenerationConfig, ImageAspectRatio, ImagePreprocessor,
    ModelError, NameStyle, ProjectorKind, Vlm, VlmInput, IMAGE_TOKEN_INDEX,
};
use safetensors::tensor::{SafeTensors, TensorView};

/// Max |Δ| of both rows against the llava-hf expected logits (row 1's 3 left-padding positions are
/// garbage in both implementations).
fn logit_diff(logits: Tensor<B, 3>, want: Tensor<B, 3>) -> (f32, f32) {
    let pad = 3;
    let [_, seq, vocab] = want.dims();
    assert_eq!(logits.dims(), want.dims());
    let row0 = max_abs_diff(
        logits.clone().slice([0..1, 0..seq, 0..vocab]),
        want.clone().slice([0..1, 0..seq, 0..vocab]),
    );
    let row1 = max_abs_diff(
        logits.slice([1..2, pad..seq, 0..vocab]),
        want.slice([1..2, pad..seq, 0..vocab]),
    );
    (row0, row1)
}

fn hf_expected() -> Expected {
    Expected::open(fixture("llava_llama/expected.safetensors"))
}

fn placeholder_input() -> VlmInput<B> {
    let ids = Expected::open(fixture("llava_original/inputs.safetensors"));
    VlmInput::new(ids.ints::<2>("input_ids"))
        .with_pixels(hf_expected().floats::<4>("pixel_values"))
        .with_attention_mask(ids.ints::<2>("attention_mask"))
}

fn expanded_input() -> VlmInput<B> {
    let exp = hf_expected();
    VlmInput::new(exp.ints::<2>("input_ids"))
        .with_pixels(exp.floats::<4>("pixel_values"))
        .with_attention_mask(exp.ints::<2>("attention_mask"))
}

fn check_logits(model: &Vlm<B>, what: &str) {
    check_logits_of(model, what, true);
}

/// With `expanded`, also from the llava-hf ids (their image token 120 must be the model's).
fn check_logits_of(model: &Vlm<B>, what: &str, expanded: bool) {
    let want = hf_expected().floats::<3>("logits");
    let mut forms = vec![("-200", placeholder_input())];
    if expanded {
        forms.push(("expanded", expanded_input()));
    }
    for (form, input) in forms {
        let (row0, row1) = logit_diff(model.forward(input).unwrap(), want.clone());
        eprintln!("{what}, {form} ids: max |Δlogit| row0 {row0:e}, row1 {row1:e}");
        assert!(
            row0 <= 1e-4 && row1 <= 1e-4,
            "{what}, {form} ids: row0 {row0:e}, row1 {row1:e}"
        );
    }
}

#[test]
fn llava_mistral_layout_matches_transformers_from_both_id_forms() {
    let model = load_pretrained::<B>(&fixture("llava_original"), &Default::default()).unwrap();
    let c = &model.config;
    assert_eq!(c.name_style, NameStyle::Original);
    assert_eq!(c.projector_kind, ProjectorKind::Mlp2x);
    assert_eq!(c.image_aspect_ratio, ImageAspectRatio::Pad);
    assert_eq!(c.image_token_id, 120, "the checkpoint tokenizer's <image>");
    assert_eq!(c.vision_feature_layers, vec![-2]);
    let ids = Expected::open(fixture("llava_original/inputs.safetensors")).ints::<2>("input_ids");
    let placeholders = ids.equal_elem(IMAGE_TOKEN_INDEX).int().sum().into_scalar();
    assert_eq!(placeholders, 2, "one -200 per row");
    check_logits(&model, "tower from clip_tower/pytorch_model.bin");
}

#[test]
fn placeholder_ids_generate_what_expanded_ids_generate() {
    let model = load_pretrained::<B>(&fixture("llava_original"), &Default::default()).unwrap();
    let config = GenerationConfig {
        max_new_tokens: 4,
        ..Default::default()
    };
    let a = model.generate(placeholder_input(), &config).unwrap();
    let b = model.generate(expanded_input(), &config).unwrap();
    assert_eq!(a.tokens, b.tokens);
    assert_eq!(a.tokens[0].len(), 4);
}

/// A scratch checkpoint: the fixture's config (edited by `edit`) and weights, no tower directory.
fn scratch(name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("firempo-orig-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = fixture("llava_original");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for file in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(src.join(file), dir.join(file)).unwrap();
    }
    dir
}

fn load_err(dir: &Path, options: &LoadOptions) -> String {
    let err = load_pretrained_with::<B>(dir, options, &Default::default()).unwrap_err();
    err.to_string()
}

#[test]
fn a_missing_vision_tower_names_the_directory_and_the_fix() {
    let dir = scratch("no-tower", |_| {});
    let err = load_err(&dir, &LoadOptions::default());
    let looked = dir.join("clip_tower");
    assert!(
        err.contains(&looked.display().to_string())
            && err.contains("mm_vision_tower")
            && err.contains("--vision-tower"),
        "{err}"
    );
    // A Hub id: the download command.
    let hub = scratch("hub-tower", |c| {
        c["mm_vision_tower"] = "openai/clip-vit-large-patch14-336".into()
    });
    let err = load_err(&hub, &LoadOptions::default());
    assert!(
        err.contains("huggingface-cli download openai/clip-vit-large-patch14-336 --local-dir")
            && err.contains(
                &hub.join("openai/clip-vit-large-patch14-336")
                    .display()
                    .to_string()
            ),
        "{err}"
    );
    // An explicit --vision-tower that lacks weights.
    let empty = dir.join("empty_tower");
    std::fs::create_dir_all(&empty).unwrap();
    for file in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(
            fixture("llava_original/clip_tower").join(file),
            empty.join(file),
        )
        .unwrap();
    }
    let options = LoadOptions {
        vision_tower: Some(empty.clone()),
        ..LoadOptions::default()
    };
    let err = load_err(&dir, &options);
    assert!(
        err.contains(&empty.display().to_string()) && err.contains("no weights"),
        "{err}"
    );
    // The same checkpoint with --vision-tower pointing at the fixture's tower loads and matches;
    // without an `<image>` in its tokenizer (as LLaVA-Med ships it) the marker of expanded ids is
    // vocab_size, and the -200 ids are the way in.
    std::fs::remove_file(hub.join("tokenizer.json")).unwrap();
    let options = LoadOptions {
        vision_tower: Some(fixture("llava_original/clip_tower")),
        ..LoadOptions::default()
    };
    let model = load_pretrained_with::<B>(&hub, &options, &Default::default()).unwrap();
    assert_eq!(model.config.image_token_id, 128);
    check_logits_of(&model, "--vision-tower DIR, no <image> token", false);
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(hub).unwrap();
}

#[test]
fn im_start_end_and_unknown_projectors_are_refused_by_name() {
    let tower = LoadOptions {
        vision_tower: Some(fixture("llava_original/clip_tower")),
        ..LoadOptions::default()
    };
    let cases: [(&str, serde_json::Value, &str); 3] = [
        ("mm_use_im_start_end", true.into(), "im_start"),
        (
            "mm_projector_type",
            "mlp3x_gelu".into(),
            "linear, mlp2x_gelu",
        ),
        ("image_aspect_ratio", "anyres".into(), "pad, square"),
    ];
    for (field, value, fix) in cases {
        let dir = scratch(field, |c| c[field] = value);
        let err = load_pretrained_with::<B>(&dir, &tower, &Default::default()).unwrap_err();
        assert!(matches!(err, ModelError::ConfigField { .. }), "{err}");
        let err = err.to_string();
        assert!(
            err.contains(field) && err.contains(fix) && err.contains("config.json"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn a_linear_projector_checkpoint_loads_model_mm_projector() {
    // LLaVA-1's `linear`: one `model.mm_projector.{weight,bias}`; the fixture has two layers, so
    // the load names what is missing and unexpected.
    let dir = scratch("linear", |c| c["mm_projector_type"] = "linear".into());
    let tower = LoadOptions {
        vision_tower: Some(fixture("llava_original/clip_tower")),
        ..LoadOptions::default()
    };
    let err = load_pretrained_with::<B>(&dir, &tower, &Default::default()).unwrap_err();
    let ModelError::Weights { problems, .. } = &err else {
        panic!("expected a weights error, got {err}");
    };
    let text = err.to_string();
    assert!(
        text.contains("missing `model.mm_projector.weight`")
            && text.contains("unexpected `model.mm_projector.2.weight`"),
        "{text}"
    );
    assert_eq!(problems.len(), 6, "{text}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tower_weights_inside_the_checkpoint_are_used() {
    // `model.vision_tower.vision_tower.vision_model.*` in the checkpoint, tower directory only for
    // its config: as a checkpoint trained with an unfrozen tower ships.
    let dir = scratch("tower-inside", |_| {});
    let ckpt = std::fs::read(fixture("llava_original/model.safetensors")).unwrap();
    let hf = std::fs::read(fixture("llava_llama/model.safetensors")).unwrap();
    let (ckpt, hf) = (
        SafeTensors::deserialize(&ckpt).unwrap(),
        SafeTensors::deserialize(&hf).unwrap(),
    );
    let mut tensors: Vec<(String, TensorView)> = ckpt.tensors();
    for (name, view) in hf.tensors() {
        if let Some(rest) = name.strip_prefix("vision_tower.") {
            tensors.push((
                format!("model.vision_tower.vision_tower.vision_model.{rest}"),
                view,
            ));
        }
    }
    safetensors::serialize_to_file(tensors, None, &dir.join("model.safetensors")).unwrap();
    let tower = dir.join("config_only_tower");
    std::fs::create_dir_all(&tower).unwrap();
    for file in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(
            fixture("llava_original/clip_tower").join(file),
            tower.join(file),
        )
        .unwrap();
    }
    // Weights that are not a PyTorch file: read only if the checkpoint lacked the tower.
    std::fs::write(tower.join("pytorch_model.bin"), b"not a checkpoint").unwrap();
    let options = LoadOptions {
        vision_tower: Some(tower),
        ..LoadOptions::default()
    };
    let model = load_pretrained_with::<B>(&dir, &options, &Default::default()).unwrap();
    check_logits(&model, "tower inside the checkpoint");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `[H, W, 3]` f32 pixels of an RGB image.
fn rgb_values(image: &image::RgbImage) -> Tensor<B, 3> {
    let (w, h) = image.dimensions();
    let v: Vec<f32> = image.as_raw().iter().map(|&b| f32::from(b)).collect();
    Tensor::from_data(
        TensorData::new(v, [h as usize, w as usize, 3]),
        &Default::default(),
    )
}

#[test]
fn expand2square_equals_llavas_on_real_non_square_images() {
    let dir = fixture("llava_original");
    let exp = Expected::open(dir.join("expand2square_expected.safetensors"));
    let pre = image_preprocessor(&dir, &LoadOptions::default()).unwrap();
    assert_eq!(pre.aspect_ratio, ImageAspectRatio::Pad);
    assert_eq!(pre.pad_colour(), [122, 116, 104]);
    for name in ["wide", "tall"] {
        let image = ImagePreprocessor::open(&dir.join(format!("cat_{name}.png"))).unwrap();
        let rgb = image.to_rgb8();
        assert_ne!(rgb.width(), rgb.height());
        // The padded image itself, before any resampling: exact.
        let padded = expand2square(&rgb, pre.pad_colour());
        let diff = max_abs_diff(
            rgb_values(&padded),
            exp.floats::<3>(&format!("padded_{name}")),
        );
        assert_eq!(
            diff, 0.0,
            "{name}: padded pixels differ by {diff} grey levels"
        );
        // Then CLIP preprocessing: within the resampler's one grey level (1/255/std ≈ 0.015).
        let got: Tensor<B, 4> = pre.batch(&[image], &Default::default()).unwrap();
        let want = exp.floats::<4>(&format!("pixel_values_{name}"));
        let diff = max_abs_diff(got.clone(), want.clone());
        eprintln!("expand2square + CLIP, {name}: max |Δ pixel| = {diff}");
        assert!(diff <= 0.02, "{name}: max |Δ pixel| = {diff}");
        // Without the padding the same image gives other pixels: the test would catch its loss.
        let square =
            ImagePreprocessor::from_file(&dir.join("clip_tower/preprocessor_config.json")).unwrap();
        let image = ImagePreprocessor::open(&dir.join(format!("cat_{name}.png"))).unwrap();
        let unpadded: Tensor<B, 4> = square.batch(&[image], &Default::default()).unwrap();
        assert!(max_abs_diff(unpadded, want) > 0.1);
    }
}

#[test]
fn pytorch_files_of_both_formats_read_as_f32_and_bad_ones_are_named() {
    use firempo_models::loading::safetensors::WeightStore;
    use firempo_models::WeightProblem;

    let dir = fixture("llava_original");
    for file in ["dtypes.pt", "dtypes_legacy.pt"] {
        let mut store = WeightStore::open_pytorch_files(&dir, &[dir.join(file)]).unwrap();
        assert_eq!(
            store.take("half", &[1, 3]),
            Some(vec![0.5, -1.25, 3.0]),
            "{file}"
        );
        assert_eq!(store.take("bf16", &[2]), Some(vec![1.5, -2.0]), "{file}");
        assert_eq!(store.take("f64", &[1]), Some(vec![0.1f64 as f32]), "{file}");
        assert_eq!(store.take("ints", &[2]), None, "{file}");
        let Err(ModelError::Weights { problems, .. }) = store.finish(|_| false) else {
            panic!("{file}: int64 tensor accepted");
        };
        assert!(
            matches!(&problems[..], [WeightProblem::Dtype { name, .. }] if name == "ints"),
            "{file}: {problems:?}"
        );
    }
    // A tower whose .bin is not a PyTorch file: the error names the file.
    let scratch_dir = scratch("bad-bin", |_| {});
    let tower = scratch_dir.join("tower");
    std::fs::create_dir_all(&tower).unwrap();
    for file in ["config.json", "preprocessor_config.json"] {
        std::fs::copy(
            fixture("llava_original/clip_tower").join(file),
            tower.join(file),
        )
        .unwrap();
    }
    std::fs::write(
        tower.join("pytorch_model.bin"),
        b"<html>rate limited</html>",
    )
    .unwrap();
    let err = load_err(
        &scratch_dir,
        &LoadOptions {
            vision_tower: Some(tower.clone()),
            ..LoadOptions::default()
        },
    );
    assert!(
        err.contains(&tower.join("pytorch_model.bin").display().to_string())
            && err.contains("not a readable PyTorch checkpoint"),
        "{err}"
    );
    std::fs::remove_dir_all(scratch_dir).unwrap();
}
