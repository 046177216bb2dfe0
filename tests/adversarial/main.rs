//! The adversarial suite: each case drives the real `firempo` binary (or a stage API) on a small bad
//! input or a user's mistake, and states the exit status and the message or file state it expects.
//! Every run has a wall-clock limit (a hang fails the case) and an address-space limit (an
//! allocation sized by a crafted header fails the case instead of the machine).
//!
//! One module per area; the issue item each case reproduces is named in its doc comment.

mod common;
mod inputs;
mod models;
#[path = "../support/qwen_checkpoint.rs"]
mod qwen_checkpoint;
mod qwen_vl;
mod runs;
