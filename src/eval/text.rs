//! Answer text normalization and word tokenization shared by all text metrics.
//!
//! Follows the SQuAD / LLaVA-Med convention: lowercase, punctuation removed, articles
//! (`a`, `an`, `the`) dropped, whitespace collapsed. Report metrics (BLEU, ROUGE-L) use
//! [`words`], which keeps articles, as `pycocoevalcap`'s tokenizer does.

/// Articles removed by [`normalize_answer`].
const ARTICLES: [&str; 3] = ["a", "an", "the"];

/// Lowercased words of `text`: maximal runs of alphanumeric characters. A `.` or `,` between two
/// digits stays inside the word, so `"3.5 cm"` gives `["3.5", "cm"]`; every other
/// non-alphanumeric character separates words (`"x-ray"` gives `["x", "ray"]`).
pub fn words(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut current = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let inside_number = matches!(c, '.' | ',')
            && i > 0
            && chars[i - 1].is_ascii_digit()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_digit());
        if c.is_alphanumeric() || inside_number {
            current.extend(c.to_lowercase());
        } else if !current.is_empty() {
            out.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Normalized answer tokens: [`words`] without articles.
pub fn answer_tokens(text: &str) -> Vec<String> {
    words(text)
        .into_iter()
        .filter(|w| !ARTICLES.contains(&w.as_str()))
        .collect()
}

/// Normalized answer string: [`answer_tokens`] joined by single spaces, e.g.
/// `"  The Left Lung! "` → `"left lung"`.
pub fn normalize_answer(text: &str) -> String {
    answer_tokens(text).join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_punctuation_articles_and_whitespace() {
        assert_eq!(normalize_answer("  The Left\tLung!  "), "left lung");
        assert_eq!(
            normalize_answer("Yes, there is an effusion."),
            "yes there is effusion"
        );
        assert_eq!(normalize_answer("A"), "");
        assert_eq!(normalize_answer(""), "");
    }

    #[test]
    fn words_keep_articles_and_decimal_numbers() {
        assert_eq!(
            words("The mass is 3.5 cm, in the x-ray."),
            ["the", "mass", "is", "3.5", "cm", "in", "the", "x", "ray"]
        );
        assert_eq!(words("1,000 nodes; end."), ["1,000", "nodes", "end"]);
        assert_eq!(words("ÉPANCHEMENT"), ["épanchement"]);
    }

    #[test]
    fn answer_tokens_drop_articles_only_as_whole_words() {
        assert_eq!(answer_tokens("an anterior theca"), ["anterior", "theca"]);
    }
}
