//! Tokenizer, chat templates and image preprocessing against the Python reference, then an image
//! file and a question run end to end through the LLaVA-LLaMA fixture (greedy answer as HF's).

use crate::common;

use burn::tensor::Tensor;
use common::{fixture, max_abs_diff, Expected, B};
use firempo_models::{
    load_pretrained, prepare_question, ChatTemplate, GenerationConfig, ImagePreprocessor, Tokenizer,
};

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("chat_expected.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn templates_tokenize_like_python() {
    let exp = expected();
    let tok = Tokenizer::from_file(&fixture("tokenizer.json")).unwrap();
    let q = exp["question"].as_str().unwrap();
    for (template, key) in [
        (ChatTemplate::Llava15, "llava_1_5"),
        (ChatTemplate::ChatMl, "chatml"),
    ] {
        let prompt = template.prompt(q, true);
        assert_eq!(prompt, exp[format!("{key}_prompt")].as_str().unwrap());
        assert_eq!(
            tok.encode(&prompt, true).unwrap(),
            ids(&exp[format!("{key}_ids")]),
            "{key}"
        );
    }
    assert_eq!(tok.token_id("<image>"), Some(120));
    let err = Tokenizer::from_file(&fixture("image.png"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("image.png"), "{err}");
}

#[test]
fn preprocessing_matches_clip_image_processor() {
    let pre =
        ImagePreprocessor::from_file(&fixture("llava_llama/preprocessor_config.json")).unwrap();
    let img = ImagePreprocessor::open(&fixture("image.png")).unwrap();
    let got: Tensor<B, 4> = pre.batch(&[img], &Default::default()).unwrap();
    let want = Expected::open(fixture("image_expected.safetensors")).floats::<4>("pixel_values");
    let diff = max_abs_diff(got, want);
    eprintln!("preprocessing max |Δ| = {diff}");
    // PIL's fixed-point bicubic vs Catmull-Rom: at most one 8-bit level (1/255/0.26 ≈ 0.015).
    assert!(diff <= 0.02, "max |Δ pixel| = {diff}");
    let err = ImagePreprocessor::open(&fixture("tokenizer.json"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer.json") && err.contains("PNG"),
        "{err}"
    );
}

#[test]
fn image_file_and_question_give_the_hf_greedy_answer() {
    let exp = expected();
    let device = Default::default();
    let dir = fixture("llava_llama");
    let model = load_pretrained::<B>(&dir, &device).unwrap();
    let tok = Tokenizer::from_file(&fixture("tokenizer.json")).unwrap();
    let pre = ImagePreprocessor::from_file(&dir.join("preprocessor_config.json")).unwrap();
    let input = prepare_question::<B>(
        &model.config,
        &tok,
        ChatTemplate::Llava15,
        &pre,
        exp["question"].as_str().unwrap(),
        Some(&fixture("image.png")),
        &device,
    )
    .unwrap();
    let gen = GenerationConfig {
        max_new_tokens: 5,
        ..GenerationConfig::default()
    };
    let out = model.generate(input, &gen).unwrap();
    assert_eq!(out.tokens[0], ids(&exp["llava_llama_greedy"]));
}
