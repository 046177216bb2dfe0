//! Host-side layout of the vision sequence: each patch's (row, column) for the 2-D rotary
//! embedding, the per-image attention segments (`cu_seqlens`), and Qwen2.5-VL's window order
//! (transformers `vision_utils.py`: `get_vision_position_ids`, `get_vision_cu_seqlens`,
//! `get_vision_window_index`).
//!
//! Patches arrive block-major: every `merge × merge` group of neighbouring patches is contiguous
//! (a "unit", what the merger turns into one token). Windows reorder whole units.

/// `(row, column)` of every patch, in the processor's block-major order, per image and frame.
pub fn patch_positions(grids: &[[usize; 3]], merge: usize) -> Vec<[usize; 2]> {
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            for bh in 0..h / merge {
                for bw in 0..w / merge {
                    for mh in 0..merge {
                        for mw in 0..merge {
                            out.push([bh * merge + mh, bw * merge + mw]);
                        }
                    }
                }
            }
        }
    }
    out
}

/// Contiguous attention segments `(start, len)` in patches: one per image frame (`cu_seqlens`).
pub fn frame_segments(grids: &[[usize; 3]]) -> Vec<(usize, usize)> {
    let mut start = 0;
    let mut out = Vec::new();
    for &[t, h, w] in grids {
        for _ in 0..t {
            out.push((start, h * w));
            start += h * w;
        }
    }
    out
}

/// Qwen2.5-VL window layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowLayout {
    /// Unit order: position `i` of the windowed sequence holds original unit `window_index[i]`.
    pub window_index: Vec<usize>,
    /// Windows as `(start, len)` in patches of the windowed sequence (empty windows dropped).
    pub segments: Vec<(usize, usize)>,
}

impl WindowLayout {
    /// `window_size` is in pixels; a window spans `window_size / merge / patch` units per side.
    ///
    /// Like HF, a side whose unit count is a multiple of the window still gets one padding window
    /// (`pad = window - n % window`); it holds no units and is dropped.
    pub fn new(grids: &[[usize; 3]], merge: usize, window_size: usize, patch: usize) -> Self {
        let win = (window_size / merge / patch).max(1);
        let unit = merge * merge;
        let mut window_index = Vec::new();
        let mut segments = Vec::new();
        let (mut offset, mut start) = (0, 0);
        for &[t, h, w] in grids {
            let (lh, lw) = (h / merge, w / merge);
            let n_wh = (lh + win - lh % win) / win;
            let n_ww = (lw + win - lw % win) / win;
            for ti in 0..t {
                for wh in 0..n_wh {
                    for ww in 0..n_ww {
                        let mut len = 0;
                        for r in wh * win..((wh + 1) * win).min(lh) {
                            for c in ww * win..((ww + 1) * win).min(lw) {
                                window_index.push(offset + (ti * lh + r) * lw + c);
                                len += 1;
                            }
                        }
                        if len > 0 {
                            segments.push((start, len * unit));
                            start += len * unit;
                        }
                    }
                }
            }
            offset += t * lh * lw;
        }
        Self {
            window_index,
            segments,
        }
    }

    /// Patch order of the windowed sequence: patch `i` is original patch `perm[i]`.
    pub fn patch_permutation(&self, merge: usize) -> Vec<usize> {
        let unit = merge * merge;
        self.window_index
            .iter()
            .flat_map(|&u| (0..unit).map(move |k| u * unit + k))
            .collect()
    }

    /// Inverse of `window_index` (HF's `argsort(window_index)`): restores image order of units.
    pub fn inverse(&self) -> Vec<usize> {
        let mut inv = vec![0; self.window_index.len()];
        for (i, &u) in self.window_index.iter().enumerate() {
            inv[u] = i;
        }
        inv
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_every_unit_once_in_hf_order() {
        // 3×5 units, windows of 2×2 units: windows (rows 0-1 | 2) × (cols 0-1 | 2-3 | 4).
        let layout = WindowLayout::new(&[[1, 6, 10]], 2, 16, 4);
        assert_eq!(&layout.window_index[..4], &[0, 1, 5, 6]);
        assert_eq!(&layout.window_index[4..8], &[2, 3, 7, 8]);
        assert_eq!(&layout.window_index[8..10], &[4, 9]);
        let lens: Vec<usize> = layout.segments.iter().map(|s| s.1 / 4).collect();
        assert_eq!(lens, vec![4, 4, 2, 2, 2, 1]);
        let mut sorted = layout.window_index.clone();
        sorted.sort();
        assert_eq!(sorted, (0..15).collect::<Vec<_>>());
        let inv = layout.inverse();
        assert!((0..15).all(|u| layout.window_index[inv[u]] == u));
        // A side that divides evenly gets HF's empty padding window, which is dropped.
        let even = WindowLayout::new(&[[1, 4, 4]], 2, 16, 4);
        assert_eq!(even.segments, vec![(0, 16)]);
        assert_eq!(patch_positions(&[[1, 2, 4]], 2)[4], [0, 2]);
    }
}
