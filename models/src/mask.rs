//! Attention biases and positions, built on the host from token masks.
//!
//! One rule covers ordinary causal batches (HF `_prepare_4d_causal_attention_mask`), cached
//! decoding and packed shared-prefix sequences: a query may attend to a key if the key is a real
//! token, is not in the future, and lies in the same segment or in the shared prefix. The diagonal
//! is always allowed, so padding queries never produce an all-masked (NaN) row.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// Score added to masked logits. Finite so f32 softmax stays NaN-free.
pub const MASKED: f32 = -1e9;

/// Key-side description of one batch row.
#[derive(Debug, Clone)]
pub struct RowLayout {
    /// Per key position (cache + current chunk): is it a real token.
    pub key_valid: Vec<bool>,
    /// Per key position: segment id (0 = shared prefix, visible to all; k > 0 = answer k).
    pub key_segment: Vec<u32>,
}

/// Additive bias `[batch, 1, q_len, kv_len]` for queries at key positions `past..past + q_len`.
pub fn attention_bias<B: Backend>(
    rows: &[RowLayout],
    past: usize,
    q_len: usize,
    device: &B::Device,
) -> Tensor<B, 4> {
    let batch = rows.len();
    let kv_len = past + q_len;
    let mut bias = vec![0f32; batch * q_len * kv_len];
    for (b, row) in rows.iter().enumerate() {
        debug_assert_eq!(row.key_valid.len(), kv_len);
        for q in 0..q_len {
            let q_abs = past + q;
            let q_seg = row.key_segment[q_abs];
            for k in 0..kv_len {
                let visible = k == q_abs
                    || (k < q_abs
                        && row.key_valid[k]
                        && (row.key_segment[k] == 0 || row.key_segment[k] == q_seg));
                if !visible {
                    bias[(b * q_len + q) * kv_len + k] = MASKED;
                }
            }
        }
    }
    Tensor::from_data(TensorData::new(bias, [batch, 1, q_len, kv_len]), device)
}

/// Positions `cumsum(mask) - 1` per row, 0 at padding (HF `generate`'s `position_ids`).
pub fn positions_from_mask(mask: &[Vec<bool>]) -> Vec<Vec<i64>> {
    mask.iter()
        .map(|row| {
            let mut n = 0i64;
            row.iter()
                .map(|&m| {
                    if m {
                        n += 1;
                        n - 1
                    } else {
                        0
                    }
                })
                .collect()
        })
        .collect()
}

/// Host `[batch][seq]` integers to an `Int` tensor.
pub fn int_tensor<B: Backend>(rows: &[Vec<i64>], device: &B::Device) -> Tensor<B, 2, Int> {
    let batch = rows.len();
    let seq = rows.first().map_or(0, Vec::len);
    let flat: Vec<i64> = rows.iter().flatten().copied().collect();
    Tensor::from_data(TensorData::new(flat, [batch, seq]), device)
}

/// Reads an `Int` tensor `[batch, seq]` back to the host.
pub fn host_ints<B: Backend>(t: &Tensor<B, 2, Int>) -> Vec<Vec<i64>> {
    let [batch, seq] = t.dims();
    let data = t.to_data().convert::<i64>();
    let flat: Vec<i64> = data.to_vec().unwrap_or_default();
    (0..batch)
        .map(|b| flat[b * seq..(b + 1) * seq].to_vec())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    #[test]
    fn causal_padding_and_segments() {
        let row = RowLayout {
            key_valid: vec![false, true, true, true, true],
            key_segment: vec![0, 0, 0, 1, 2],
        };
        let bias = attention_bias::<NdArray>(&[row], 0, 5, &Default::default());
        let v: Vec<f32> = bias.into_data().convert::<f32>().to_vec().unwrap();
        let allowed = |q: usize, k: usize| v[q * 5 + k] == 0.0;
        assert!(allowed(0, 0), "padding query sees itself");
        assert!(!allowed(1, 0), "padding key hidden");
        assert!(allowed(2, 1) && !allowed(1, 2), "causal");
        assert!(allowed(3, 2) && allowed(4, 2), "answers see the prefix");
        assert!(!allowed(4, 3), "answers do not see each other");
        assert_eq!(
            positions_from_mask(&[vec![false, true, true]]),
            vec![vec![0, 0, 1]]
        );
    }
}
