//! End-to-end tests of the pipeline, in one test binary (each binary of this package compiles
//! burn's generic kernels at opt-level 2, so fewer binaries build much faster). The resume test
//! has its own binary (`tests/trainer_resume.rs`) because the stop flag it sets is process-wide.

mod align;
mod checkpointing;
mod common;
mod convert;
mod data_parallel;
mod demo;
mod eval_judge;
mod forward;
mod hf_checkpoint;
mod original_llava;
mod pairs;
#[path = "../support/qwen_checkpoint.rs"]
mod qwen_checkpoint;
mod qwen_vl;
mod reference_cache;
mod sft;
mod trainer_errors;
