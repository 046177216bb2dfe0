//! Trains the demo's word-level tokenizer on a text corpus with the `tokenizers` crate and saves
//! it as a standard `tokenizer.json` (loadable by HF `tokenizers` / `transformers` too).

use std::path::Path;

use anyhow::Context;
use tokenizers::models::wordlevel::{WordLevel, WordLevelTrainer};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::Lowercase;
use tokenizers::pre_tokenizers::whitespace::Whitespace;
use tokenizers::{AddedToken, Tokenizer};

/// Special tokens, in id order: padding, unknown, begin and end of sequence, image placeholder.
pub const SPECIAL_TOKENS: [&str; 5] = ["<pad>", "<unk>", "<s>", "</s>", "<image>"];

/// Trains a lower-casing word-level tokenizer (words and punctuation runs) on `corpus`.
///
/// Words seen fewer than `min_frequency` times map to `<unk>`. Special tokens get ids 0..5 in
/// the order of [`SPECIAL_TOKENS`].
pub fn train_word_level<S: AsRef<str> + Send>(
    corpus: impl Iterator<Item = S> + Send,
    min_frequency: u64,
) -> anyhow::Result<Tokenizer> {
    let specials = SPECIAL_TOKENS
        .iter()
        .map(|t| AddedToken::from(*t, true))
        .collect();
    let trainer = WordLevelTrainer::builder()
        .min_frequency(min_frequency)
        .show_progress(false)
        .special_tokens(specials)
        .build()
        .context("configuring the word-level trainer")?;
    let mut trainer = TrainerWrapper::WordLevelTrainer(trainer);
    let model = WordLevel::builder()
        .unk_token("<unk>".to_string())
        .build()
        .map_err(|e| anyhow::anyhow!("building the word-level model: {e}"))?;
    let mut tokenizer = Tokenizer::new(model);
    tokenizer.with_normalizer(Some(Lowercase));
    tokenizer.with_pre_tokenizer(Some(Whitespace {}));
    tokenizer
        .train(&mut trainer, corpus)
        .map_err(|e| anyhow::anyhow!("training the tokenizer: {e}"))?;
    Ok(tokenizer)
}

/// Saves `tokenizer` as `tokenizer.json` in `dir`.
pub fn save(tokenizer: &Tokenizer, dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("tokenizer.json");
    tokenizer
        .save(&path, true)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trains_saves_and_reloads() {
        let corpus = [
            "Is there a lesion?",
            "Yes, in the left upper zone.",
            "No lesion.",
        ];
        let tokenizer = train_word_level(corpus.iter(), 1).unwrap();
        assert_eq!(tokenizer.token_to_id("<pad>"), Some(0));
        assert_eq!(tokenizer.token_to_id("<image>"), Some(4));
        let encoding = tokenizer
            .encode("<image> Is there a LESION?", false)
            .unwrap();
        assert_eq!(
            encoding.get_tokens(),
            ["<image>", "is", "there", "a", "lesion", "?"]
        );
        let unknown = tokenizer.encode("pneumothorax", false).unwrap();
        assert_eq!(unknown.get_ids(), [1]);

        let dir = std::env::temp_dir().join(format!("firempo-tok-{}", std::process::id()));
        save(&tokenizer, &dir).unwrap();
        let reloaded = Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
        assert_eq!(
            reloaded
                .encode("left upper zone.", false)
                .unwrap()
                .get_ids(),
            tokenizer
                .encode("left upper zone.", false)
                .unwrap()
                .get_ids()
        );
    }
}
