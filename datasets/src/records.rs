//! firempo's own record schema: one question (or report prompt) about one image, with its ground
//! truth. Every public format (VQA-RAD, SLAKE, IU-Xray) and the synthetic benchmark converts to it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// How an answer is scored: closed (yes/no or options), open (free phrase) or a full report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AnswerType {
    /// Yes/no or a choice among options named in the question.
    Closed,
    /// A short free-text answer (location, organ, count…).
    Open,
    /// A radiology report (IU-Xray).
    Report,
}

/// Dataset split.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    /// Training split.
    Train,
    /// Validation split.
    Val,
    /// Test split.
    Test,
}

impl Split {
    /// All splits, in order.
    pub const ALL: [Split; 3] = [Split::Train, Split::Val, Split::Test];

    /// The lowercase name used in file names and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Val => "val",
            Split::Test => "test",
        }
    }
}

/// An axis-aligned box in pixel coordinates of the original image (SLAKE `detection.json` style).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoxRegion {
    /// Left edge.
    pub x: f32,
    /// Top edge.
    pub y: f32,
    /// Width in pixels.
    pub width: f32,
    /// Height in pixels.
    pub height: f32,
    /// What the box outlines (organ or lesion name), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Where the lesion (or organ) mask for a record comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum MaskSource {
    /// A PNG mask: any non-zero pixel is inside. Resized (nearest) to the image if sizes differ.
    Png {
        /// Path, relative to the dataset root unless absolute.
        path: PathBuf,
    },
    /// The union of boxes.
    Boxes {
        /// Boxes in image pixel coordinates.
        boxes: Vec<BoxRegion>,
    },
}

/// One record: an image, a question and its ground-truth answer.
///
/// JSONL line example:
/// `{"id":"synth-train-00000-q0","image":"images/train-00000.png","question":"Is there a lesion?","answer":"yes","answer_type":"closed","mask":{"kind":"png","path":"masks/train-00000.png"},"concept":"lesion","split":"train"}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// Unique id within the dataset.
    pub id: String,
    /// Image path, relative to the dataset root unless absolute.
    pub image: PathBuf,
    /// The question (or report prompt).
    pub question: String,
    /// Ground-truth answer (or report).
    pub answer: String,
    /// How the answer is scored.
    pub answer_type: AnswerType,
    /// Lesion mask source; `None` means corruption falls back to whole-image noise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mask: Option<MaskSource>,
    /// The clinical concept the question is about (prompt for a segmenter), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concept: Option<String>,
    /// Dataset split.
    pub split: Split,
    /// Free metadata carried from the source format (organ, modality, qid…).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub meta: Map<String, Value>,
}

impl Record {
    /// The image path resolved against `root` (absolute paths are kept).
    pub fn image_path(&self, root: &Path) -> PathBuf {
        root.join(&self.image)
    }

    /// The PNG mask path resolved against `root`, if the mask source is a PNG.
    pub fn mask_png_path(&self, root: &Path) -> Option<PathBuf> {
        match &self.mask {
            Some(MaskSource::Png { path }) => Some(root.join(path)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trips_and_rejects_unknown_fields() {
        let line = r#"{"id":"r1","image":"a.png","question":"Is there a lesion?","answer":"yes","answer_type":"closed","mask":{"kind":"boxes","boxes":[{"x":1.0,"y":2.0,"width":3.0,"height":4.0,"label":"Liver"}]},"split":"val"}"#;
        let record: Record = serde_json::from_str(line).unwrap();
        assert_eq!(record.answer_type, AnswerType::Closed);
        assert_eq!(record.split, Split::Val);
        let Some(MaskSource::Boxes { boxes }) = &record.mask else {
            panic!("expected boxes, got {:?}", record.mask)
        };
        assert_eq!(boxes[0].label.as_deref(), Some("Liver"));
        assert_eq!(boxes[0].height, 4.0);
        assert_eq!(serde_json::to_string(&record).unwrap(), line);

        let extra = line.replace(r#""split":"val""#, r#""split":"val","typo":1"#);
        let err = serde_json::from_str::<Record>(&extra).unwrap_err();
        assert!(err.to_string().contains("unknown field `typo`"), "{err}");
    }

    #[test]
    fn image_paths_resolve_against_root() {
        let record = Record {
            id: "x".into(),
            image: "imgs/a.png".into(),
            question: "q".into(),
            answer: "a".into(),
            answer_type: AnswerType::Open,
            mask: Some(MaskSource::Png {
                path: "m.png".into(),
            }),
            concept: None,
            split: Split::Train,
            meta: Map::new(),
        };
        assert_eq!(
            record.image_path(Path::new("/data")),
            PathBuf::from("/data/imgs/a.png")
        );
        assert_eq!(
            record.mask_png_path(Path::new("/data")),
            Some(PathBuf::from("/data/m.png"))
        );
    }
}
