//! Supervised fine-tuning loss: mean negative log-likelihood of the answer tokens (teacher
//! forcing), as HF `CausalLMOutput.loss` with prompt tokens masked out.

use burn::tensor::{backend::Backend, Int, Tensor};

use crate::error::{require_shape, LossError};
use crate::logps::{masked_sum, VocabLogProbs};
use crate::output::{LossMetrics, LossOutput, Metric};

/// Token-level NLL of `labels` under `logits`, averaged over the answer tokens of the batch:
///
/// `L = −(1 / Σ_{n,t} m_{n,t}) Σ_{n,t} m_{n,t} log π(y_{n,t} | ·)`
///
/// Every token weighs the same (long answers count more), as in HF causal-LM training. Also
/// records [`Metric::TokenAccuracy`]: the fraction of answer tokens that are the argmax.
///
/// # Shapes
/// - `logits`: `[batch, seq_len, vocab]` at answer positions; `labels`, `mask`: `[batch, seq_len]`
pub fn sft_loss<B: Backend>(
    logits: Tensor<B, 3>,
    labels: Tensor<B, 2, Int>,
    mask: Tensor<B, 2>,
) -> Result<LossOutput<B>, LossError> {
    let [batch, seq_len, _] = logits.dims();
    require_shape("labels", &[batch, seq_len], &labels.dims())?;
    require_shape("mask", &[batch, seq_len], &mask.dims())?;
    let predicted = logits.clone().detach().argmax(2).squeeze_dim::<2>(2); // [batch, seq_len]
    let log_probs = VocabLogProbs::from_logits(logits);
    let token_nll = log_probs.label_log_probs(labels.clone()).neg();
    let tokens = mask.clone().sum().clamp_min(1.0); // [1]
                                                    // [batch]: summed NLL of each answer (the batch loss is the token mean, not their mean)
    let per_example = masked_sum(token_nll, mask.clone());
    let loss = per_example.clone().sum() / tokens.clone();
    let correct = predicted.equal(labels).float() * mask;
    let mut metrics = LossMetrics::default();
    metrics.push(Metric::TokenAccuracy, correct.sum() / tokens);
    Ok(LossOutput::with_loss(loss, per_example, metrics))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f64>;

    #[test]
    fn token_mean_nll_and_accuracy() {
        let device = Default::default();
        // Example 0: p = [1/4, 3/4], label 1 (argmax) then a masked position;
        // example 1: uniform over 2, label 0 (tie: argmax picks 0).
        let logits = Tensor::<B, 3>::from_data(
            TensorData::new(
                vec![0.0, 3f64.ln(), 5.0, -5.0, 0.0, 0.0, 0.0, 0.0],
                [2, 2, 2],
            ),
            &device,
        );
        let labels =
            Tensor::<B, 2, Int>::from_data(TensorData::new(vec![1i64, 1, 0, 0], [2, 2]), &device);
        let mask =
            Tensor::<B, 2>::from_data(TensorData::new(vec![1.0, 0.0, 1.0, 1.0], [2, 2]), &device);
        let out = sft_loss(logits, labels, mask).unwrap();
        let expected = (-(0.75f64.ln()) + 2.0 * 2f64.ln()) / 3.0;
        let loss: f64 = out.loss.into_scalar();
        assert!((loss - expected).abs() < 1e-12, "{loss} vs {expected}");
        let metrics = out.metrics.read();
        assert_eq!(metrics.get(Metric::TokenAccuracy), Some(1.0));
        let per_example: Vec<f64> = out.per_example.into_data().to_vec().unwrap();
        assert!((per_example[1] - 2.0 * 2f64.ln()).abs() < 1e-12);
    }
}
