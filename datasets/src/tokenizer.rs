//! The tokenizer abstraction collation needs, and [`WordTokenizer`], a small word-level tokenizer
//! built from a corpus (tests, the synthetic demo). The models crate implements
//! [`TextTokenizer`] for its HuggingFace tokenizer wrapper.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::error::DatasetError;
use crate::phrase::word_tokens;

/// Why a tokenizer could not encode or decode.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("tokenizer: {0}")]
pub struct TokenizerError(pub String);

/// Text ↔ token ids, as collation needs it.
///
/// Contract: `encode` adds no special tokens (no BOS/EOS); collation adds `bos_id` before the
/// prompt and `eos_id` after the answer itself.
pub trait TextTokenizer {
    /// Token ids of `text`, without special tokens.
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError>;
    /// Text of `ids` (special tokens dropped).
    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError>;
    /// Id used for right-padding (never a label: the answer mask is 0 there).
    fn pad_id(&self) -> u32;
    /// End-of-sequence id appended to answers, if the model uses one.
    fn eos_id(&self) -> Option<u32>;
    /// Beginning-of-sequence id prepended to prompts, if the model uses one.
    fn bos_id(&self) -> Option<u32> {
        None
    }
    /// Number of ids.
    fn vocab_size(&self) -> usize;
}

/// Special tokens of [`WordTokenizer`], ids 0..4.
pub const WORD_SPECIALS: [&str; 4] = ["<pad>", "<eos>", "<unk>", "<bos>"];

/// A word-level tokenizer: words are runs of letters/digits, every other non-space character is
/// its own token. Unknown words map to `<unk>`. Serializes as
/// `{"lowercase": true, "vocab": ["<pad>", "<eos>", "<unk>", "<bos>", "lesion", …]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    deny_unknown_fields,
    try_from = "WordTokenizerFile",
    into = "WordTokenizerFile"
)]
pub struct WordTokenizer {
    vocab: Vec<String>,
    lowercase: bool,
    index: HashMap<String, u32>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct WordTokenizerFile {
    lowercase: bool,
    vocab: Vec<String>,
}

impl TryFrom<WordTokenizerFile> for WordTokenizer {
    type Error = String;

    fn try_from(file: WordTokenizerFile) -> Result<Self, String> {
        if file.vocab.len() < WORD_SPECIALS.len()
            || file.vocab[..WORD_SPECIALS.len()] != WORD_SPECIALS
        {
            return Err(format!("vocab must start with {WORD_SPECIALS:?}"));
        }
        Self::from_vocab(file.vocab, file.lowercase)
    }
}

impl From<WordTokenizer> for WordTokenizerFile {
    fn from(t: WordTokenizer) -> Self {
        Self {
            lowercase: t.lowercase,
            vocab: t.vocab,
        }
    }
}

impl WordTokenizer {
    /// Pad id.
    pub const PAD: u32 = 0;
    /// End-of-sequence id.
    pub const EOS: u32 = 1;
    /// Unknown-word id.
    pub const UNK: u32 = 2;
    /// Beginning-of-sequence id.
    pub const BOS: u32 = 3;

    fn from_vocab(vocab: Vec<String>, lowercase: bool) -> Result<Self, String> {
        let mut index = HashMap::with_capacity(vocab.len());
        for (i, word) in vocab.iter().enumerate() {
            if index.insert(word.clone(), i as u32).is_some() {
                return Err(format!("duplicate vocab entry `{word}`"));
            }
        }
        Ok(Self {
            vocab,
            lowercase,
            index,
        })
    }

    /// Builds the vocabulary from `texts`: specials, then words by descending count (ties
    /// alphabetical), so the same corpus always gives the same ids.
    pub fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>, lowercase: bool) -> Self {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for text in texts {
            for (_, word) in word_tokens(text) {
                let word = if lowercase {
                    word.to_lowercase()
                } else {
                    word.to_string()
                };
                *counts.entry(word).or_default() += 1;
            }
        }
        let mut words: Vec<(String, usize)> = counts
            .into_iter()
            .filter(|(w, _)| !WORD_SPECIALS.contains(&w.as_str()))
            .collect();
        words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let vocab = WORD_SPECIALS
            .iter()
            .map(|s| s.to_string())
            .chain(words.into_iter().map(|(w, _)| w))
            .collect();
        Self::from_vocab(vocab, lowercase).expect("words are unique")
    }

