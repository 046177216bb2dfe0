//! The pipeline's stages as functions over files: each reads its inputs from disk and writes its
//! outputs, so any stage can be rerun or inspected alone (`firempo <stage> --help`).

pub mod align;
pub mod data;
pub mod demo;
pub mod eval;
pub mod pairs;
pub mod sample;
pub mod sft;
