//! Antialiased bicubic resize of 8-bit RGB images, bit-exact with torchvision's
//! `resize(uint8_tensor, interpolation=BICUBIC, antialias=True)`, which the transformers-5
//! `Qwen2VLImageProcessor` (torchvision backend) uses.
//!
//! torchvision follows Pillow's `ImagingResample` (aten `UpSampleKernel.cpp`,
//! `_compute_index_ranges_int16_weights`): a separable pass per axis, horizontal first, each
//! skipped when that side keeps its size; Keys' cubic with `a = -0.5` stretched by the scale when
//! downsampling; weights normalised per output pixel, then rounded to int16 with the largest
//! precision (≤ 22 bits) that keeps the biggest weight below 2¹⁵; sums rounded by adding
//! `2^(precision - 1)`, shifted back and clamped to 0..=255 after each pass.

use image::RgbImage;

fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Per output index: the first input index and the int16 weights; plus the weights' precision.
fn int_weights(in_size: usize, out_size: usize) -> (Vec<(usize, Vec<i64>)>, u32) {
    let scale = in_size as f64 / out_size as f64;
    let (support, inv_scale) = if scale >= 1.0 {
        (2.0 * scale, 1.0 / scale)
    } else {
        (2.0, 1.0)
    };
    let mut rows = Vec::with_capacity(out_size);
    let mut w_max = 0f64;
    for i in 0..out_size {
        let center = scale * (i as f64 + 0.5);
        // Truncation toward zero, as C's `(int64_t)` cast.
        let x_min = ((center - support + 0.5) as i64).max(0) as usize;
        let x_end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let mut w: Vec<f64> = (x_min..x_end)
            .map(|j| cubic((j as f64 - center + 0.5) * inv_scale))
            .collect();
        let total: f64 = w.iter().sum();
        if total != 0.0 {
            w.iter_mut().for_each(|v| *v /= total);
        }
        w_max = w.iter().copied().fold(w_max, f64::max);
        rows.push((x_min, w));
    }
    let mut precision = 0u32;
    while precision < 22 {
        if (0.5 + w_max * (1u64 << (precision + 1)) as f64) as i64 >= 1 << 15 {
            break;
        }
        precision += 1;
    }
    let unit = (1u64 << precision) as f64;
    let rows = rows
        .into_iter()
        .map(|(x_min, w)| {
            let w = w
                .into_iter()
                .map(|v| {
                    let v = v * unit;
                    if v < 0.0 {
                        (-0.5 + v) as i64
                    } else {
                        (0.5 + v) as i64
                    }
                })
                .collect();
            (x_min, w)
        })
        .collect();
    (rows, precision)
}

/// One pass along `axis` (0 = width, 1 = height) of an interleaved RGB buffer `[h][w][3]`.
fn pass(src: &[u8], (w, h): (usize, usize), out_len: usize, axis: usize) -> Vec<u8> {
    let in_len = if axis == 0 { w } else { h };
    let (rows, precision) = int_weights(in_len, out_len);
    let (ow, oh) = if axis == 0 {
        (out_len, h)
    } else {
        (w, out_len)
    };
    let mut out = vec![0u8; ow * oh * 3];
    let round = 1i64 << precision.saturating_sub(1);
    for y in 0..oh {
        for x in 0..ow {
            let (x_min, weights) = &rows[if axis == 0 { x } else { y }];
            for c in 0..3 {
                let mut acc = round;
                for (k, wt) in weights.iter().enumerate() {
                    let j = *x_min + k;
                    let (sx, sy) = if axis == 0 { (j, y) } else { (x, j) };
                    acc += wt * src[(sy * w + sx) * 3 + c] as i64;
                }
                out[(y * ow + x) * 3 + c] = (acc >> precision).clamp(0, 255) as u8;
            }
        }
    }
    out
}

/// Resizes `image` to `width × height` as torchvision's antialiased bicubic does on uint8.
pub fn resize_bicubic_antialias(image: &RgbImage, width: u32, height: u32) -> RgbImage {
    let (mut w, mut h) = (image.width() as usize, image.height() as usize);
    let mut buf = image.as_raw().clone();
    if width as usize != w {
        buf = pass(&buf, (w, h), width as usize, 0);
        w = width as usize;
    }
    if height as usize != h {
        buf = pass(&buf, (w, h), height as usize, 1);
        h = height as usize;
    }
    RgbImage::from_raw(w as u32, h as u32, buf).expect("buffer sized w·h·3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_and_identity_keeps_pixels() {
        let (rows, precision) = int_weights(37, 24);
        for (_, w) in &rows {
            let sum: i64 = w.iter().sum();
            assert!((sum - (1 << precision)).abs() <= 2, "{sum}");
        }
        let img = RgbImage::from_fn(5, 4, |x, y| image::Rgb([x as u8 * 40, y as u8 * 60, 7]));
        assert_eq!(resize_bicubic_antialias(&img, 5, 4), img);
        // Constant images stay constant under any scale.
        let flat = RgbImage::from_pixel(9, 7, image::Rgb([200, 3, 99]));
        let out = resize_bicubic_antialias(&flat, 4, 13);
        assert!(out.pixels().all(|p| p.0 == [200, 3, 99]));
    }
}
