//! Training: the optimization loop shared by every stage that trains (SFT and alignment), with
//! its schedule, gradient clipping, deterministic data order, checkpoints and metrics logs.
//!
//! We use our own loop rather than burn-train's `Learner`: alignment batches hold several answer
//! variants scored by a policy and a graph-free reference, and exact resume needs the data
//! position and per-step RNG under our control.

pub mod checkpoint;
pub mod clip;
pub mod data_parallel;
pub mod interrupt;
pub mod metrics_log;
pub mod order;
pub mod run_identity;
pub mod schedule;
pub mod storage;
pub mod trainable;
mod trainer;

pub use data_parallel::DeviceSpec;
pub use run_identity::RunIdentity;
pub use trainer::*;

/// The entries a training run writes directly in its run directory.
pub fn run_dir_entries() -> Vec<String> {
    [
        "checkpoints",
        "metrics.jsonl",
        "metrics.csv",
        run_identity::RUN_IDENTITY_FILE,
    ]
    .map(String::from)
    .to_vec()
}
