//! Datasets for FiRe-MPO: firempo's JSONL record, sample and pair schemas; loaders for VQA-RAD,
//! SLAKE and IU-Xray (R2Gen layout); image preprocessing; lesion masks and lesion-targeted
//! corruption; a synthetic lesion benchmark; minimal-edit preference pairs with phrase masks; and
//! collation into burn tensors.
//!
//! Method: `shared/design/METHOD.md` ("Pair construction", "Lesion-targeted corruption").
//! Schemas with example lines: the README's "Datasets" section.

mod collate;
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
mod tokenizer;
pub mod vqa_rad;

pub use collate::*;
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
pub use tokenizer::*;
