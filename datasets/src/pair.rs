//! Preference pairs `(y+, y−)` with their phrase spans, images and the corruption path, as JSONL.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::corruption::CorruptionPath;
use crate::error::{DatasetError, Location};
use crate::intake::{BadRecordPolicy, Loaded};
use crate::jsonl::read_jsonl_checked;
use crate::records::AnswerType;

/// A divergent phrase: bytes `start..end` of an answer, phrase id `id >= 1` (aligned between
/// `y+` and `y−`: span `k` of the chosen answer corresponds to span `k` of the rejected one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhraseSpan {
    /// First byte of the phrase.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
    /// Phrase id, 1..N.
    pub id: u32,
}

/// Which branch of the paper's pair construction produced a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairBranch {
    /// The model was wrong: `y+` is its answer with the wrong span replaced by the ground truth,
    /// `y−` is its answer.
    Corrected,
    /// The model was right: `y+` is its answer, `y−` has a plausible opposite spliced in.
    OppositeSpliced,
}

/// One preference pair.
///
/// JSONL line example:
/// `{"id":"synth-train-00003-presence","record_id":"synth-train-00003-presence","question":"Is there a lesion in this image?","answer_type":"closed","chosen":"yes","rejected":"no","chosen_spans":[{"start":0,"end":3,"id":1}],"rejected_spans":[{"start":0,"end":2,"id":1}],"branch":"corrected","editor":"rule","image":"images/train-00003.png","corrupted_image":"corrupted/synth-train-00003-presence-ad846a190628ef20.png","corruption":"lesion_mask"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferencePair {
    /// Pair id, unique in its file: the sample's record id, or for a record's later samples
    /// `<record id>-<n>` with the smallest `n` no other pair or record has.
    pub id: String,
    /// The record the pair was built from.
    pub record_id: String,
    /// The question.
    pub question: String,
    /// The record's answer type.
    pub answer_type: AnswerType,
    /// `y+`.
    pub chosen: String,
    /// `y−`.
    pub rejected: String,
    /// Divergent phrases of `y+`, in order.
    pub chosen_spans: Vec<PhraseSpan>,
    /// Divergent phrases of `y−`, in order.
    pub rejected_spans: Vec<PhraseSpan>,
    /// Which construction branch was taken.
    pub branch: PairBranch,
    /// Which editor built the pair (`rule`, `judge:<model>`).
    pub editor: String,
    /// Clean image path (as in the record).
    pub image: PathBuf,
    /// Corrupted image path, if one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupted_image: Option<PathBuf>,
    /// The corruption path taken; `None` when no corrupted image was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corruption: Option<CorruptionPath>,
    /// Free metadata.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

impl PreferencePair {
    /// Checks what training needs of a pair: two different, non-empty answers, and every phrase
    /// span a non-empty byte range inside its answer, on character boundaries. A pair that fails
    /// would train with a zero gradient (equal answers) or mark the wrong tokens; the reason names
    /// the field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, text) in [("chosen", &self.chosen), ("rejected", &self.rejected)] {
            if text.trim().is_empty() {
                return Err(format!("`{field}` is empty"));
            }
        }
        if self.chosen == self.rejected {
            return Err(format!(
                "`chosen` equals `rejected` ({:?}): the pair prefers nothing",
                self.chosen
            ));
        }
        check_spans("chosen_spans", &self.chosen_spans, "chosen", &self.chosen)?;
        check_spans(
            "rejected_spans",
            &self.rejected_spans,
            "rejected",
            &self.rejected,
        )
    }
}

fn check_spans(
    field: &str,
    spans: &[PhraseSpan],
    text_field: &str,
    text: &str,
) -> Result<(), String> {
    for (i, span) in spans.iter().enumerate() {
        let (start, end) = (span.start, span.end);
        let problem = if start >= end {
            "is empty".to_string()
        } else if end > text.len() {
            format!("lies outside `{text_field}` ({} bytes)", text.len())
        } else if !(text.is_char_boundary(start) && text.is_char_boundary(end)) {
            format!("does not start and end on character boundaries of `{text_field}`")
        } else {
            continue;
        };
        return Err(format!("`{field}[{i}]` {start}..{end} {problem}"));
    }
    Ok(())
}

/// Reads a pairs file (`pairs.jsonl` from `firempo pairs`). A pair that fails
/// [`PreferencePair::validate`] is a bad record naming its line, id and reason. A pair id that
/// repeats an earlier line's is an error naming both lines, whatever `policy` says: ids name the
/// corrupted images, so two pairs with one id may share one pair's corruption.
pub fn read_pairs_jsonl(
    path: &Path,
    policy: BadRecordPolicy,
) -> Result<Loaded<PreferencePair>, DatasetError> {
    let mut first_line: HashMap<String, usize> = HashMap::new();
    read_jsonl_checked(path, policy, |line, pair: &PreferencePair| {
        let at = Location::at_line(path, line);
        if let Some(&first) = first_line.get(&pair.id) {
            return Err(DatasetError::DuplicateId {
                at,
                id: pair.id.clone(),
                first_line: first,
            });
        }
        first_line.insert(pair.id.clone(), line);
        Ok(pair.validate().map_err(|reason| DatasetError::InvalidPair {
            at,
            id: pair.id.clone(),
            reason,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_line_parses() {
        let line = r#"{"id":"synth-train-00003-presence","record_id":"synth-train-00003-presence","question":"Is there a lesion in this image?","answer_type":"closed","chosen":"yes","rejected":"no","chosen_spans":[{"start":0,"end":3,"id":1}],"rejected_spans":[{"start":0,"end":2,"id":1}],"branch":"corrected","editor":"rule","image":"images/train-00003.png","corrupted_image":"corrupted/synth-train-00003-presence-ad846a190628ef20.png","corruption":"lesion_mask"}"#;
        let pair: PreferencePair = serde_json::from_str(line).unwrap();
        assert_eq!(pair.branch, PairBranch::Corrected);
        assert_eq!(pair.corruption, Some(CorruptionPath::LesionMask));
        assert_eq!(
            &pair.chosen[pair.chosen_spans[0].start..pair.chosen_spans[0].end],
            "yes"
        );
        assert_eq!(serde_json::to_string(&pair).unwrap(), line);
    }
}
