//! The deterministic rule editor: closed answers (yes/no, options named in the question) and the
//! synthetic benchmark's vocabulary (left/right, upper/middle/lower, small/medium/large, counts).
//!
//! The ground truth is split into slots (each a word from a known group); the model's answer is
//! searched, in order, for a word of each slot's group (its claim). Wrong claims are replaced by
//! the ground truth (branch `corrected`); if all are right, one claim is replaced by an opposite
//! (branch `opposite_spliced`). Only the replaced words become phrases.

use crate::error::DatasetError;
use crate::pair::{PairBranch, PhraseSpan};
use crate::phrase::word_tokens;
use crate::records::{AnswerType, Record};
use crate::rng::derive_seed;
use crate::sample::Sample;

use super::{Edit, Editor};

/// Word groups whose members are mutually exclusive answers.
const GROUPS: &[&[&str]] = &[
    &["yes", "no"],
    &["left", "right"],
    &["upper", "middle", "lower"],
    &["small", "medium", "large"],
    &["present", "absent"],
    &["normal", "abnormal"],
    &["increased", "decreased"],
];

/// Counts: digits and their words share a value.
const COUNT_WORDS: &[&str] = &["zero", "one", "two", "three", "four", "five"];

/// The rule editor. Deterministic: the opposite chosen for a right answer depends on the record id.
#[derive(Debug, Clone, Default)]
pub struct RuleEditor {
    /// Extra groups of mutually exclusive answer words (lowercase), e.g. organ names.
    pub extra_groups: Vec<Vec<String>>,
}

/// A group of mutually exclusive values; `Count` compares digits and number words by value.
#[derive(Debug, Clone, PartialEq)]
enum Group {
    Words(Vec<String>),
    Count,
}

impl Group {
    /// The value index of `word` in this group.
    fn value(&self, word: &str) -> Option<usize> {
        let word = word.to_lowercase();
        match self {
            Group::Words(words) => words.iter().position(|w| *w == word),
            Group::Count => word
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= 20)
                .or_else(|| COUNT_WORDS.iter().position(|w| *w == word)),
        }
    }

    fn len(&self) -> usize {
        match self {
            Group::Words(words) => words.len(),
            Group::Count => COUNT_WORDS.len().max(4),
        }
    }

    /// The surface form of value `v`, in the style of `like` (digit or word, capitalization).
    fn render(&self, v: usize, like: &str) -> String {
        let plain = match self {
            Group::Words(words) => words[v].clone(),
            Group::Count if like.chars().all(|c| c.is_ascii_digit()) => v.to_string(),
            Group::Count => COUNT_WORDS.get(v).map_or(v.to_string(), |w| w.to_string()),
        };
        match_case(&plain, like)
    }
}

fn match_case(word: &str, like: &str) -> String {
    let letters: Vec<char> = like.chars().filter(|c| c.is_alphabetic()).collect();
    if letters.len() > 1 && letters.iter().all(|c| c.is_uppercase()) {
        word.to_uppercase()
    } else if letters.first().is_some_and(|c| c.is_uppercase()) {
        let mut chars = word.chars();
        chars
            .next()
            .map(|f| f.to_uppercase().collect::<String>() + chars.as_str())
            .unwrap_or_default()
    } else {
        word.to_string()
    }
}

/// Options named in a question: the words around " or ", with a shared trailing noun removed
/// (`Is this a CT or an MRI?` → ct, mri; `in the left lung or the right lung?` → left, right).
fn question_options(question: &str) -> Option<Group> {
    let tokens: Vec<String> = word_tokens(question)
        .into_iter()
        .map(|t| t.1.to_lowercase())
        .collect();
    let is_word = |t: &String| t.chars().all(char::is_alphanumeric);
    let at = tokens.iter().position(|t| t == "or")?;
    let before: Vec<&String> = tokens[..at]
        .iter()
        .rev()
        .take_while(|t| is_word(t))
        .collect();
    let after: Vec<&String> = tokens[at + 1..]
        .iter()
        .take_while(|t| is_word(t))
        .filter(|t| !matches!(t.as_str(), "a" | "an" | "the"))
        .collect();
    let first_after = (*after.first()?).clone();
    // `before` is reversed: before[0] is the word right before "or".
    let tail = &after[1..];
    let shared = !tail.is_empty()
        && before.len() > tail.len()
        && tail.iter().rev().zip(&before).all(|(a, b)| a == b);
    let option = if shared {
        before[tail.len()].clone()
    } else {
        (*before.first()?).clone()
    };
    (option != first_after).then(|| Group::Words(vec![option, first_after]))
}

impl RuleEditor {
    fn groups(&self, question: &str) -> Vec<Group> {
        // Built-in groups first: a word in both keeps its full group (upper/middle/lower).
        let mut groups: Vec<Group> = GROUPS
            .iter()
            .map(|g| Group::Words(g.iter().map(|w| w.to_string()).collect()))
            .collect();
        groups.extend(self.extra_groups.iter().map(|g| Group::Words(g.clone())));
        groups.extend(question_options(question));
        groups.push(Group::Count);
        groups
    }
}

fn unsupported(record: &Record, message: String) -> DatasetError {
    DatasetError::Edit {
        record: record.id.clone(),
        message,
        hint: "use the judge editor for answers outside the rule vocabulary".into(),
    }
}

impl Editor for RuleEditor {
    fn name(&self) -> String {
        "rule".into()
    }

