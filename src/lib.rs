//! firempo: fine-grained, on-policy, visually grounded preference optimization (FiRe-MPO) for
//! medical vision-language models, on burn.
//!
//! This crate composes the member crates (`firempo-losses`, …) into what users run: backend
//! selection ([`backend`]), the command line ([`cli`]), the loss playground ([`playground`]) and the
//! evaluation and reporting layer ([`eval`]).

pub mod backend;
pub mod cli;
pub mod eval;
pub mod pipeline;
pub mod playground;
pub mod stages;
pub mod train;

pub use firempo_losses as losses;
