//! What a loss returns: the differentiable batch loss and the detached metrics users watch.

use std::fmt;

use burn::tensor::{backend::Backend, Tensor};

/// A metric logged per step. Names follow TRL where one exists (`rewards/chosen`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// The total batch loss.
    Loss,
    /// The main preference term (DPO / phrase-level rank term), batch mean.
    RankLoss,
    /// FiRe-MPO's reversed visual rank term or mDPO's conditional term, batch mean (unweighted).
    VisualLoss,
    /// mDPO's anchor term, batch mean.
    AnchorLoss,
    /// The KL regularizer before its `α` weight, batch mean.
    KlLoss,
    /// `Σ_t KL(π_ref ‖ π_θ)_t` over the KL positions, batch mean.
    ForwardKl,
    /// `Σ_t KL(π_θ ‖ π_ref)_t` over the KL positions, batch mean.
    ReverseKl,
    /// Implicit reward of the chosen answer, batch mean.
    ChosenReward,
    /// Implicit reward of the rejected answer, batch mean.
    RejectedReward,
    /// Fraction of examples whose chosen reward exceeds the rejected reward.
    RewardAccuracy,
    /// Chosen minus rejected reward, batch mean.
    RewardMargin,
    /// Visual margin (FiRe-MPO: `r(v',y−) − r(v',y+)`; mDPO: `r(v,y+) − r(v',y+)`), mean over
    /// examples that have a corrupted image.
    VisualMargin,
    /// Policy sequence log-prob of the chosen answer, batch mean.
    ChosenLogps,
    /// Policy sequence log-prob of the rejected answer, batch mean.
    RejectedLogps,
    /// SFT: fraction of answer tokens predicted exactly (argmax).
    TokenAccuracy,
}

impl Metric {
    /// Stable name used in logs, JSONL and CSV headers.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Loss => "loss",
            Metric::RankLoss => "loss/rank",
            Metric::VisualLoss => "loss/visual",
            Metric::AnchorLoss => "loss/anchor",
            Metric::KlLoss => "loss/kl",
            Metric::ForwardKl => "kl/forward",
            Metric::ReverseKl => "kl/reverse",
            Metric::ChosenReward => "rewards/chosen",
            Metric::RejectedReward => "rewards/rejected",
            Metric::RewardAccuracy => "rewards/accuracy",
            Metric::RewardMargin => "rewards/margin",
            Metric::VisualMargin => "rewards/visual_margin",
            Metric::ChosenLogps => "logps/chosen",
            Metric::RejectedLogps => "logps/rejected",
            Metric::TokenAccuracy => "sft/token_accuracy",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Detached scalar metrics of one batch, still on the device (reading them syncs once).
#[derive(Debug, Clone)]
pub struct LossMetrics<B: Backend> {
    entries: Vec<(Metric, Tensor<B, 1>)>,
}

impl<B: Backend> Default for LossMetrics<B> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
        }
    }
}

impl<B: Backend> LossMetrics<B> {
    /// Records `value` (any shape-`[1]` tensor), detached from the graph.
    pub fn push(&mut self, metric: Metric, value: Tensor<B, 1>) {
        self.entries.push((metric, value.detach()));
    }

    /// Records the batch mean of a per-example tensor `[batch]`.
    pub fn push_mean(&mut self, metric: Metric, per_example: Tensor<B, 1>) {
        self.push(metric, per_example.mean());
    }

    /// The metrics recorded, in order.
    pub fn metrics(&self) -> impl Iterator<Item = Metric> + '_ {
        self.entries.iter().map(|(metric, _)| *metric)
    }

    /// Reads all values to the host in one transfer.
    pub fn read(&self) -> MetricValues {
        if self.entries.is_empty() {
            return MetricValues::default();
        }
        let stacked = Tensor::cat(self.entries.iter().map(|(_, v)| v.clone()).collect(), 0);
        let values: Vec<f64> = stacked
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("converted tensor data holds f64");
        MetricValues {
            values: self.entries.iter().map(|(m, _)| *m).zip(values).collect(),
        }
    }
}

/// Host-side metric values of one batch, in the order the loss recorded them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MetricValues {
    /// `(metric, value)` pairs.
    pub values: Vec<(Metric, f64)>,
}

impl MetricValues {
    /// The value of `metric`, if this loss records it.
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.values
            .iter()
            .find(|(m, _)| *m == metric)
            .map(|(_, v)| *v)
    }
}

/// A loss value with its metrics.
#[derive(Debug, Clone)]
pub struct LossOutput<B: Backend> {
    /// Batch-mean loss, shape `[1]`, differentiable w.r.t. the policy logits.
    pub loss: Tensor<B, 1>,
    /// Per-example loss `[batch]` (differentiable), e.g. for NaN diagnostics by example id
    /// (for SFT: the summed answer NLL of each example).
    pub per_example: Tensor<B, 1>,
    /// Detached metrics (always includes [`Metric::Loss`]).
    pub metrics: LossMetrics<B>,
}

impl<B: Backend> LossOutput<B> {
    /// Builds the output from per-example losses and the metrics recorded so far.
    pub(crate) fn new(per_example: Tensor<B, 1>, metrics: LossMetrics<B>) -> Self {
        Self::with_loss(per_example.clone().mean(), per_example, metrics)
    }

    /// Builds the output from a batch loss that is not the plain mean of `per_example`.
    pub(crate) fn with_loss(
        loss: Tensor<B, 1>,
        per_example: Tensor<B, 1>,
        mut metrics: LossMetrics<B>,
    ) -> Self {
        metrics
            .entries
            .insert(0, (Metric::Loss, loss.clone().detach()));
        Self {
            loss,
            per_example,
            metrics,
        }
    }
}

impl<B: Backend> LossMetrics<B> {
    /// Records chosen/rejected rewards (`[batch]`), their margin and the reward accuracy.
    pub(crate) fn push_rewards(&mut self, chosen: &Tensor<B, 1>, rejected: &Tensor<B, 1>) {
        let chosen = chosen.clone().detach();
        let rejected = rejected.clone().detach();
        self.push_mean(Metric::ChosenReward, chosen.clone());
        self.push_mean(Metric::RejectedReward, rejected.clone());
        self.push_mean(Metric::RewardMargin, chosen.clone() - rejected.clone());
        self.push_mean(Metric::RewardAccuracy, chosen.greater(rejected).float());
    }

    /// Records the mean of `margin` over the examples where `present` is 1 (0 when none are).
    pub(crate) fn push_present_mean(
        &mut self,
        metric: Metric,
        margin: Tensor<B, 1>,
        present: Tensor<B, 1>,
    ) {
        let count = present.clone().sum().clamp_min(1.0);
        self.push(metric, (margin * present).sum() / count);
    }
}
