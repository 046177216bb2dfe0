//! Preference-optimization losses for vision-language models, generic over burn's `Backend`:
//! DPO, RRPO, mDPO and FiRe-MPO (plus the SFT token NLL), with the token log-prob and token-wise KL building blocks.
//!
//! Losses consume answer-position logits only ([`PreferenceBatch`]) and return the differentiable
//! batch loss with detached metrics ([`LossOutput`]). Formulas: each loss's doc comment and
//! `shared/design/METHOD.md`.

mod batch;
mod dpo;
mod error;
mod fire_mpo;
pub mod kl;
pub mod logps;
mod mdpo;
mod output;
mod preference;
mod rrpo;
mod sft;

pub use batch::*;
pub use dpo::*;
pub use error::LossError;
pub use fire_mpo::*;
pub use mdpo::*;
pub use output::*;
pub use preference::*;
pub use rrpo::*;
pub use sft::*;
