//! One enum that dispatches to every preference loss, for configs and the CLI.

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::batch::PreferenceBatch;
use crate::dpo::DpoConfig;
use crate::error::LossError;
use crate::fire_mpo::FiReMpoConfig;
use crate::mdpo::MdpoConfig;
use crate::output::LossOutput;
use crate::rrpo::RrpoConfig;

/// A preference-optimization loss with its hyperparameters.
///
/// Serialized with a `method` tag, e.g. `{"method": "fire-mpo", "beta": 0.1, "gamma": 0.1}`;
/// omitted fields take their defaults and unknown fields are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum PreferenceLoss {
    /// Sequence-level DPO.
    Dpo(DpoConfig),
    /// Phrase-level RRPO with forward KL.
    Rrpo(RrpoConfig),
    /// DPO plus image-conditional and anchor terms.
    Mdpo(MdpoConfig),
    /// FiRe-MPO: phrase-level rank term, reversed visual term, bidirectional KL.
    FireMpo(FiReMpoConfig),
}

/// Which corrupted-image variants a loss needs the trainer to score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Requirements {
    /// `(v', y+)` is used.
    pub corrupted_chosen: bool,
    /// `(v', y−)` is used.
    pub corrupted_rejected: bool,
}

impl PreferenceLoss {
    /// Short method name as used on the command line (`dpo`, `rrpo`, `mdpo`, `fire-mpo`).
    pub fn name(&self) -> &'static str {
        match self {
            PreferenceLoss::Dpo(_) => "dpo",
            PreferenceLoss::Rrpo(_) => "rrpo",
            PreferenceLoss::Mdpo(_) => "mdpo",
            PreferenceLoss::FireMpo(_) => "fire-mpo",
        }
    }

    /// Validates the hyperparameters.
    pub fn validate(&self) -> Result<(), LossError> {
        match self {
            PreferenceLoss::Dpo(config) => config.validate(),
            PreferenceLoss::Rrpo(config) => config.validate(),
            PreferenceLoss::Mdpo(config) => config.validate(),
            PreferenceLoss::FireMpo(config) => config.validate(),
        }
    }

    /// Whether the loss reads phrase ids (edited spans); DPO and mDPO score whole answers.
    pub fn reads_phrases(&self) -> bool {
        matches!(self, PreferenceLoss::Rrpo(_) | PreferenceLoss::FireMpo(_))
    }

    /// Whether the loss reads the reference's distribution over the vocabulary (the KL terms of
    /// RRPO and FiRe-MPO), not only its label log-probs: such a loss needs
    /// [`ReferenceScores::Logits`](crate::ReferenceScores::Logits) for every answer variant.
    pub fn reads_reference_distribution(&self) -> bool {
        matches!(self, PreferenceLoss::Rrpo(_) | PreferenceLoss::FireMpo(_))
    }

    /// The corrupted variants this loss reads, so the trainer skips forwards it does not need.
    pub fn requirements(&self) -> Requirements {
        match self {
            PreferenceLoss::Dpo(_) | PreferenceLoss::Rrpo(_) => Requirements::default(),
            PreferenceLoss::Mdpo(_) => Requirements {
                corrupted_chosen: true,
                corrupted_rejected: false,
            },
            PreferenceLoss::FireMpo(config) => Requirements {
                corrupted_chosen: config.gamma > 0.0,
                corrupted_rejected: config.gamma > 0.0,
            },
        }
    }

    /// Computes the loss on one batch.
    pub fn loss<B: Backend>(&self, batch: PreferenceBatch<B>) -> Result<LossOutput<B>, LossError> {
        match self {
            PreferenceLoss::Dpo(config) => config.loss(batch),
            PreferenceLoss::Rrpo(config) => config.loss(batch),
            PreferenceLoss::Mdpo(config) => config.loss(batch),
            PreferenceLoss::FireMpo(config) => config.loss(batch),
        }
    }
}

impl Default for PreferenceLoss {
    fn default() -> Self {
        PreferenceLoss::FireMpo(FiReMpoConfig::default())
    }
}
