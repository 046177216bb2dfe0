//! On-policy minimal-edit preference pairs (METHOD.md, "Pair construction"): an [`Editor`] turns the
//! model's answer `ŷ` and the ground truth into `(y+, y−)` by the paper's two branches, with the
//! divergent phrases marked; [`build_pairs`] adds the lesion-corrupted image and writes JSONL.

mod build;
mod judge;
mod prompts;
mod rule;

pub use build::*;
pub use judge::*;
pub use prompts::{StageOne, StageTwo};
pub use rule::*;

use crate::error::DatasetError;
use crate::pair::{PairBranch, PhraseSpan};
use crate::records::Record;
use crate::sample::Sample;

/// The result of editing one sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// `y+`.
    pub chosen: String,
    /// `y−`.
    pub rejected: String,
    /// Divergent phrases of `y+` (ids aligned with `rejected_spans`).
    pub chosen_spans: Vec<PhraseSpan>,
    /// Divergent phrases of `y−`.
    pub rejected_spans: Vec<PhraseSpan>,
    /// Which branch was taken.
    pub branch: PairBranch,
}

/// Builds `(y+, y−)` from an on-policy sample and its record.
///
/// Branches: the model was wrong → `y+` = `ŷ` with only the wrong span replaced by the ground
/// truth, `y−` = `ŷ`; the model was right → `y+` = `ŷ`, `y−` = `ŷ` with a plausible opposite
/// spliced in.
pub trait Editor: Sync {
    /// Name written into each pair (`rule`, `judge:<model>`).
    fn name(&self) -> String;

    /// Edits one sample.
    fn edit(&self, sample: &Sample, record: &Record) -> Result<Edit, DatasetError>;

    /// Edits many samples; editors that call services override this to work concurrently.
    /// Results are in input order.
    fn edit_all(&self, items: &[(&Sample, &Record)]) -> Vec<Result<Edit, DatasetError>> {
        items.iter().map(|(s, r)| self.edit(s, r)).collect()
    }

    /// Why the editor gave up for good, if it did (a judge whose endpoint kept failing): the
    /// run ends with this error instead of listing every remaining sample as failed.
    fn stopped(&self) -> Option<DatasetError> {
        None
    }
}
