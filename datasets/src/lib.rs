//! Datasets for FiRe-MPO: firempo's JSONL record, sample and pair schemas; loaders for VQA-RAD,
//! SLAKE and IU-Xray (R2Gen layout); image file I/O; lesion masks and lesion-targeted
//! corruption; a synthetic lesion benchmark; and minimal-edit preference pairs with phrase masks.
//! Tokenizing, image preprocessing and batching into tensors belong to the model side
//! (`firempo-models` and the app),
//! so this crate does not depend on burn.
//!
//! Method: `shared/design/METHOD.md` ("Pair construction", "Lesion-targeted corruption").
//! Schemas with example lines: the README's "Datasets" section.

mod corrupt_dataset;
mod corruption;
mod error;
mod files;
mod image;
mod intake;
pub mod iu_xray;
mod json_array;
mod jsonl;
mod mask;
mod pair;
pub mod pairs;
mod phrase;
mod records;
pub mod rng;
mod sample;
pub mod slake;
pub mod synth;
pub mod vqa_rad;

pub use corrupt_dataset::*;
pub use corruption::*;
pub use error::*;
pub use files::*;
pub use image::*;
pub use intake::*;
pub use jsonl::*;
pub use mask::*;
pub use pair::*;
pub use pairs::*;
pub use phrase::*;
pub use records::*;
pub use sample::*;
