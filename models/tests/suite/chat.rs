//! The models crate's processor against the Python reference: prompts and their ids (LLaVA-1.5
//! and ChatML formats, `<image>` expanded), CLIP image preprocessing, batches of images, then an
//! image file and a question run end to end through the LLaVA-LLaMA fixture (greedy answer as
//! HF's).

use crate::common;

use burn::tensor::Tensor;
use common::{fixture, max_abs_diff, Expected, B};
use firempo_models::{
    load_pretrained, processor, read_tokenizer, GenerationConfig, ImagePreprocessor, PixelValues,
    Pixels, Processor, PromptFormat, Vlm,
};

fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("chat_expected.json")).unwrap()).unwrap()
}

fn ids(v: &serde_json::Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

/// The fixture tokenizer has no `<s>`/`</s>`: its formats end answers with `<|endoftext|>`.
fn llava15() -> PromptFormat {
    PromptFormat {
        bos_token: None,
        eos_token: "<|endoftext|>".into(),
        ..PromptFormat::llava15()
    }
}

fn chatml() -> PromptFormat {
    PromptFormat {
        template: "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n\
                   <image>\n{question}<|im_end|>\n<|im_start|>assistant\n"
            .into(),
        bos_token: None,
        eos_token: "<|im_end|>".into(),
        origin: None,
    }
}

fn processor_for(model: &Vlm<B>, format: PromptFormat) -> Processor {
    let tokenizer = read_tokenizer(&fixture("tokenizer.json")).unwrap();
    let preprocess = ImagePreprocessor::from_file(&fixture("llava_llama/preprocessor_config.json"))
        .unwrap()
        .config()
        .unwrap();
    Processor::new(&model.config, tokenizer, preprocess, format).unwrap()
}

/// `ids` with the image id expanded to `n` copies, as HF's `LlavaProcessor` does.
fn expanded(ids: &[i64], image: i64, n: usize) -> Vec<i64> {
    ids.iter()
        .flat_map(|&t| std::iter::repeat_n(t, if t == image { n } else { 1 }))
        .collect()
}

#[test]
fn prompts_tokenize_like_python() {
    let exp = expected();
    let model = load_pretrained::<B>(&fixture("llava_llama"), &Default::default()).unwrap();
    let q = exp["question"].as_str().unwrap();
    let n = model.config.image_tokens_per_image();
    for (format, key) in [(llava15(), "llava_1_5"), (chatml(), "chatml")] {
        assert_eq!(
            format.prompt(q),
            exp[format!("{key}_prompt")].as_str().unwrap()
        );
        let processor = processor_for(&model, format);
        assert_eq!(processor.special.image, 120);
        assert_eq!(
            processor.prompt_ids(q, n).unwrap(),
            expanded(&ids(&exp[format!("{key}_ids")]), 120, n),
            "{key}"
        );
    }
    let err = read_tokenizer(&fixture("image.png"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image.png") && err.contains("tokenizer.json"),
        "{err}"
    );
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
fn images_of_different_sizes_are_an_error_not_a_panic() {
    let image = |side: usize| PixelValues {
        channels: 3,
        height: side,
        width: side,
        data: vec![0.5; 3 * side * side],
    };
    let stacked = PixelValues::stack::<B>(&[&image(4), &image(4)], &Default::default()).unwrap();
    assert_eq!(stacked.dims(), [2, 3, 4, 4]);
    let err = PixelValues::stack::<B>(&[&image(4), &image(6)], &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image 1 preprocesses to 3×6×6 but image 0 to 3×4×4"),
        "{err}"
    );
}

#[test]
fn image_file_and_question_give_the_hf_greedy_answer() {
    let exp = expected();
    let device = Default::default();
    let model = load_pretrained::<B>(&fixture("llava_llama"), &device).unwrap();
    let processor = processor_for(&model, llava15());
    let path = fixture("image.png");
    let image = ImagePreprocessor::open(&path).unwrap();
    let tokens = processor
        .image_tokens(image.width(), image.height(), &path)
        .unwrap();
    let prompt = processor
        .prompt_ids(exp["question"].as_str().unwrap(), tokens)
        .unwrap();
    let processed = processor.process_image(&image, &path).unwrap();
    let Pixels::Square(pixels) = processor::batch::<B>(&[&processed], &device).unwrap() else {
        panic!("a LLaVA processor makes square images");
    };
    let gen = GenerationConfig {
        max_new_tokens: 5,
        ..GenerationConfig::default()
    };
    let mask = vec![vec![true; prompt.len()]];
    let out = model
        .generate_host(vec![prompt], mask, Some(pixels), &gen, &device)
        .unwrap();
    let greedy: Vec<i64> = out.tokens[0].iter().map(|&t| i64::from(t)).collect();
    assert_eq!(greedy, ids(&exp["llava_llama_greedy"]));
}