    fn edit(&self, sample: &Sample, record: &Record) -> Result<Edit, DatasetError> {
        if record.answer_type == AnswerType::Report {
            return Err(unsupported(record, "reports need the judge editor".into()));
        }
        let answer = sample.answer.trim();
        if answer.is_empty() {
            return Err(DatasetError::Edit {
                record: record.id.clone(),
                message: "the model's answer is empty".into(),
                hint: "check the sampling step (max tokens, stop tokens)".into(),
            });
        }
        let groups = self.groups(&record.question);
        // Slots of the ground truth: (group, value).
        let slots: Vec<(&Group, usize)> = word_tokens(&record.answer)
            .into_iter()
            .filter_map(|(_, w)| groups.iter().find_map(|g| g.value(w).map(|v| (g, v))))
            .collect();
        if slots.is_empty() {
            return Err(unsupported(
                record,
                format!(
                    "ground truth `{}` has no word of a known answer group",
                    record.answer
                ),
            ));
        }
        // Claims: for each slot, the next word of its group in the model's answer.
        let tokens = word_tokens(answer);
        let mut claims = Vec::new();
        let mut from = 0;
        for (group, truth) in &slots {
            let found = tokens[from..]
                .iter()
                .position(|(_, w)| group.value(w).is_some())
                .map(|k| from + k);
            let Some(k) = found else {
                // The answer never states this slot: replace it whole with the ground truth.
                return Ok(whole_replacement(answer, &record.answer));
            };
            claims.push((k, *group, group.value(tokens[k].1).unwrap(), *truth));
            from = k + 1;
        }
        let wrong: Vec<_> = claims.iter().filter(|c| c.2 != c.3).collect();
        if !wrong.is_empty() {
            let edits: Vec<(usize, String)> = wrong
                .iter()
                .map(|(k, group, _, truth)| (*k, group.render(*truth, tokens[*k].1)))
                .collect();
            let (chosen, chosen_spans, rejected_spans) = splice(answer, &tokens, &edits);
            return Ok(Edit {
                chosen,
                rejected: answer.to_string(),
                chosen_spans,
                rejected_spans,
                branch: PairBranch::Corrected,
            });
        }
        let pick = (derive_seed(0, &record.id) % claims.len() as u64) as usize;
        let (k, group, value, _) = claims[pick];
        let others: Vec<usize> = (0..group.len()).filter(|v| *v != value).collect();
        let opposite = match group {
            // Counts: the neighbouring count is the plausible mistake (off by one).
            Group::Count if value == 0 => 1,
            Group::Count => value - 1 + 2 * (derive_seed(1, &record.id) % 2) as usize,
            Group::Words(_) => others[(derive_seed(1, &record.id) % others.len() as u64) as usize],
        };
        let edits = [(k, group.render(opposite, tokens[k].1))];
        let (rejected, rejected_spans, chosen_spans) = splice(answer, &tokens, &edits);
        Ok(Edit {
            chosen: answer.to_string(),
            rejected,
            chosen_spans,
            rejected_spans,
            branch: PairBranch::OppositeSpliced,
        })
    }
}

fn whole_replacement(answer: &str, truth: &str) -> Edit {
    let truth = truth.trim();
    Edit {
        chosen: truth.to_string(),
        rejected: answer.to_string(),
        chosen_spans: vec![PhraseSpan {
            start: 0,
            end: truth.len(),
            id: 1,
        }],
        rejected_spans: vec![PhraseSpan {
            start: 0,
            end: answer.len(),
            id: 1,
        }],
        branch: PairBranch::Corrected,
    }
}

/// Replaces tokens `edits[(index, new)]` of `text`; returns the new text, the spans of the
/// replacements in it, and the spans of the replaced tokens in `text`.
fn splice(
    text: &str,
    tokens: &[(std::ops::Range<usize>, &str)],
    edits: &[(usize, String)],
) -> (String, Vec<PhraseSpan>, Vec<PhraseSpan>) {
    let mut out = String::with_capacity(text.len() + 8);
    let (mut new_spans, mut old_spans) = (Vec::new(), Vec::new());
    let mut at = 0;
    for (n, (k, new)) in edits.iter().enumerate() {
        let range = tokens[*k].0.clone();
        out.push_str(&text[at..range.start]);
        let id = n as u32 + 1;
        new_spans.push(PhraseSpan {
            start: out.len(),
            end: out.len() + new.len(),
            id,
        });
        old_spans.push(PhraseSpan {
            start: range.start,
            end: range.end,
            id,
        });
        out.push_str(new);
        at = range.end;
    }
    out.push_str(&text[at..]);
    (out, new_spans, old_spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(q: &str) -> Option<Vec<String>> {
        match question_options(q)? {
            Group::Words(w) => Some(w),
            Group::Count => None,
        }
    }

    #[test]
    fn options_from_questions() {
        assert_eq!(options("Is this a CT or an MRI?").unwrap(), ["ct", "mri"]);
        assert_eq!(
            options("Is the lesion in the left lung or the right lung?").unwrap(),
            ["left", "right"]
        );
        assert_eq!(
            options("Is it upper, middle or lower zone?").unwrap(),
            ["middle", "lower"]
        );
        assert_eq!(options("Is there a lesion?"), None);
    }

    #[test]
    fn case_and_count_style_are_kept() {
        assert_eq!(match_case("no", "Yes"), "No");
        assert_eq!(match_case("left", "RIGHT"), "LEFT");
        assert_eq!(Group::Count.render(2, "3"), "2");
        assert_eq!(Group::Count.render(2, "Three"), "Two");
        assert_eq!(Group::Count.value("two"), Some(2));
    }
}
