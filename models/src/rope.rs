//! Rotary position embedding in the "rotate half" layout of HF `modeling_llama.py`
//! (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`), with explicit per-token positions so that
//! left padding and packed shared-prefix sequences get the positions HF would give them.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// `cos`/`sin` tables for one forward, each `[batch, 1, seq_len, head_dim]`.
#[derive(Debug, Clone)]
pub struct RopeTables<B: Backend> {
    pub cos: Tensor<B, 4>,
    pub sin: Tensor<B, 4>,
}

/// Rotary embedding parameters: `inv_freq[i] = theta^(-2i / head_dim)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rope {
    pub theta: f64,
    pub head_dim: usize,
}

impl Rope {
    /// Tables for integer positions `[batch, seq_len]`.
    pub fn tables<B: Backend>(&self, positions: Tensor<B, 2, Int>) -> RopeTables<B> {
        let device = positions.device();
        let [batch, seq_len] = positions.dims();
        let half = self.head_dim / 2;
        // f32 like HF, which builds inv_freq in float32.
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| (1.0 / self.theta.powf((2 * i) as f64 / self.head_dim as f64)) as f32)
            .collect();
        let inv_freq = Tensor::<B, 1>::from_data(TensorData::new(inv_freq, [half]), &device);
        let freqs = positions.float().unsqueeze_dim::<3>(2) * inv_freq.reshape([1, 1, half]);
        // [batch, seq_len, half]
        let emb = Tensor::cat(vec![freqs.clone(), freqs], 2);
        // [batch, seq_len, head_dim]
        let emb = emb.reshape([batch, 1, seq_len, self.head_dim]);
        // [batch, 1, seq_len, head_dim]
        RopeTables {
            cos: emb.clone().cos(),
            sin: emb.sin(),
        }
    }
}

/// `x · cos + rotate_half(x) · sin` for `x` `[batch, heads, seq_len, head_dim]`.
pub fn apply_rope<B: Backend>(x: Tensor<B, 4>, tables: &RopeTables<B>) -> Tensor<B, 4> {
    let [_, _, _, head_dim] = x.dims();
    let half = head_dim / 2;
    let x1 = x.clone().narrow(3, 0, half);
    let x2 = x.clone().narrow(3, half, half);
    let rotated = Tensor::cat(vec![x2.neg(), x1], 3);
    x * tables.cos.clone() + rotated * tables.sin.clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;

    type B = NdArray<f32>;

    #[test]
    fn rotation_matches_closed_form_and_keeps_norm() {
        let device = Default::default();
        let rope = Rope {
            theta: 10_000.0,
            head_dim: 4,
        };
        let pos = Tensor::<B, 2, Int>::from_ints([[3]], &device);
        let x = Tensor::<B, 4>::from_floats([[[[1.0, 2.0, 3.0, 4.0]]]], &device);
        let got: Vec<f32> = apply_rope(x, &rope.tables(pos))
            .into_data()
            .convert::<f32>()
            .to_vec()
            .unwrap();
        // Pair (x0, x2) rotates by 3·1, pair (x1, x3) by 3·0.01.
        let (a, b) = (3.0f64, 0.03f64);
        let want = [
            1.0 * a.cos() - 3.0 * a.sin(),
            2.0 * b.cos() - 4.0 * b.sin(),
            3.0 * a.cos() + 1.0 * a.sin(),
            4.0 * b.cos() + 2.0 * b.sin(),
        ];
        for (g, w) in got.iter().zip(want) {
            assert!((*g as f64 - w).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}
