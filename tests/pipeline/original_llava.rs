//! An original-LLaVA checkpoint (the layout LLaVA-Med v1.5 and HuatuoGPT-Vision-7B ship in) whose
//! tokenizer has no `<image>` token: prompts are tokenized around the placeholder exactly as
//! LLaVA's `tokenizer_image_token` does (ids from `make_image_token_fixtures.py`), and the
//! checkpoint goes through every stage.

use std::path::{Path, PathBuf};

use firempo::backend::TestCpu;
use firempo::pipeline::model_dir::load_model_as;
use firempo_models::IMAGE_TOKEN_INDEX;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/llava_original")
}

/// A copy of the original-LLaVA fixture in `dir` with the tokenizer that lacks `<image>`.
fn without_image_token(dir: &Path) -> PathBuf {
    let out = dir.join("llava-med-like");
    let tower = out.join("clip_tower");
    std::fs::create_dir_all(&tower).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join(file), out.join(file)).unwrap();
    }
    for file in [
        "config.json",
        "preprocessor_config.json",
        "pytorch_model.bin",
    ] {
        std::fs::copy(fixture().join("clip_tower").join(file), tower.join(file)).unwrap();
    }
    std::fs::copy(
        fixture().join("tokenizer_without_image.json"),
        out.join("tokenizer.json"),
    )
    .unwrap();
    out
}

#[derive(serde::Deserialize)]
struct Expected {
    prompt: String,
    ids: Vec<i64>,
}

#[test]
fn prompt_ids_are_llavas_tokenizer_image_token() {
    let _serial = crate::common::exclusive();
    let dir = std::env::temp_dir().join(format!("firempo-orig-prompt-{}", std::process::id()));
    let checkpoint = without_image_token(&dir);
    let (model, processor) =
        load_model_as::<TestCpu>(&checkpoint, Some("chatml"), &Default::default()).unwrap();
    assert!(!processor.special.image_in_tokenizer);
    // The model's image id lies past the tokenizer's vocabulary (120 tokens): no text collides.
    assert_eq!(
        processor.special.image,
        model.config().text().vocab_size as i64
    );
    let expected: Expected = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("image_token_expected.json")).unwrap(),
    )
    .unwrap();
    let question = "is there a lesion in the left lung?";
    assert_eq!(processor.format.prompt(question), expected.prompt);
    // LLaVA's count is the tower's, whatever the image (the file is not read).
    let image = Path::new("any.png");
    let image_tokens = processor.image_tokens_of(image).unwrap();
    assert_eq!(image_tokens, 16);
    // LLaVA writes one -200 for the image; firempo one image id per image feature.
    let want: Vec<i64> = expected
        .ids
        .iter()
        .flat_map(|&id| match id {
            IMAGE_TOKEN_INDEX => vec![processor.special.image; image_tokens],
            id => vec![id],
        })
        .collect();
    assert_eq!(processor.prompt_for(question, image).unwrap(), want);

    // A tokenizer without `<image>` for a model whose image id is a text token is refused.
    let config = checkpoint.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replacen('{', "{\n \"image_token_index\": 7,", 1),
    )
    .unwrap();
    let err = load_model_as::<TestCpu>(&checkpoint, Some("chatml"), &Default::default())
        .map(|_| ())
        .unwrap_err();
    let err = format!("{err:#}");
    assert!(
        err.contains("no `<image>` token")
            && err.contains("image_token_id 7")
            && err.contains("fix:"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn original_llava_checkpoint_runs_through_sample_sft_align_and_eval() {
    crate::hf_checkpoint::runs_through_sample_sft_align_and_eval(
        "orig-stages",
        without_image_token,
        Some("qwen-vl"),
    );
}
