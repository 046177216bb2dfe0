//! Phrase masks: the divergent spans of `y+` and `y−`, from the paper's `<mask>…</mask>` markup or
//! from a word-level diff (longest common subsequence; each maximal differing run is one phrase,
//! so spans are as short as possible and phrase `k` of `y+` aligns with phrase `k` of `y−`).

use std::ops::Range;

use crate::error::DatasetError;
use crate::pair::PhraseSpan;

const OPEN: &str = "<mask>";
const CLOSE: &str = "</mask>";

/// Text with its marked phrases removed from the markup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkedText {
    /// The text without tags.
    pub text: String,
    /// Phrases as byte ranges of `text`, ids 1..N in order.
    pub spans: Vec<PhraseSpan>,
}

/// Parses `<mask>…</mask>` markup. Nested, unmatched or empty tags are an error naming the byte
/// position in the marked text.
pub fn parse_mask_markup(marked: &str) -> Result<MarkedText, DatasetError> {
    let error = |position, problem| DatasetError::MaskMarkup {
        position,
        problem,
        text: marked.to_string(),
    };
    let mut text = String::with_capacity(marked.len());
    let mut spans = Vec::new();
    let mut open_at: Option<(usize, usize)> = None; // (position in marked, start in text)
    let mut i = 0;
    while i < marked.len() {
        let rest = &marked[i..];
        if rest.starts_with(OPEN) {
            if open_at.is_some() {
                return Err(error(i, "nested <mask>"));
            }
            open_at = Some((i, text.len()));
            i += OPEN.len();
        } else if rest.starts_with(CLOSE) {
            let Some((_, start)) = open_at.take() else {
                return Err(error(i, "</mask> without an opening <mask>"));
            };
            if start == text.len() {
                return Err(error(i, "empty <mask></mask>"));
            }
            spans.push(PhraseSpan {
                start,
                end: text.len(),
                id: spans.len() as u32 + 1,
            });
            i += CLOSE.len();
        } else {
            let c = rest.chars().next().expect("non-empty rest");
            text.push(c);
            i += c.len_utf8();
        }
    }
    if let Some((position, _)) = open_at {
        return Err(error(position, "<mask> never closed"));
    }
    Ok(MarkedText { text, spans })
}

