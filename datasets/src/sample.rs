//! On-policy samples: the model's own greedy answer to a record's question, as JSONL.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One on-policy answer.
///
/// JSONL line example:
/// `{"record_id":"synth-train-00003-presence","question":"Is there a lesion in this image?","answer":"no","model":"tiny-vlm@step-0"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sample {
    /// The [`crate::Record`] this answers.
    pub record_id: String,
    /// The question as the model saw it.
    pub question: String,
    /// The model's answer `ŷ` (greedy decoding).
    pub answer: String,
    /// Which model (and checkpoint) produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Free metadata (decoding settings, log-prob…).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_line_parses() {
        let line = r#"{"record_id":"synth-train-00003-presence","question":"Is there a lesion in this image?","answer":"no","model":"tiny-vlm@step-0"}"#;
        let sample: Sample = serde_json::from_str(line).unwrap();
        assert_eq!(sample.answer, "no");
        assert_eq!(sample.model.as_deref(), Some("tiny-vlm@step-0"));
        assert_eq!(serde_json::to_string(&sample).unwrap(), line);
    }
}
