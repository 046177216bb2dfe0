//! The judge's two-stage JSON prompts, after the paper's appendix (Stage 1: answer localization and
//! ground-truth incorporation, Figs. 7–8; Stage 2: answer difference localization). Stage 1 adds a
//! `corrected_sentence` field so the wrong branch can replace only the wrong span.

use serde::Deserialize;

use crate::records::AnswerType;

/// System message of both stages.
pub const SYSTEM: &str = "You are a careful medical expert who checks the answers of a medical vision-language model. You always answer with valid JSON only.";

/// Stage-1 reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StageOne {
    /// The model's minimal clause that states its answer (exact wording).
    pub answer_sentence: String,
    /// The final answer, in as few words as possible.
    pub final_answer: String,
    /// Whether the final answer agrees with the ground truth.
    pub is_correct: bool,
    /// `answer_sentence` with only the wrong words replaced by the ground truth.
    pub corrected_sentence: String,
    /// `answer_sentence` minimally edited into a plausible opposite.
    pub opposite_answer: String,
}

/// Stage-2 reply.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct StageTwo {
    /// `y+` with its divergent phrases in `<mask>…</mask>`.
    pub chosen_marked: String,
    /// `y−` with its divergent phrases in `<mask>…</mask>`.
    pub rejected_marked: String,
}

/// Stage 1: localize the claim, judge it, and propose the corrected and opposite clauses.
pub fn stage_one(answer_type: AnswerType, question: &str, truth: &str, answer: &str) -> String {
    let shape = r#"{"answer_sentence": "...", "final_answer": "...", "is_correct": true or false, "corrected_sentence": "...", "opposite_answer": "..."}"#;
    match answer_type {
        AnswerType::Report => format!(
            "Ground truth report: {truth}\nModel report: {answer}\n\n\
             **answer_sentence**: The sentence of the model report that contains a clinical error with respect to the ground truth, copied exactly; if the report is correct, its first sentence that states a finding.\n\
             **final_answer**: The clinical words of answer_sentence that carry the finding.\n\
             **is_correct**: true if the model report agrees with the ground truth, false otherwise.\n\
             **corrected_sentence**: answer_sentence with at most 2-3 clinical words rewritten using facts of the ground truth; no synonyms, no other change.\n\
             **opposite_answer**: answer_sentence with one clinical error injected, changing at most 2-3 words.\n\
             Respond only with valid JSON in this exact shape: {shape}"
        ),
        _ => format!(
            "Question: {question}\nGround truth answer: {truth}\nModel answer: {answer}\n\n\
             **answer_sentence**: The minimal phrase or clause from the model's answer that states the final answer, using the model's exact wording. Preserve the model's language so the final answer is visible in context. Do not include extra clauses that follow.\n\
             **final_answer**: Locate and extract the final answer to the question from the model's answer. Use as few words as possible (the first occurrence of the conclusive answer).\n\
             **is_correct**: true if the final answer is correct given the ground truth, false otherwise.\n\
             **corrected_sentence**: answer_sentence with only the wrong words replaced so that it states the ground truth (equal to answer_sentence when is_correct is true).\n\
             **opposite_answer**: Modify the answer sentence as little as possible to make a medically plausible alternative for the question.\n\
             Respond only with valid JSON in this exact shape: {shape}"
        ),
    }
}

/// Stage 2: mark the divergent phrases of both answers.
pub fn stage_two(chosen: &str, rejected: &str) -> String {
    format!(
        "Chosen answer: {chosen}\nRejected answer: {rejected}\n\n\
         The two answers differ in a few words. Mark the phrases that differ in each answer, as short as possible, by wrapping each in <mask> and </mask>. Mark corresponding phrases in the same order in both answers. Do not change, add or remove any other character.\n\
         Respond only with valid JSON in this exact shape: {{\"chosen_marked\": \"...\", \"rejected_marked\": \"...\"}}"
    )
}

/// The JSON object inside a reply, tolerating Markdown code fences around it.
pub fn json_body(content: &str) -> &str {
    let text = content.trim();
    let text = text
        .strip_prefix("```json")
        .or_else(|| text.strip_prefix("```"))
        .unwrap_or(text);
    text.strip_suffix("```").unwrap_or(text).trim()
}
