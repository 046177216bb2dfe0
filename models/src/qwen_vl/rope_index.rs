//! Multimodal RoPE positions `[3, batch, seq]` (HF `Qwen2VLModel.get_rope_index`).
//!
//! Per row, over the real (unmasked) tokens only: text tokens get `(p, p, p)` with `p` counting
//! on from the previous group; a run of image-pad tokens for an image of merged grid
//! `(t, h, w)` starting at `p` gets `(p + ti, p + hi, p + wi)` in row-major order, and text after
//! it continues at `p + max(h, w)` (HF 5.24: `current_pos += max(h, w) // merge`). Padding
//! positions are 0. `rope_deltas[b] = max position + 1 − real tokens` shifts the positions of
//! tokens generated after the prompt.

use crate::error::ModelError;

/// Positions and deltas for one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RopeIndex {
    /// `[3, batch, seq]`, row-major.
    pub positions: Vec<i64>,
    pub batch: usize,
    pub seq: usize,
    /// `[batch]`.
    pub rope_deltas: Vec<i64>,
}

/// Builds the M-RoPE positions. Images are taken from `image_grid_thw` in row-major order of
/// their token runs across the batch; each run must be exactly `t·h·w / merge²` tokens long.
pub fn rope_index(
    input_ids: &[Vec<i64>],
    attention_mask: &[Vec<bool>],
    image_grid_thw: &[[usize; 3]],
    image_token_id: i64,
    merge: usize,
) -> Result<RopeIndex, ModelError> {
    let batch = input_ids.len();
    let seq = input_ids.first().map_or(0, Vec::len);
    let mut positions = vec![0i64; 3 * batch * seq];
    let mut rope_deltas = Vec::with_capacity(batch);
    let mut grids = image_grid_thw.iter().enumerate();
    for (b, (ids, mask)) in input_ids.iter().zip(attention_mask).enumerate() {
        let real: Vec<usize> = (0..seq).filter(|&s| mask[s]).collect();
        let mut current = 0i64;
        let mut max_pos = -1i64;
        let mut k = 0;
        let mut set = |s: usize, p: [i64; 3], max_pos: &mut i64| {
            for (axis, v) in p.into_iter().enumerate() {
                positions[(axis * batch + b) * seq + s] = v;
                *max_pos = (*max_pos).max(v);
            }
        };
        while k < real.len() {
            if ids[real[k]] != image_token_id {
                set(real[k], [current; 3], &mut max_pos);
                current += 1;
                k += 1;
                continue;
            }
            let run = real[k..]
                .iter()
                .take_while(|&&s| ids[s] == image_token_id)
                .count();
            let (i, &[t, h, w]) = grids.next().ok_or_else(|| {
                ModelError::Input(format!(
                    "input_ids row {b} has more image-token runs than image_grid_thw has images ({})",
                    image_grid_thw.len()
                ))
            })?;
            let (lh, lw) = (h / merge, w / merge);
            if run != t * lh * lw {
                return Err(ModelError::Input(format!(
                    "input_ids row {b}: image {i} (grid {t}×{h}×{w}, merge {merge}) needs {} image tokens in a row, found {run}",
                    t * lh * lw
                )));
            }
            let mut j = k;
            for ti in 0..t {
                for hi in 0..lh {
                    for wi in 0..lw {
                        let p = [
                            current + ti as i64,
                            current + hi as i64,
                            current + wi as i64,
                        ];
                        set(real[j], p, &mut max_pos);
                        j += 1;
                    }
                }
            }
            current += lh.max(lw) as i64;
            k += run;
        }
        rope_deltas.push(max_pos + 1 - real.len() as i64);
    }
    if let Some((i, _)) = grids.next() {
        return Err(ModelError::Input(format!(
            "image_grid_thw has {} images but input_ids has image tokens for only {i}",
            image_grid_thw.len()
        )));
    }
    Ok(RopeIndex {
        positions,
        batch,
        seq,
        rope_deltas,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_after_an_image_continues_from_its_largest_side() {
        // pad, t, t, img×(1·4·6/4 = 6: 2 rows × 3 cols), t
        let ids = vec![vec![0, 5, 6, 9, 9, 9, 9, 9, 9, 7]];
        let mask = vec![std::iter::once(false).chain([true; 9]).collect::<Vec<_>>()];
        let r = rope_index(&ids, &mask, &[[1, 4, 6]], 9, 2).unwrap();
        let axis = |a: usize| r.positions[a * 10..(a + 1) * 10].to_vec();
        assert_eq!(axis(0), vec![0, 0, 1, 2, 2, 2, 2, 2, 2, 5]);
        assert_eq!(axis(1), vec![0, 0, 1, 2, 2, 2, 3, 3, 3, 5]);
        assert_eq!(axis(2), vec![0, 0, 1, 2, 3, 4, 2, 3, 4, 5]);
        assert_eq!(r.rope_deltas, vec![6 - 9]);
        assert!(rope_index(&ids, &mask, &[[1, 4, 4]], 9, 2).is_err());
        assert!(rope_index(&ids, &mask, &[[1, 4, 6], [1, 4, 6]], 9, 2).is_err());
    }
}
