//! The vision tower's 2-D rotary embedding (HF `Qwen2VLVisionRotaryEmbedding`): a quarter of
//! each head's dimensions turn with the patch row, a quarter with its column, and the
//! rotate-half layout doubles them to the full head.

use burn::tensor::{backend::Backend, Tensor, TensorData};

use crate::rope::RopeTables;

/// `inv_freq[i] = theta^(-2i / (head_dim / 2))` for `i < head_dim / 4`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VisionRotary {
    pub theta: f64,
    pub head_dim: usize,
}

impl VisionRotary {
    /// Tables `[1, 1, n_patches, head_dim]` for patches at `(row, column)` `positions`:
    /// angles `[row·f, col·f, row·f, col·f]`.
    pub fn tables<B: Backend>(
        &self,
        positions: &[[usize; 2]],
        device: &B::Device,
    ) -> RopeTables<B> {
        let spatial = self.head_dim / 2;
        // f32 like HF: the product is formed in float32 before cos/sin.
        let inv_freq: Vec<f32> = (0..spatial / 2)
            .map(|i| (1.0 / self.theta.powf((2 * i) as f64 / spatial as f64)) as f32)
            .collect();
        let mut angles = Vec::with_capacity(positions.len() * self.head_dim);
        for &[row, col] in positions {
            let half: Vec<f32> = inv_freq
                .iter()
                .map(|f| row as f32 * f)
                .chain(inv_freq.iter().map(|f| col as f32 * f))
                .collect();
            angles.extend_from_slice(&half);
            angles.extend_from_slice(&half);
        }
        let emb = Tensor::<B, 4>::from_data(
            TensorData::new(angles, [1, 1, positions.len(), self.head_dim]),
            device,
        );
        RopeTables {
            cos: emb.clone().cos(),
            sin: emb.sin(),
        }
    }
}
