//! Learning-rate schedule: linear warmup, then cosine decay (as HF `get_cosine_schedule_with_warmup`).
//!
//! The rate is a pure function of the optimizer step, so resuming needs only the step number.

use serde::{Deserialize, Serialize};

/// Linear warmup from 0 to `peak_lr`, then cosine decay to `min_lr_ratio * peak_lr` at `total_steps`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LrSchedule {
    /// Learning rate reached after warmup.
    pub peak_lr: f64,
    /// Optimizer steps of linear warmup.
    pub warmup_steps: usize,
    /// Total optimizer steps of the run (end of the cosine).
    pub total_steps: usize,
    /// Final learning rate as a fraction of `peak_lr`.
    pub min_lr_ratio: f64,
}

impl Default for LrSchedule {
    fn default() -> Self {
        Self {
            peak_lr: 1e-4,
            warmup_steps: 0,
            total_steps: 100,
            min_lr_ratio: 0.0,
        }
    }
}

impl LrSchedule {
    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: usize) -> f64 {
        if step < self.warmup_steps {
            return self.peak_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps) as f64 / decay_steps as f64).min(1.0);
        let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
        self.peak_lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * cosine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine() {
        let schedule = LrSchedule {
            peak_lr: 1.0,
            warmup_steps: 4,
            total_steps: 14,
            min_lr_ratio: 0.1,
        };
        assert_eq!(schedule.lr(0), 0.25);
        assert_eq!(schedule.lr(3), 1.0);
        assert_eq!(schedule.lr(4), 1.0);
        // Halfway through the decay the cosine is at its midpoint.
        assert!((schedule.lr(9) - 0.55).abs() < 1e-12, "{}", schedule.lr(9));
        assert!((schedule.lr(14) - 0.1).abs() < 1e-12);
        assert!(
            (schedule.lr(100) - 0.1).abs() < 1e-12,
            "stays at the floor after the end"
        );
    }
}
