//! The paper's judged metrics: closed answers decided by their first yes/no word (or an exact
//! match), else by the judge; open answers graded by the judge (accuracy, not token recall);
//! reports scored GREEN-style. Requests go through the shared [`JudgeClient`] (the one
//! `firempo pairs` uses: retries, circuit breaker, reply cache), prompts in [`prompts`].

pub mod prompts;

use firempo_datasets::{AnswerType, JudgeClient};
use serde::{Deserialize, Serialize};

pub use prompts::{parse_green, GreenCounts};

use crate::eval::error::EvalError;
use crate::eval::metrics::closed_rule;

/// One answer to judge.
#[derive(Debug, Clone, Copy)]
pub struct JudgeItem<'a> {
    /// Named in errors.
    pub record_id: &'a str,
    pub answer_type: AnswerType,
    pub question: &'a str,
    /// The reference answer or report.
    pub truth: &'a str,
    /// The model's answer or report.
    pub answer: &'a str,
}

/// What decided a closed or open answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecidedBy {
    /// The answer's first yes/no word (yes/no ground truth).
    YesNoWord,
    /// A normalized exact match (other closed ground truths).
    ExactMatch,
    /// The judge's grade.
    Judge,
}

/// The judged score of one answer.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Judgement {
    /// Closed or open answer: right or wrong, and what decided it.
    Grade { correct: bool, by: DecidedBy },
    /// Report: the GREEN-style counts.
    Green(GreenCounts),
}

impl Judgement {
    /// The answer's score in `[0, 1]`: 1/0 for a grade, the GREEN score for a report.
    pub fn score(&self) -> f64 {
        match self {
            Self::Grade { correct, .. } => f64::from(u8::from(*correct)),
            Self::Green(counts) => counts.score(),
        }
    }
}

/// Judges every item, up to the client's concurrency at once, in item order. Closed answers the
/// rule decides ([`closed_rule`]) send no request. The first failure (an endpoint that is down,
/// a reply that cannot be read after the retries) is the error: it names the record, the stage
/// and the reply.
pub fn judge_answers(
    client: &JudgeClient,
    items: &[JudgeItem],
) -> Result<Vec<Judgement>, EvalError> {
    client
        .map_concurrent(items, |item| judge_one(client, item))
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|source| EvalError::Judge {
            url: client.config().base_url.clone(),
            source: Box::new(source),
        })
}

fn judge_one(
    client: &JudgeClient,
    item: &JudgeItem,
) -> Result<Judgement, firempo_datasets::DatasetError> {
    let grade = |stage| -> Result<Judgement, _> {
        let grade: prompts::Grade = client.ask_json(
            item.record_id,
            stage,
            prompts::GRADER_SYSTEM,
            prompts::grading(item.question, item.truth, item.answer),
        )?;
        Ok(Judgement::Grade {
            correct: grade.correct,
            by: DecidedBy::Judge,
        })
    };
    match item.answer_type {
        AnswerType::Closed => match closed_rule(item.answer, item.truth) {
            Some(correct) => Ok(Judgement::Grade {
                correct,
                by: if correct && !is_yes_no(item.truth) {
                    DecidedBy::ExactMatch
                } else {
                    DecidedBy::YesNoWord
                },
            }),
            None => grade("closed grading"),
        },
        AnswerType::Open => grade("open grading"),
        AnswerType::Report => client
            .ask_with(
                item.record_id,
                "GREEN",
                prompts::GREEN_SYSTEM,
                prompts::green(item.truth, item.answer),
                false,
                parse_green,
            )
            .map(Judgement::Green),
    }
}

fn is_yes_no(truth: &str) -> bool {
    matches!(
        crate::eval::answer_tokens(truth).as_slice(),
        [t] if t == "yes" || t == "no"
    )
}
