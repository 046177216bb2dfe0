//! The prompts `firempo eval --judge-url` sends, and how their replies are read.
//!
//! - **Grading** (closed answers no rule decides, and every open answer; the FiRe-MPO paper's
//!   GPT-4o-mini accuracy): the question, the reference answer and the model's answer; the judge
//!   replies with the JSON object `{"correct": true | false}` (other fields are ignored; Markdown
//!   code fences around it are tolerated).
//! - **GREEN-style report score** (report records; GREEN, Ostmeier et al. 2024): the reference
//!   and candidate reports with GREEN's instructions and output format, so a served GREEN model
//!   (e.g. `StanfordAIMI/GREEN-radllama2-7b` under vLLM) or a general chat model answers in the
//!   same sections. [`parse_green`] reads the counts from them; the score is
//!   `matched / (matched + significant errors)`, 0 when nothing matched (as GREEN's code does).
//!
//! A reply that cannot be read is retried (the client's retries), then an error naming the record
//! and showing the reply: it is never counted as a wrong answer.

use serde::Deserialize;

/// System message of the grading prompt.
pub const GRADER_SYSTEM: &str = "You are a careful medical expert who grades the answers of a \
medical vision-language model against the reference answer. You always answer with valid JSON \
only.";

/// System message of the GREEN-style prompt.
pub const GREEN_SYSTEM: &str = "You are a helpful assistant.";

/// The grading prompt: does `answer` give the `reference` answer to `question`?
pub fn grading(question: &str, reference: &str, answer: &str) -> String {
    format!(
        "Question: {question}\nReference answer: {reference}\nModel answer: {answer}\n\n\
         Decide whether the model answer gives the same answer to the question as the reference \
         answer. Medically equivalent wording counts as the same answer; an answer that \
         contradicts the reference, misses its key content, or lists several alternatives \
         without choosing one does not.\n\
         Respond only with valid JSON in this exact shape: {{\"correct\": true or false}}"
    )
}

/// The grading reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Grade {
    /// Whether the model answer gives the reference answer.
    pub correct: bool,
}

/// The GREEN-style prompt (GREEN's instructions and output format, lightly shortened).
pub fn green(reference: &str, candidate: &str) -> String {
    format!(
        "Objective: Evaluate the accuracy of a candidate radiology report in comparison to a \
         reference radiology report composed by expert radiologists.\n\n\
         1. Criteria for Judgment:\n\
         For the candidate report, determine the count of clinically significant errors and the \
         count of clinically insignificant errors. Errors can fall into one of these categories:\n\
         a) False report of a finding in the candidate.\n\
         b) Missing a finding present in the reference.\n\
         c) Misidentification of a finding's anatomic location/position.\n\
         d) Misassessment of the severity of a finding.\n\
         e) Mentioning a comparison that isn't in the reference.\n\
         f) Omitting a comparison detailing a change from a prior study.\n\
         Note: Concentrate on the clinical findings rather than the report's writing style. \
         Evaluate only the findings that appear in both reports.\n\n\
         2. Reference Report:\n{reference}\n\n\
         3. Candidate Report:\n{candidate}\n\n\
         4. Reporting Your Assessment:\n\
         Follow this specific format for your output, even if no errors are found:\n\
         [Explanation]:\n<Explanation>\n\n\
         [Clinically Significant Errors]:\n\
         (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\
         ....\n\
         (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n\
         [Clinically Insignificant Errors]:\n\
         (a) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\
         ....\n\
         (f) <Error Type>: <The number of errors>. <Error 1>; <Error 2>; ...; <Error n>\n\n\
         [Matched Findings]:\n\
         <The number of matched findings>. <Finding 1>; <Finding 2>; ...; <Finding n>"
    )
}

/// The counts of a GREEN-style reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
pub struct GreenCounts {
    /// Findings of the candidate that match the reference.
    pub matched: u32,
    /// Clinically significant errors, summed over categories (a)–(f).
    pub significant_errors: u32,
}

impl GreenCounts {
    /// `matched / (matched + significant_errors)`, in `[0, 1]`; 0 when nothing matched (GREEN's
    /// own definition, also for a candidate with neither matches nor errors).
    pub fn score(&self) -> f64 {
        if self.matched == 0 {
            return 0.0;
        }
        f64::from(self.matched) / f64::from(self.matched + self.significant_errors)
    }
}

