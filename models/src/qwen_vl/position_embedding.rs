//! Qwen3-VL's learned absolute position embeddings: a square `side × side` table resized to each
//! image's patch grid by bilinear interpolation with `align_corners=True` (transformers
//! `get_vision_interpolation_indices_and_weights`, what `F.interpolate` computes), four taps per
//! patch, patches in the processor's block-major order.

use burn::nn::Embedding;
use burn::tensor::{backend::Backend, Int, Tensor, TensorData};

/// Per-axis taps `(low, high)` and weights `(1 − frac, frac)` for `index` on an axis of `size`
/// target positions over `side` table entries; f32 like HF.
fn axis_taps(index: usize, size: usize, side: usize) -> ([usize; 2], [f32; 2]) {
    let src = index as f32 * (side - 1) as f32 / (size.max(2) - 1) as f32;
    let floor = src.floor();
    let low = (floor as usize).min(side - 1);
    let high = (floor as usize + 1).min(side - 1);
    // HF's hat kernel `max(1 − |src − floor − offset|, 0)`, in its operation order.
    let weight = |offset: f32| (1.0 - (src - floor - offset).abs()).max(0.0);
    ([low, high], [weight(0.0), weight(1.0)])
}

/// Table indices `[n_patches · 4]` and weights `[n_patches · 4]` for `grids` over a
/// `side × side` table.
pub fn interpolation_taps(grids: &[[usize; 3]], side: usize, merge: usize) -> (Vec<i64>, Vec<f32>) {
    let mut indices = Vec::new();
    let mut weights = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for mh in 0..merge {
                        for mw in 0..merge {
                            let (rows, rw) = axis_taps(bh * merge + mh, h, side);
                            let (cols, cw) = axis_taps(bw * merge + mw, w, side);
                            for a in 0..2 {
                                for b in 0..2 {
                                    indices.push((rows[a] * side + cols[b]) as i64);
                                    weights.push(rw[a] * cw[b]);
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (indices, weights)
}

/// Position embeddings `[n_patches, d_model]` for `grids` from `table` (`side²` rows).
pub fn interpolated_position_embeddings<B: Backend>(
    table: &Embedding<B>,
    grids: &[[usize; 3]],
    merge: usize,
) -> Tensor<B, 2> {
    let weight = table.weight.val();
    let device = weight.device();
    let [rows, d] = weight.dims();
    let side = (rows as f64).sqrt() as usize;
    let (indices, weights) = interpolation_taps(grids, side, merge);
    let n = indices.len() / 4;
    let indices = Tensor::<B, 1, Int>::from_data(TensorData::new(indices, [n * 4]), &device);
    let weights = Tensor::<B, 3>::from_data(TensorData::new(weights, [n, 4, 1]), &device);
    (weight.select(0, indices).reshape([n, 4, d]) * weights)
        .sum_dim(1)
        .reshape([n, d])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_hit_table_corners_and_weights_sum_to_one() {
        let (idx, w) = interpolation_taps(&[[1, 4, 6]], 5, 2);
        for p in 0..24 {
            let s: f32 = w[p * 4..p * 4 + 4].iter().sum();
            assert!((s - 1.0).abs() < 1e-6);
        }
        // Patch 0 is (0, 0) → table entry 0 with weight 1.
        assert_eq!(idx[0], 0);
        assert!((w[0] - 1.0).abs() < 1e-6);
        // The last patch in block order is (3, 5) → the table's last entry (4, 4) = 24.
        let last = 23 * 4;
        let hit: f32 = (0..4)
            .filter(|&k| idx[last + k] == 24)
            .map(|k| w[last + k])
            .sum();
        assert!((hit - 1.0).abs() < 1e-6, "{:?}", &w[last..]);
    }
}
