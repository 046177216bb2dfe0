//! Lesion-targeted corruption (METHOD.md, "Lesion-targeted corruption"): zero-mean Gaussian noise,
//! σ = 45 on the 0–255 scale, per channel, inside the lesion mask only, clipped; every pixel outside
//! the mask stays bit-identical. Fallbacks are recorded: no mask source (no concept) → whole-image
//! noise at σ 12 (the authors' script's default; configurable); a mask source whose mask is empty →
//! global σ = 12. The paper's ablations (image-level noise,
//! crop, black-out) are modes of the same function.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GenericImage, GenericImageView, Rgb, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::DatasetError;
use crate::image::{load_image, save_png};
use crate::mask::Mask;
use crate::rng::SeededRng;

/// σ of the lesion noise on the 0–255 scale (paper).
pub const LESION_SIGMA: f32 = 45.0;
/// σ of the global fallback when a mask source yields an empty mask (paper).
pub const FALLBACK_SIGMA: f32 = 12.0;
/// σ of the whole-image noise for a record without a mask source (no concept): 12, the default of
/// the authors' corruption script (`shayan80emzed/FiRe-MPO`), not the lesion σ 45.
pub const NO_CONCEPT_SIGMA: f32 = 12.0;

/// Which corruption to apply: the paper's method or one of its ablations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptionMode {
    /// Noise inside the lesion mask, with the recorded fallbacks (the method).
    #[default]
    Lesion,
    /// Ablation: σ-45 noise on the whole image, whatever the mask.
    ImageNoise,
    /// Ablation: keep a random window of `crop_keep` of the area, resized back to full size
    /// (mDPO's crop corruption).
    Crop,
    /// Ablation: set the mask region to black (the whole image when there is no mask).
    BlackOut,
}

/// The corruption actually applied to a record, written into its preference pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CorruptionPath {
    /// σ-45 noise inside a non-empty lesion mask.
    LesionMask,
    /// No mask source: whole-image noise at `no_concept_sigma` (σ 12 by default).
    WholeImageFallback,
    /// A mask source whose mask is empty: σ-12 noise on the whole image.
    GlobalSigma12Fallback,
    /// Ablation: σ-45 noise on the whole image.
    AblationImageNoise,
    /// Ablation: random crop resized back.
    AblationCrop,
    /// Ablation: black-out of the mask (or the whole image).
    AblationBlackOut,
}

/// Corruption settings; the defaults are the paper's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorruptionConfig {
    /// Method or ablation.
    pub mode: CorruptionMode,
    /// Noise σ inside the mask (and for whole-image noise), 0–255 scale.
    pub lesion_sigma: f32,
    /// Noise σ for the empty-mask fallback, 0–255 scale.
    pub fallback_sigma: f32,
    /// Noise σ on the whole image for a record without a mask source (no concept), 0–255 scale.
    pub no_concept_sigma: f32,
    /// Fraction of the area kept by the crop ablation, in (0, 1].
    pub crop_keep: f32,
    /// Run seed; each record's noise comes from `(seed, record key)`.
    pub seed: u64,
}

impl Default for CorruptionConfig {
    fn default() -> Self {
        Self {
            mode: CorruptionMode::Lesion,
            lesion_sigma: LESION_SIGMA,
            fallback_sigma: FALLBACK_SIGMA,
            no_concept_sigma: NO_CONCEPT_SIGMA,
            crop_keep: 0.5,
            seed: 0,
        }
    }
}

impl CorruptionConfig {
    /// Checks the values, naming the bad field.
    pub fn validate(&self) -> Result<(), DatasetError> {
        for (field, value) in [
            ("lesion_sigma", self.lesion_sigma),
            ("fallback_sigma", self.fallback_sigma),
            ("no_concept_sigma", self.no_concept_sigma),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(DatasetError::InvalidConfig {
                    field,
                    value: value.to_string(),
                    requirement: "finite and >= 0",
                });
            }
        }
        if !(self.crop_keep > 0.0 && self.crop_keep <= 1.0) {
            return Err(DatasetError::InvalidConfig {
                field: "crop_keep",
                value: self.crop_keep.to_string(),
                requirement: "in (0, 1]",
            });
        }
        Ok(())
    }
}

/// A corrupted image and the path that produced it.
#[derive(Debug, Clone)]
pub struct Corrupted {
    /// The corrupted image, same size and colour type as the input (8-bit).
    pub image: DynamicImage,
    /// What was done.
    pub path: CorruptionPath,
}

