//! Questions, answers and reports of the synthetic benchmark, from the drawn lesions.
//!
//! Closed: presence (yes/no), side (left/right), zone (upper/middle/lower).
//! Open: location (`left lung, upper zone`), count (`0`–`3`), size (small/medium/large).
//! Report: one or two templated sentences. Side, zone and size refer to the largest lesion, and all
//! lesions of an image lie in one lung, so every answer is unambiguous.

use crate::records::AnswerType;

use super::render::Lesion;

/// One generated question with its answer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Qa {
    /// Short name, used in the record id (`presence`, `side`, …).
    pub kind: &'static str,
    pub question: String,
    pub answer: String,
    pub answer_type: AnswerType,
}

fn qa(kind: &'static str, question: &str, answer: String, answer_type: AnswerType) -> Qa {
    Qa {
        kind,
        question: question.to_string(),
        answer,
        answer_type,
    }
}

/// The questions asked about an image with `lesions` (the first is the largest).
pub(crate) fn questions(lesions: &[Lesion], reports: bool) -> Vec<Qa> {
    let mut out = vec![
        qa(
            "presence",
            "Is there a lesion in this image?",
            if lesions.is_empty() { "no" } else { "yes" }.to_string(),
            AnswerType::Closed,
        ),
        qa(
            "count",
            "How many lesions are there?",
            lesions.len().to_string(),
            AnswerType::Open,
        ),
    ];
    if let Some(largest) = lesions.first() {
        let (side, zone, size) = (
            largest.side.word(),
            largest.zone.word(),
            largest.size.word(),
        );
        out.extend([
            qa(
                "side",
                "Is the lesion in the left lung or the right lung?",
                side.to_string(),
                AnswerType::Closed,
            ),
            qa(
                "zone",
                "Is the largest lesion in the upper, middle or lower zone?",
                zone.to_string(),
                AnswerType::Closed,
            ),
            qa(
                "location",
                "Where is the largest lesion?",
                format!("{side} lung, {zone} zone"),
                AnswerType::Open,
            ),
            qa(
                "size",
                "How large is the largest lesion?",
                size.to_string(),
                AnswerType::Open,
            ),
        ]);
    }
    if reports {
        out.push(qa(
            "report",
            "Describe the findings in this image.",
            report(lesions),
            AnswerType::Report,
        ));
    }
    out
}

/// The templated report.
pub(crate) fn report(lesions: &[Lesion]) -> String {
    let Some(largest) = lesions.first() else {
        return "Both lungs are clear. No lesion is seen.".to_string();
    };
    let (side, zone, size) = (
        largest.side.word(),
        largest.zone.word(),
        largest.size.word(),
    );
    let other = match largest.side.word() {
        "left" => "right",
        _ => "left",
    };
    match lesions.len() {
        1 => format!("There is a {size} lesion in the {side} lung, {zone} zone. The {other} lung is clear."),
        n => format!(
            "There are {n} lesions in the {side} lung; the largest is {size}, in the {zone} zone. The {other} lung is clear."
        ),
    }
}
