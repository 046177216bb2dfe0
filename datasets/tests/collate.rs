//! Collation into burn tensors (ndarray backend): ids, right-padding, masks, phrase ids aligned
//! with the divergent words, has-corrupted flags and pixel tensors.

mod common;

use burn::backend::NdArray;
use burn::tensor::{Int, Tensor};
use common::{gray_image, write_png, TempDir};
use firempo_datasets::{
    diff_phrases, AnswerType, PairBranch, PairCollator, PreferencePair, PreprocessConfig,
    TextTokenizer, WordTokenizer,
};

type B = NdArray<f32>;

fn ints(t: Tensor<B, 2, Int>) -> Vec<i64> {
    t.into_data().iter::<i64>().collect()
}

fn floats<const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().iter::<f32>().collect()
}

fn pair(id: &str, chosen: &str, rejected: &str, corrupted: Option<&str>) -> PreferencePair {
    let (chosen_spans, rejected_spans) = diff_phrases(chosen, rejected);
    PreferencePair {
        id: id.into(),
        record_id: id.into(),
        question: "Where is the lesion?".into(),
        answer_type: AnswerType::Open,
        chosen: chosen.into(),
        rejected: rejected.into(),
        chosen_spans,
        rejected_spans,
        branch: PairBranch::Corrected,
        editor: "rule".into(),
        image: "clean.png".into(),
        corrupted_image: corrupted.map(Into::into),
        corruption: None,
        meta: Default::default(),
    }
}

#[test]
fn collates_ids_masks_phrases_and_pixels() {
    let dir = TempDir::new("collate");
    write_png(&gray_image(8, 8), &dir.path().join("clean.png"));
    let black = image::DynamicImage::new_luma8(8, 8);
    write_png(&black, &dir.path().join("corrupted.png"));

    let pairs = [
        pair(
            "a",
            "left lung, upper zone",
            "right lung, upper zone",
            Some("corrupted.png"),
        ),
        pair("b", "yes", "no", None),
    ];
    let texts = [
        "Where is the lesion?",
        "left lung, upper zone",
        "right",
        "yes",
        "no",
    ];
    let tokenizer = WordTokenizer::from_texts(texts, true);
    let id = |w: &str| tokenizer.encode(w).unwrap()[0] as i64;
    let (pad, eos, bos) = (0i64, 1i64, 3i64);
    let mut collator = PairCollator::new(tokenizer.clone(), PreprocessConfig::grayscale(4));
    collator.root = dir.path().to_path_buf();
    let batch = collator.collate::<B>(&pairs, &Default::default()).unwrap();
    assert_eq!(batch.ids, ["a", "b"]);

    let prompt = [bos, id("where"), id("is"), id("the"), id("lesion"), id("?")];
    assert_eq!(
        ints(batch.chosen.prompt_ids.clone()),
        [prompt, prompt].concat()
    );
    assert_eq!(floats(batch.chosen.prompt_mask.clone()), vec![1.0; 12]);

    // Row a: "left lung , upper zone" + EOS (6 tokens); row b: "yes" + EOS, padded to 6.
    let chosen_ids = ints(batch.chosen.answer_ids.clone());
    assert_eq!(
        chosen_ids,
        [
            id("left"),
            id("lung"),
            id(","),
            id("upper"),
            id("zone"),
            eos,
            id("yes"),
            eos,
            pad,
            pad,
            pad,
            pad
        ]
    );
    assert_eq!(
        floats(batch.chosen.answer_mask.clone()),
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    );
    assert_eq!(
        ints(batch.chosen.phrase_ids.clone()),
        [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    );
    assert_eq!(ints(batch.rejected.answer_ids.clone())[0], id("right"));
    assert_eq!(
        ints(batch.rejected.phrase_ids.clone()),
        [1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]
    );

    assert_eq!(floats(batch.has_corrupted.clone()), [1.0, 0.0]);
    assert_eq!(batch.clean_pixels.dims(), [2, 1, 4, 4]);
    let clean = floats(batch.clean_pixels.clone());
    let corrupted = floats(batch.corrupted_pixels.clone());
    assert!(
        corrupted[..16].iter().all(|v| (*v + 1.0).abs() < 1e-6),
        "black → -1"
    );
    assert_eq!(
        &corrupted[16..],
        &clean[16..],
        "no corrupted image → clean copy"
    );
    assert_eq!(&clean[..16], &clean[16..]);
}

#[test]
fn bad_spans_and_missing_images_are_errors() {
    let dir = TempDir::new("collate-bad");
    let tokenizer = WordTokenizer::from_texts(["yes no"], true);
    let mut collator = PairCollator::new(tokenizer, PreprocessConfig::grayscale(4));
    collator.root = dir.path().to_path_buf();
    let mut p = pair("x", "yes", "no", None);
    p.chosen_spans[0].end = 10;
    let err = collator.encode_pair(&p).unwrap_err().to_string();
    assert!(
        err.contains("record `x`") && err.contains("does not fit"),
        "{err}"
    );

    let p = pair("y", "yes", "no", None);
    let err = collator
        .collate::<B>(&[p], &Default::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("clean.png"), "{err}");
    assert!(collator.collate::<B>(&[], &Default::default()).is_err());
}

/// A tokenizer that fails, as a models-crate wrapper might on a broken vocabulary.
struct Failing;

impl TextTokenizer for Failing {
    fn encode(&self, text: &str) -> Result<Vec<u32>, firempo_datasets::TokenizerError> {
        Err(firempo_datasets::TokenizerError(format!(
            "cannot encode {} bytes",
            text.len()
        )))
    }
    fn decode(&self, _: &[u32]) -> Result<String, firempo_datasets::TokenizerError> {
        Ok(String::new())
    }
    fn pad_id(&self) -> u32 {
        0
    }
    fn eos_id(&self) -> Option<u32> {
        None
    }
    fn vocab_size(&self) -> usize {
        1
    }
}

#[test]
fn tokenizer_errors_name_the_pair() {
    let collator = PairCollator::new(Failing, PreprocessConfig::grayscale(4));
    let err = collator
        .encode_pair(&pair("z", "yes", "no", None))
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, firempo_datasets::DatasetError::Tokenizer { ref pair, .. } if pair == "z"),
        "{text}"
    );
    assert!(text.contains("cannot encode 20 bytes"), "{text}");
}