/// Corrupts `image` as `config` says. `mask` is `None` when the record has no mask source.
///
/// The noise for one record depends only on `(config.seed, key)`, so reruns are identical.
/// 16-bit and float images are converted to 8-bit RGB first; an alpha channel is never noised.
pub fn corrupt(
    image: &DynamicImage,
    mask: Option<&Mask>,
    config: &CorruptionConfig,
    key: &str,
) -> Result<Corrupted, DatasetError> {
    config.validate()?;
    if let Some(mask) = mask {
        if (mask.width(), mask.height()) != (image.width(), image.height()) {
            return Err(DatasetError::Image {
                path: key.into(),
                message: format!(
                    "mask is {}x{} but the image is {}x{}; fix: load the mask at the image size",
                    mask.width(),
                    mask.height(),
                    image.width(),
                    image.height()
                ),
            });
        }
    }
    let mut rng = SeededRng::for_key(config.seed, key);
    let mut out = to_8bit(image);
    let (w, h) = (out.width(), out.height());
    let whole = Mask::from_fn(w, h, |_, _| true);
    let path = match config.mode {
        CorruptionMode::Lesion => match mask {
            None => {
                add_noise(&mut out, &whole, config.no_concept_sigma, &mut rng);
                CorruptionPath::WholeImageFallback
            }
            Some(m) if m.is_empty() => {
                add_noise(&mut out, &whole, config.fallback_sigma, &mut rng);
                CorruptionPath::GlobalSigma12Fallback
            }
            Some(m) => {
                add_noise(&mut out, m, config.lesion_sigma, &mut rng);
                CorruptionPath::LesionMask
            }
        },
        CorruptionMode::ImageNoise => {
            add_noise(&mut out, &whole, config.lesion_sigma, &mut rng);
            CorruptionPath::AblationImageNoise
        }
        CorruptionMode::Crop => {
            let side = config.crop_keep.sqrt();
            let cw = ((w as f32 * side).round() as u32).clamp(1, w);
            let ch = ((h as f32 * side).round() as u32).clamp(1, h);
            let x = rng.below((w - cw + 1) as usize) as u32;
            let y = rng.below((h - ch + 1) as usize) as u32;
            out = out
                .crop_imm(x, y, cw, ch)
                .resize_exact(w, h, FilterType::Triangle);
            CorruptionPath::AblationCrop
        }
        CorruptionMode::BlackOut => {
            let region = match mask {
                Some(m) if !m.is_empty() => m,
                _ => &whole,
            };
            black_out(&mut out, region);
            CorruptionPath::AblationBlackOut
        }
    };
    Ok(Corrupted { image: out, path })
}

fn to_8bit(image: &DynamicImage) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_) => image.clone(),
        other => DynamicImage::ImageRgb8(other.to_rgb8()),
    }
}

/// Adds `round(σ·z)` to each colour channel of each pixel inside `mask`, clipped to 0–255.
/// Pixels are visited row-major, channels in order, so the draw order is fixed.
fn add_noise(image: &mut DynamicImage, mask: &Mask, sigma: f32, rng: &mut SeededRng) {
    let (w, h) = (image.width(), image.height());
    let colour = match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) => 1,
        _ => 3,
    };
    for y in 0..h {
        for x in 0..w {
            if !mask.contains(x, y) {
                continue;
            }
            let mut pixel = image.get_pixel(x, y);
            // `get_pixel` gives RGBA; for grey images the three colour channels are equal.
            for c in 0..colour {
                let noisy = pixel.0[c] as f64 + sigma as f64 * rng.normal();
                pixel.0[c] = noisy.round().clamp(0.0, 255.0) as u8;
            }
            if colour == 1 {
                pixel.0[1] = pixel.0[0];
                pixel.0[2] = pixel.0[0];
            }
            image.put_pixel(x, y, pixel);
        }
    }
}

fn black_out(image: &mut DynamicImage, mask: &Mask) {
    for y in 0..image.height() {
        for x in 0..image.width() {
            if mask.contains(x, y) {
                let mut pixel = image.get_pixel(x, y);
                pixel.0[..3].fill(0);
                image.put_pixel(x, y, pixel);
            }
        }
    }
}

/// A side-by-side preview: original | mask overlay (red, half transparent) | corrupted.
pub fn preview(original: &DynamicImage, mask: Option<&Mask>, corrupted: &DynamicImage) -> RgbImage {
    let (w, h) = (original.width(), original.height());
    let mut canvas = RgbImage::new(w * 3, h);
    let left = original.to_rgb8();
    let right = corrupted.to_rgb8();
    for y in 0..h {
        for x in 0..w {
            let p = *left.get_pixel(x, y);
            canvas.put_pixel(x, y, p);
            let overlay = match mask {
                Some(m) if m.contains(x, y) => {
                    Rgb([(p[0] as u16 / 2 + 128) as u8, p[1] / 2, p[2] / 2])
                }
                _ => p,
            };
            canvas.put_pixel(w + x, y, overlay);
            canvas.put_pixel(2 * w + x, y, *right.get_pixel(x, y));
        }
    }
    canvas
}

/// Reads an image, corrupts it, writes the corrupted PNG and (if asked) a preview PNG.
///
/// Returns the path taken. `mask` is `None` when the record has no mask source.
pub fn write_corruption(
    image_path: &Path,
    mask: Option<&Mask>,
    config: &CorruptionConfig,
    key: &str,
    corrupted_out: &Path,
    preview_out: Option<&Path>,
) -> Result<CorruptionPath, DatasetError> {
    let original = load_image(image_path)?;
    let corrupted = corrupt(&original, mask, config, key)?;
    save_png(&corrupted.image, corrupted_out)?;
    if let Some(preview_out) = preview_out {
        let side_by_side = preview(&original, mask, &corrupted.image);
        save_png(&DynamicImage::ImageRgb8(side_by_side), preview_out)?;
    }
    Ok(corrupted.path)
}