/// Writes `text` with `spans` wrapped in `<mask>…</mask>` (the inverse of [`parse_mask_markup`]).
pub fn to_mask_markup(text: &str, spans: &[PhraseSpan]) -> String {
    let mut out = String::with_capacity(text.len() + spans.len() * 13);
    let mut at = 0;
    for span in spans {
        out.push_str(&text[at..span.start]);
        out.push_str(OPEN);
        out.push_str(&text[span.start..span.end]);
        out.push_str(CLOSE);
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Word tokens of `text` with their byte ranges: runs of alphanumeric characters, and each other
/// non-space character on its own.
pub fn word_tokens(text: &str) -> Vec<(Range<usize>, &str)> {
    let mut tokens = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in text.char_indices() {
        if c.is_alphanumeric() {
            start.get_or_insert(i);
            continue;
        }
        if let Some(s) = start.take() {
            tokens.push((s..i, &text[s..i]));
        }
        if !c.is_whitespace() {
            let end = i + c.len_utf8();
            tokens.push((i..end, &text[i..end]));
        }
    }
    if let Some(s) = start {
        tokens.push((s..text.len(), &text[s..]));
    }
    tokens
}

/// Phrase spans of `chosen` and `rejected` from a word-level diff.
///
/// Each maximal run of words outside the longest common subsequence is one phrase; phrase `k` of
/// the chosen answer pairs with phrase `k` of the rejected one. A pure insertion (words on one side
/// only) gives a span on that side alone, keeping the ids aligned.
pub fn diff_phrases(chosen: &str, rejected: &str) -> (Vec<PhraseSpan>, Vec<PhraseSpan>) {
    let a = word_tokens(chosen);
    let b = word_tokens(rejected);
    let (n, m) = (a.len(), b.len());
    // lcs[i][j] = LCS length of a[i..], b[j..].
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i].1 == b[j].1 {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut chosen_spans, mut rejected_spans) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    let mut id = 0u32;
    while i < n || j < m {
        if i < n && j < m && a[i].1 == b[j].1 {
            i += 1;
            j += 1;
            continue;
        }
        let (i0, j0) = (i, j);
        while (i < n || j < m) && !(i < n && j < m && a[i].1 == b[j].1) {
            if j >= m || (i < n && lcs[i + 1][j] >= lcs[i][j + 1]) {
                i += 1;
            } else {
                j += 1;
            }
        }
        id += 1;
        if i > i0 {
            chosen_spans.push(PhraseSpan {
                start: a[i0].0.start,
                end: a[i - 1].0.end,
                id,
            });
        }
        if j > j0 {
            rejected_spans.push(PhraseSpan {
                start: b[j0].0.start,
                end: b[j - 1].0.end,
                id,
            });
        }
    }
    (chosen_spans, rejected_spans)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts<'a>(text: &'a str, spans: &[PhraseSpan]) -> Vec<(&'a str, u32)> {
        spans
            .iter()
            .map(|s| (&text[s.start..s.end], s.id))
            .collect()
    }

    #[test]
    fn markup_round_trips() {
        let marked = "The lesion is in the <mask>left</mask> lung, <mask>upper zone</mask>.";
        let parsed = parse_mask_markup(marked).unwrap();
        assert_eq!(parsed.text, "The lesion is in the left lung, upper zone.");
        assert_eq!(
            texts(&parsed.text, &parsed.spans),
            [("left", 1), ("upper zone", 2)]
        );
        assert_eq!(to_mask_markup(&parsed.text, &parsed.spans), marked);
    }

    #[test]
    fn bad_markup_names_the_position() {
        let cases = [
            ("a <mask>b <mask>c</mask></mask>", 10, "nested"),
            ("a b</mask>", 3, "without an opening"),
            ("x <mask>open", 2, "never closed"),
            ("<mask></mask>", 6, "empty"),
        ];
        for (text, position, problem) in cases {
            match parse_mask_markup(text).unwrap_err() {
                DatasetError::MaskMarkup {
                    position: p,
                    problem: q,
                    ..
                } => {
                    assert_eq!(p, position, "{text}");
                    assert!(q.contains(problem), "{text}: {q}");
                }
                other => panic!("unexpected {other}"),
            }
        }
    }

    #[test]
    fn diff_finds_shortest_aligned_spans() {
        let chosen = "There is a small lesion in the left lung, upper zone.";
        let rejected = "There is a large lesion in the right lung, upper zone.";
        let (c, r) = diff_phrases(chosen, rejected);
        assert_eq!(texts(chosen, &c), [("small", 1), ("left", 2)]);
        assert_eq!(texts(rejected, &r), [("large", 1), ("right", 2)]);

        let (c, r) = diff_phrases("yes", "no");
        assert_eq!(
            (texts("yes", &c), texts("no", &r)),
            (vec![("yes", 1)], vec![("no", 1)])
        );

        let (c, r) = diff_phrases("No lesion is seen.", "No lesion is clearly seen here.");
        assert!(c.is_empty());
        let rejected = "No lesion is clearly seen here.";
        assert_eq!(texts(rejected, &r), [("clearly", 1), ("here", 2)]);

        let (c, r) = diff_phrases("same words", "same words");
        assert!(c.is_empty() && r.is_empty());
    }

    #[test]
    fn multiword_runs_are_one_phrase() {
        let chosen = "Findings: mild cardiomegaly with effusion.";
        let rejected = "Findings: normal heart size with effusion.";
        let (c, r) = diff_phrases(chosen, rejected);
        assert_eq!(texts(chosen, &c), [("mild cardiomegaly", 1)]);
        assert_eq!(texts(rejected, &r), [("normal heart size", 1)]);
    }

    #[test]
    fn word_tokens_split_punctuation() {
        let tokens: Vec<&str> = word_tokens("left lung, 2 lesions.")
            .into_iter()
            .map(|t| t.1)
            .collect();
        assert_eq!(tokens, ["left", "lung", ",", "2", "lesions", "."]);
    }
}
