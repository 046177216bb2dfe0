//! Rotary position embedding in the "rotate half" layout of HF `modeling_llama.py`
//! (`LlamaRotaryEmbedding`, `apply_rotary_pos_emb`), with explicit per-token positions so that
//! left padding and packed shared-prefix sequences get the positions HF would give them.

use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

use crate::host_rope::host_rope;

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
    /// `inv_freq` `[head_dim / 2]`, in f32 like HF, which builds it in float32.
    fn inv_freq(&self) -> Vec<f32> {
        (0..self.head_dim / 2)
            .map(|i| (1.0 / self.theta.powf((2 * i) as f64 / self.head_dim as f64)) as f32)
            .collect()
    }

    /// Tables for integer positions `[batch, seq_len]`.
    pub fn tables<B: Backend>(&self, positions: Tensor<B, 2, Int>) -> RopeTables<B> {
        let device = positions.device();
        let half = self.head_dim / 2;
        let inv_freq = Tensor::<B, 1>::from_data(TensorData::new(self.inv_freq(), [half]), &device);
        let freqs = positions.float().unsqueeze_dim::<3>(2) * inv_freq.reshape([1, 1, half]);
        // [batch, seq_len, half]
        self.tables_from_freqs(freqs)
    }

    /// Multimodal RoPE (Qwen2-VL, HF `Qwen2VLRotaryEmbedding`): `positions` `[3, batch, seq_len]`
    /// holds temporal, height and width positions; frequency `i` of the `head_dim / 2` takes its
    /// angle from the axis whose chunk of `mrope_section` (e.g. `[16, 24, 24]`, summing to
    /// `head_dim / 2`) contains `i`. With all three axes equal this is [`Rope::tables`].
    ///
    /// # Panics
    /// If `mrope_section` does not sum to `head_dim / 2` (configs are checked when read).
    pub fn mrope_tables<B: Backend>(
        &self,
        positions: Tensor<B, 3, Int>,
        mrope_section: &[usize],
    ) -> RopeTables<B> {
        let device = positions.device();
        let [axes, batch, seq_len] = positions.dims();
        let half = self.head_dim / 2;
        assert_eq!(
            mrope_section.iter().sum::<usize>(),
            half,
            "mrope_section must sum to head_dim / 2"
        );
        let inv_freq = self.inv_freq();
        let positions = positions.float();
        let mut start = 0;
        let chunks = mrope_section
            .iter()
            .enumerate()
            .map(|(i, &len)| {
                let axis = positions
                    .clone()
                    .narrow(0, i % axes, 1)
                    .reshape([batch, seq_len, 1]);
                let f = Tensor::<B, 1>::from_data(
                    TensorData::new(inv_freq[start..start + len].to_vec(), [len]),
                    &device,
                );
                start += len;
                axis * f.reshape([1, 1, len])
                // [batch, seq_len, len]
            })
            .collect();
        self.tables_from_freqs(Tensor::cat(chunks, 2))
    }

    /// Interleaved multimodal RoPE (Qwen3-VL, HF `Qwen3VLTextRotaryEmbedding`): frequency `i`
    /// turns with the height position when `i % 3 == 1` and `i < 3 · mrope_section[1]`, with the
    /// width position when `i % 3 == 2` and `i < 3 · mrope_section[2]`, otherwise with the
    /// temporal one. `positions` `[3, batch, seq_len]`.
    pub fn mrope_interleaved_tables<B: Backend>(
        &self,
        positions: Tensor<B, 3, Int>,
        mrope_section: &[usize],
    ) -> RopeTables<B> {
        let device = positions.device();
        let [axes, batch, seq_len] = positions.dims();
        let half = self.head_dim / 2;
        let axis_of = |i: usize| match i % 3 {
            1 if i < 3 * mrope_section.get(1).copied().unwrap_or(0) => 1,
            2 if i < 3 * mrope_section.get(2).copied().unwrap_or(0) => 2,
            _ => 0,
        };
        let inv_freq = self.inv_freq();
        let positions = positions.float();
        // Σ_axis positions[axis] · (inv_freq masked to that axis's frequencies): exact, since
        // each term is either the product or zero.
        let freqs = (0..3)
            .map(|a| {
                let masked: Vec<f32> = (0..half)
                    .map(|i| if axis_of(i) == a { inv_freq[i] } else { 0.0 })
                    .collect();
                let f = Tensor::<B, 1>::from_data(TensorData::new(masked, [half]), &device);
                positions
                    .clone()
                    .narrow(0, a % axes, 1)
                    .reshape([batch, seq_len, 1])
                    * f.reshape([1, 1, half])
            })
            .reduce(|a, b| a + b)
            .expect("three axes");
        self.tables_from_freqs(freqs)
    }

    /// `cos`/`sin` of `cat(freqs, freqs)` for angles `freqs` `[batch, seq_len, head_dim / 2]`.
    fn tables_from_freqs<B: Backend>(&self, freqs: Tensor<B, 3>) -> RopeTables<B> {
        let [batch, seq_len, _] = freqs.dims();
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

/// `x · cos + rotate_half(x) · sin` for `x` `[batch, heads, seq_len, head_dim]`; one host op
/// on backends registered with [`crate::register_host_rope`].
pub fn apply_rope<B: Backend>(x: Tensor<B, 4>, tables: &RopeTables<B>) -> Tensor<B, 4> {
    if let Some(host) = host_rope(&x, tables) {
        return host(x, tables);
    }
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

    #[test]
    fn mrope_with_equal_axes_is_plain_rope_and_sections_pick_axes() {
        let device = Default::default();
        let rope = Rope {
            theta: 10_000.0,
            head_dim: 8,
        };
        let pos = Tensor::<B, 2, Int>::from_ints([[0, 3, 7]], &device);
        let plain = rope.tables(pos.clone());
        let same = rope.mrope_tables(pos.unsqueeze::<3>().repeat_dim(0, 3), &[1, 2, 1]);
        let diff = (plain.cos - same.cos.clone()).abs().max().into_scalar();
        assert!(diff < 1e-6, "{diff}");
        // Axis t = 0, h = 5, w = 9 at one token: frequency 0 from t, 1..3 from h, 3 from w.
        let pos = Tensor::<B, 1, Int>::from_ints([0, 5, 9], &device).reshape([3, 1, 1]);
        let t = rope.mrope_tables(pos, &[1, 2, 1]);
        let cos: Vec<f32> = t.cos.into_data().convert::<f32>().to_vec().unwrap();
        let inv = |i: i32| 10_000f64.powf(-(2 * i) as f64 / 8.0);
        let want = [
            1.0,
            (5.0 * inv(1)).cos(),
            (5.0 * inv(2)).cos(),
            (9.0 * inv(3)).cos(),
        ];
        for i in 0..8 {
            assert!((cos[i] as f64 - want[i % 4]).abs() < 1e-5, "{cos:?}");
        }
    }
}
