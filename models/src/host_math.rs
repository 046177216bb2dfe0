//! f32 building blocks for kernels that run on host slices ([`crate::host_attention`]): a strided
//! matrix product (matrixmultiply's `sgemm`, the GEMM burn-ndarray itself uses, behind a
//! bounds-checked view), a vectorizable `exp` for softmax arguments and the logistic function
//! built on it, and [`wide_fn`], which compiles a kernel's loops for AVX2 too.

/// An `rows × cols` matrix inside a slice: element `(i, j)` at
/// `offset + i · row_stride + j · col_stride`. A transpose is the same memory with the strides
/// swapped, so products with `Kᵀ` or `Pᵀ` read the tensors in place.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Strided {
    pub rows: usize,
    pub cols: usize,
    pub offset: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

impl Strided {
    /// `rows × cols` starting at `offset`, rows `row_stride` apart, columns contiguous.
    pub fn rows(offset: usize, rows: usize, cols: usize, row_stride: usize) -> Self {
        Self {
            rows,
            cols,
            offset,
            row_stride,
            col_stride: 1,
        }
    }

    pub fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            offset: self.offset,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Panics unless every element lies inside a slice of `len` elements.
    fn check(&self, len: usize, name: &str) {
        if self.rows == 0 || self.cols == 0 {
            return;
        }
        let last =
            self.offset + (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride;
        assert!(
            last < len,
            "{name}: a {}x{} view ending at {last} does not fit in {len} elements",
            self.rows,
            self.cols
        );
    }
}

/// `c ← alpha · a · b + beta · c` on strided views (`beta = 0` ignores what `c` held).
pub(crate) fn gemm(
    alpha: f32,
    (a, av): (&[f32], Strided),
    (b, bv): (&[f32], Strided),
    beta: f32,
    (c, cv): (&mut [f32], Strided),
) {
    assert!(
        av.cols == bv.rows && av.rows == cv.rows && bv.cols == cv.cols,
        "gemm shapes: {}x{} · {}x{} into {}x{}",
        av.rows,
        av.cols,
        bv.rows,
        bv.cols,
        cv.rows,
        cv.cols
    );
    av.check(a.len(), "gemm a");
    bv.check(b.len(), "gemm b");
    cv.check(c.len(), "gemm c");
    if cv.rows == 0 || cv.cols == 0 {
        return;
    }
    let stride = |s: usize| s as isize;
    // SAFETY: every element of the three views lies inside its slice (checked above, strides are
    // non-negative), and `c` is borrowed mutably, so it aliases neither `a` nor `b`.
    unsafe {
        matrixmultiply::sgemm(
            av.rows,
            av.cols,
            bv.cols,
            alpha,
            a.as_ptr().add(av.offset),
            stride(av.row_stride),
            stride(av.col_stride),
            b.as_ptr().add(bv.offset),
            stride(bv.row_stride),
            stride(bv.col_stride),
            beta,
            c.as_mut_ptr().add(cv.offset),
            stride(cv.row_stride),
            stride(cv.col_stride),
        );
    }
}

/// Defines a function whose body is compiled twice, as written (SSE2 on x86-64) and for AVX2,
/// and runs the AVX2 copy where the CPU has it (std caches the check): the slice loops of host
/// kernels then vectorize 8 wide instead of 4. The arithmetic is written out (no fused
/// multiply-add, fixed partial-sum order), so both copies give bit-identical results and runs
/// stay reproducible across machines. Arguments are plain `name: Type` pairs; the helpers the
/// body calls must be `#[inline(always)]` to be compiled into the AVX2 copy.
macro_rules! wide_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2, the one feature `avx2` is compiled for.
                    return unsafe { avx2($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use wide_fn;

/// Below this `exp` underflows f32's normal range; [`exp_softmax`] returns 0 there.
const EXP_MIN: f32 = -87.336_55;

/// `e^x` for softmax arguments `x ≤ 0` (larger `x` is clamped to 0, NaN gives NaN), within
/// 2 ulp of the correctly rounded value, 0 below [`EXP_MIN`] (where the true value is subnormal,
/// under 1.2e-38). Branch-free, so a loop over a slice vectorizes, which libm's scalar `expf`
/// calls (a tenth of the alignment step at 1 k tokens) do not.
///
/// Cody–Waite reduction `x = n ln 2 + r`, `|r| ≤ ln 2 / 2`, and Cephes' degree-6 minimax
/// polynomial for `e^r`; `2^n` is built in the exponent bits.
#[inline(always)]
pub(crate) fn exp_softmax(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2²³: adding it rounds to an integer held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    let clamped = x.clamp(EXP_MIN, 0.0);
    let shifted = clamped * LOG2E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 0.166_666_65;
    let p = p * r + 0.5;
    let e_r = p * r * r + r + 1.0;
    // n ∈ [-126, 0]: its bits in `shifted` are 0x4B40_0000 + n; 2ⁿ's exponent field is n + 127.
    let n_bits = shifted.to_bits().wrapping_sub(0x4B40_0000);
    let two_n = f32::from_bits(n_bits.wrapping_add(127) << 23);
    let y = e_r * two_n;
    if x.is_nan() {
        x
    } else if x < EXP_MIN {
        0.0
    } else {
        y
    }
}

/// The logistic function `1 / (1 + e^(−x))`, branch-free (vectorizes over a slice): `e^(−|x|)`
/// by [`exp_softmax`], so no argument overflows. Within 3 ulp of the rounded value where that
/// is a normal f32 (x > [`EXP_MIN`]), 0 below (the true value is under 1.2e-38), 1 at +∞, NaN
/// for NaN.
#[inline(always)]
pub(crate) fn sigmoid(x: f32) -> f32 {
    let e = exp_softmax(-x.abs());
    let r = 1.0 / (1.0 + e);
    if x >= 0.0 {
        r
    } else {
        e * r
    }
}

/// Largest element (−∞ for an empty slice); eight running maxima so the loop vectorizes.
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a = a.max(x);
        }
    }
    let m = tail.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    acc.iter().fold(m, |m, &x| m.max(x))
}