    /// The vocabulary, id order.
    pub fn vocab(&self) -> &[String] {
        &self.vocab
    }

    /// Reads a tokenizer written by [`WordTokenizer::save`].
    pub fn load(path: &Path) -> Result<Self, DatasetError> {
        let text = std::fs::read_to_string(path).map_err(|e| DatasetError::io(path, e))?;
        let mut de = serde_json::Deserializer::from_str(&text);
        serde_path_to_error::deserialize(&mut de).map_err(|err| {
            let line = err.inner().line();
            DatasetError::from_serde(
                crate::error::Location::at_line(path, line),
                err,
                "write the file with WordTokenizer::save",
            )
        })
    }

    /// Writes the tokenizer as JSON.
    pub fn save(&self, path: &Path) -> Result<(), DatasetError> {
        let text = serde_json::to_string(self).expect("tokenizer serializes");
        std::fs::write(path, text).map_err(|e| DatasetError::io(path, e))
    }
}

impl TextTokenizer for WordTokenizer {
    fn encode(&self, text: &str) -> Result<Vec<u32>, TokenizerError> {
        Ok(word_tokens(text)
            .into_iter()
            .map(|(_, w)| {
                let key = if self.lowercase {
                    w.to_lowercase()
                } else {
                    w.to_string()
                };
                self.index.get(&key).copied().unwrap_or(Self::UNK)
            })
            .collect())
    }

    fn decode(&self, ids: &[u32]) -> Result<String, TokenizerError> {
        let mut out = String::new();
        for &id in ids {
            let word = self.vocab.get(id as usize).ok_or_else(|| {
                TokenizerError(format!("id {id} >= vocab size {}", self.vocab.len()))
            })?;
            if id != Self::UNK && (id as usize) < WORD_SPECIALS.len() {
                continue;
            }
            let glue = word.chars().all(|c| ",.;:?!)%".contains(c));
            if !out.is_empty() && !glue {
                out.push(' ');
            }
            out.push_str(word);
        }
        Ok(out)
    }

    fn pad_id(&self) -> u32 {
        Self::PAD
    }

    fn eos_id(&self) -> Option<u32> {
        Some(Self::EOS)
    }

    fn bos_id(&self) -> Option<u32> {
        Some(Self::BOS)
    }

    fn vocab_size(&self) -> usize {
        self.vocab.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_deterministic_vocab_and_round_trips() {
        let t = WordTokenizer::from_texts(["The left lung, upper zone.", "the right lung"], true);
        assert_eq!(
            t.vocab(),
            [
                "<pad>", "<eos>", "<unk>", "<bos>", "lung", "the", ",", ".", "left", "right",
                "upper", "zone"
            ]
        );
        let ids = t.encode("The left lung, upper zone.").unwrap();
        assert_eq!(ids, [5, 8, 4, 6, 10, 11, 7]);
        assert_eq!(t.decode(&ids).unwrap(), "the left lung, upper zone.");
        assert_eq!(t.encode("left kidney").unwrap(), [8, WordTokenizer::UNK]);
        assert_eq!(t.decode(&[0, 8, 1]).unwrap(), "left");
        assert!(t.decode(&[99]).is_err());
    }

    #[test]
    fn save_load_and_bad_files() {
        let dir = std::env::temp_dir().join(format!("firempo-tok-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("tok.json");
        let t = WordTokenizer::from_texts(["yes no"], false);
        t.save(&path).unwrap();
        assert_eq!(WordTokenizer::load(&path).unwrap(), t);
        std::fs::write(&path, r#"{"lowercase": true, "vocab": ["a", "b"]}"#).unwrap();
        let err = WordTokenizer::load(&path).unwrap_err().to_string();
        assert!(err.contains("vocab must start with"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
