//! Training: the optimization loop shared by every stage that trains (SFT and alignment), with
//! its schedule, gradient clipping, deterministic data order, checkpoints and metrics logs.
//!
//! We use our own loop rather than burn-train's `Learner`: alignment batches hold several answer
//! variants scored by a policy and a graph-free reference, and exact resume needs the data
//! position and per-step RNG under our control.

pub mod checkpoint;
pub mod clip;
pub mod interrupt;
pub mod metrics_log;
pub mod order;
pub mod schedule;
mod trainer;

pub use trainer::*;