/// Reads the counts of a GREEN-style reply:
/// - the `[Clinically Significant Errors]:` section (up to the next `[...]:` header): every line
///   that starts with a category label `(a)`–`(f)` gives the number that follows its first `:`;
///   they are summed; the section must be there with at least one such line;
/// - the `[Matched Findings]:` section: the number it starts with.
///
/// Headers are matched case-insensitively; anything else (the explanation, the insignificant
/// errors, the listed findings) is ignored. Returns why the reply cannot be read otherwise.
pub fn parse_green(reply: &str) -> Result<GreenCounts, String> {
    let significant = section(reply, "clinically significant errors")
        .ok_or("no [Clinically Significant Errors]: section")?;
    let mut counted = 0;
    let mut significant_errors = 0;
    for line in significant.lines().map(str::trim) {
        let Some(rest) = category_line(line) else {
            continue;
        };
        let count = rest
            .split_once(':')
            .and_then(|(_, after)| leading_number(after))
            .ok_or_else(|| format!("category line {line:?} has no `: <number>`"))?;
        significant_errors += count;
        counted += 1;
    }
    if counted == 0 {
        return Err("the [Clinically Significant Errors]: section has no (a)-(f) count".into());
    }
    let matched = section(reply, "matched findings")
        .ok_or("no [Matched Findings]: section")
        .and_then(|text| {
            leading_number(text).ok_or("[Matched Findings]: does not start with a number")
        })?;
    Ok(GreenCounts {
        matched,
        significant_errors,
    })
}

/// The text after the header `[<name>]:` up to the next line that starts with `[`.
fn section<'a>(reply: &'a str, name: &str) -> Option<&'a str> {
    let lower = reply.to_ascii_lowercase();
    let header = format!("[{name}]");
    let start = lower.find(&header)? + header.len();
    let rest = &reply[start..];
    let rest = rest.trim_start().strip_prefix(':').unwrap_or(rest);
    let end = rest
        .match_indices('\n')
        .map(|(i, _)| i)
        .find(|&i| rest[i + 1..].trim_start().starts_with('['))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// `line` without its category label `(a)`..`(f)`, if it has one.
fn category_line(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('(')?;
    let mut chars = rest.chars();
    let letter = chars.next()?.to_ascii_lowercase();
    ('a'..='f')
        .contains(&letter)
        .then_some(())
        .and_then(|_| chars.as_str().strip_prefix(')'))
}

/// The number `text` starts with (after white space).
fn leading_number(text: &str) -> Option<u32> {
    let text = text.trim_start();
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPLY: &str = "[Explanation]:\nThe candidate misses the effusion.\n\n\
        [Clinically Significant Errors]:\n\
        (a) False report of a finding in the candidate: 1. Nodule.\n\
        (b) Missing a finding present in the reference: 2. Effusion; edema.\n\
        (c) Misidentification of a finding's anatomic location/position: 0.\n\
        (d) Misassessment of the severity of a finding: 0.\n\
        (e) Mentioning a comparison that isn't in the reference: 0.\n\
        (f) Omitting a comparison detailing a change from a prior study: 0.\n\n\
        [Clinically Insignificant Errors]:\n\
        (a) False report of a finding in the candidate: 4.\n\n\
        [Matched Findings]:\n3. Cardiomegaly; clear lungs; no pneumothorax.";

    #[test]
    fn green_counts_and_score() {
        let counts = parse_green(REPLY).unwrap();
        // significant: 1 + 2 (the insignificant 4 is not counted); matched 3 → 3 / (3 + 3)
        assert_eq!(
            counts,
            GreenCounts {
                matched: 3,
                significant_errors: 3
            }
        );
        assert_eq!(counts.score(), 0.5);
        let none = GreenCounts {
            matched: 0,
            significant_errors: 0,
        };
        assert_eq!(none.score(), 0.0);
    }

    #[test]
    fn unreadable_green_replies_say_why() {
        assert!(parse_green("The report looks fine.")
            .unwrap_err()
            .contains("Clinically Significant Errors"));
        let no_matched = REPLY.split("[Matched").next().unwrap();
        assert!(parse_green(no_matched)
            .unwrap_err()
            .contains("Matched Findings"));
        let no_count = "[Clinically Significant Errors]:\n(a) False report: many.\n\
                        [Matched Findings]:\n1. x";
        assert!(parse_green(no_count).unwrap_err().contains("(a) False"));
    }
}