/// `Σ xs` in eight interleaved partial sums (a fixed order: deterministic, and vectorizable).
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

/// `Σ xs ∘ ys` in eight interleaved partial sums.
#[inline(always)]
pub(crate) fn dot(xs: &[f32], ys: &[f32]) -> f32 {
    assert_eq!(xs.len(), ys.len(), "dot of unequal lengths");
    let mut acc = [0f32; 8];
    let (cx, cy) = (xs.chunks_exact(8), ys.chunks_exact(8));
    let tail: f32 = cx
        .remainder()
        .iter()
        .zip(cy.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (c, d) in cx.zip(cy) {
        for ((a, &x), &y) in acc.iter_mut().zip(c).zip(d) {
            *a += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_softmax_is_within_two_ulp_of_exp_over_its_range() {
        let mut worst = 0f64;
        let n = 200_000;
        for i in 0..=n {
            let x = EXP_MIN * i as f32 / n as f32;
            let exact = (x as f64).exp();
            let rel = ((exp_softmax(x) as f64) - exact).abs() / exact;
            worst = worst.max(rel);
        }
        // 2 ulp of f32 is 2 · 2⁻²³ ≈ 2.4e-7 relative.
        assert!(worst < 2.4e-7, "worst relative error {worst:e}");
        assert_eq!(exp_softmax(0.0), 1.0);
        assert_eq!(exp_softmax(-1e9), 0.0);
        assert_eq!(exp_softmax(f32::NEG_INFINITY), 0.0);
        assert_eq!(
            exp_softmax(1e-3),
            1.0,
            "positive arguments are clamped to 0"
        );
        assert!(exp_softmax(f32::NAN).is_nan());
    }

    #[test]
    fn sigmoid_is_within_three_ulp_where_normal() {
        let mut worst = 0f64;
        let n = 200_000;
        for i in 0..=n {
            let x = EXP_MIN + (40.0 - EXP_MIN) * i as f32 / n as f32;
            let exact = 1.0 / (1.0 + (-(x as f64)).exp());
            let rel = ((sigmoid(x) as f64) - exact).abs() / exact;
            worst = worst.max(rel);
        }
        assert!(worst < 3.6e-7, "worst relative error {worst:e}");
        assert_eq!(sigmoid(0.0), 0.5);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert_eq!(sigmoid(-1e9), 0.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    wide_fn! {
        /// The kernels' building blocks in one `wide_fn`: its AVX2 copy where the CPU has it.
        fn blocks_wide(xs: &[f32], out: &mut [f32]) -> (f32, f32) {
            for (o, &x) in out.iter_mut().zip(xs) {
                *o = exp_softmax(-x.abs()) + sigmoid(x) * x;
            }
            (sum(out), max(out))
        }
    }

    #[test]
    fn wide_copies_give_bit_identical_results() {
        let xs: Vec<f32> = (0..1003).map(|i| (i as f32 * 0.37).sin() * 40.0).collect();
        let mut wide = vec![0.0; xs.len()];
        let (wide_sum, wide_max) = blocks_wide(&xs, &mut wide);
        // One element at a time, opaque to the vectorizer.
        let scalar: Vec<f32> = xs
            .iter()
            .map(|&x| {
                let x = std::hint::black_box(x);
                exp_softmax(-x.abs()) + sigmoid(x) * x
            })
            .collect();
        assert_eq!(wide, scalar);
        assert_eq!(wide_sum.to_bits(), sum(&scalar).to_bits());
        assert_eq!(wide_max.to_bits(), max(&scalar).to_bits());
    }

    #[test]
    fn reductions_match_sequential_sums() {
        let xs: Vec<f32> = (0..37)
            .map(|i| ((i * 7919) % 101) as f32 / 7.0 - 5.0)
            .collect();
        let ys: Vec<f32> = (0..37)
            .map(|i| ((i * 104_729) % 89) as f32 / 11.0)
            .collect();
        let seq_sum: f64 = xs.iter().map(|&x| x as f64).sum();
        let seq_dot: f64 = xs.iter().zip(&ys).map(|(&x, &y)| x as f64 * y as f64).sum();
        assert!((sum(&xs) as f64 - seq_sum).abs() < 1e-4);
        assert!((dot(&xs, &ys) as f64 - seq_dot).abs() < 1e-3);
        assert_eq!(max(&xs), xs.iter().cloned().fold(f32::MIN, f32::max));
        assert_eq!(max(&[]), f32::NEG_INFINITY);
    }

    #[test]
    fn gemm_reads_transposed_views_in_place_and_accumulates() {
        // a: 2x3 row-major; b = aᵀ read from a's memory.
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let av = Strided::rows(0, 2, 3, 3);
        let mut c = [1.0f32; 4];
        let cv = Strided::rows(0, 2, 2, 2);
        gemm(2.0, (&a, av), (&a, av.t()), 1.0, (&mut c, cv));
        // a aᵀ = [[14, 32], [32, 77]]
        assert_eq!(c, [29.0, 65.0, 65.0, 155.0]);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn gemm_refuses_a_view_outside_its_slice() {
        let a = [0f32; 5];
        let mut c = [0f32; 4];
        let av = Strided::rows(0, 2, 3, 3);
        gemm(
            1.0,
            (&a, av),
            (&a, av.t()),
            0.0,
            (&mut c, Strided::rows(0, 2, 2, 2)),
        );
    }
}
