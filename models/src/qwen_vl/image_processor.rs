//! Qwen-VL image preprocessing from `preprocessor_config.json` (HF `Qwen2VLImageProcessor`,
//! `image_processing_qwen2_vl.py`): `smart_resize` to multiples of `patch_size · merge_size`
//! within `[min_pixels, max_pixels]`, antialiased bicubic resize ([`resize_bicubic_antialias`]),
//! rescale and normalise, then flatten into patches `[n_patches, C · T · p · p]` ordered block by
//! block (each `merge × merge` group of patches contiguous, as the patch merger expects), the
//! frame repeated `temporal_patch_size` times, and `image_grid_thw = [1, H / p, W / p]`.

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::DynamicImage;
use serde::{Deserialize, Serialize};

use super::resample::resize_bicubic_antialias;
use crate::error::ModelError;

/// `size` as transformers 5 writes it (`shortest_edge`/`longest_edge` are pixel counts here),
/// or the older `min_pixels`/`max_pixels` spelling inside `size`.
#[derive(Debug, Clone, Default, Deserialize)]
struct HfSize {
    shortest_edge: Option<usize>,
    longest_edge: Option<usize>,
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
}

#[derive(Debug, Clone, Deserialize)]
struct HfQwenPreprocessor {
    min_pixels: Option<usize>,
    max_pixels: Option<usize>,
    size: Option<HfSize>,
    patch_size: Option<usize>,
    temporal_patch_size: Option<usize>,
    merge_size: Option<usize>,
    image_mean: Option<Vec<f64>>,
    image_std: Option<Vec<f64>>,
    rescale_factor: Option<f64>,
    do_rescale: Option<bool>,
    do_normalize: Option<bool>,
    do_resize: Option<bool>,
}

/// The resolved preprocessing parameters (serialized as they are, e.g. in a firempo model
/// directory's `processor.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QwenImageProcessor {
    pub min_pixels: usize,
    pub max_pixels: usize,
    pub patch_size: usize,
    pub temporal_patch_size: usize,
    pub merge_size: usize,
    pub image_mean: [f64; 3],
    pub image_std: [f64; 3],
    pub rescale_factor: f64,
    pub do_rescale: bool,
    pub do_normalize: bool,
    pub do_resize: bool,
}

/// Preprocessed images: concatenated patches and one `[t, h, w]` grid (in patches) per image.
#[derive(Debug, Clone, PartialEq)]
pub struct QwenImages {
    /// `[n_patches, patch_dim]`, row-major.
    pub pixel_values: Vec<f32>,
    pub patch_dim: usize,
    pub image_grid_thw: Vec<[usize; 3]>,
}

impl QwenImages {
    pub fn n_patches(&self) -> usize {
        self.image_grid_thw.iter().map(|g| g[0] * g[1] * g[2]).sum()
    }

    /// `pixel_values` as a tensor `[n_patches, patch_dim]`.
    pub fn tensor<B: Backend>(&self, device: &B::Device) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(
                self.pixel_values.clone(),
                [self.n_patches(), self.patch_dim],
            ),
            device,
        )
    }
}

impl QwenImageProcessor {
    /// Reads `preprocessor_config.json`; top-level `min_pixels`/`max_pixels` win over `size`, as
    /// in HF's constructor.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        let c: HfQwenPreprocessor = serde_json::from_str(&text).map_err(|e| ModelError::Json {
            path: path.into(),
            what: "a Qwen-VL image processor config",
            message: e.to_string(),
        })?;
        let err = |field: &str, message: String| ModelError::ConfigField {
            path: PathBuf::from(path),
            field: field.into(),
            message,
        };
        let size = c.size.clone().unwrap_or_default();
        let (min_field, min_pixels) = match (c.min_pixels, size.shortest_edge.or(size.min_pixels)) {
            (Some(v), _) => ("min_pixels", v),
            (None, Some(v)) => ("size.shortest_edge", v),
            (None, None) => ("min_pixels", 56 * 56),
        };
        let (max_field, max_pixels) = match (c.max_pixels, size.longest_edge.or(size.max_pixels)) {
            (Some(v), _) => ("max_pixels", v),
            (None, Some(v)) => ("size.longest_edge", v),
            (None, None) => ("max_pixels", 28 * 28 * 1280),
        };
        if max_pixels < min_pixels {
            return Err(err(
                max_field,
                format!("{max_pixels} is below {min_field} = {min_pixels}; raise it or lower {min_field}"),
            ));
        }
        let three = |v: Option<Vec<f64>>, field: &str, default: [f64; 3]| match v {
            None => Ok(default),
            Some(v) => <[f64; 3]>::try_from(v.as_slice())
                .map_err(|_| err(field, format!("need three values (RGB), got {}", v.len()))),
        };
        let processor = Self {
            min_pixels,
            max_pixels,
            patch_size: c.patch_size.unwrap_or(14),
            temporal_patch_size: c.temporal_patch_size.unwrap_or(2),
            merge_size: c.merge_size.unwrap_or(2),
            image_mean: three(
                c.image_mean,
                "image_mean",
                [0.481_454_66, 0.457_827_5, 0.408_210_73],
            )?,
            image_std: three(
                c.image_std,
                "image_std",
                [0.268_629_54, 0.261_302_58, 0.275_777_11],
            )?,
            rescale_factor: c.rescale_factor.unwrap_or(1.0 / 255.0),
            do_rescale: c.do_rescale.unwrap_or(true),
            do_normalize: c.do_normalize.unwrap_or(true),
            do_resize: c.do_resize.unwrap_or(true),
        };
        if processor.patch_size == 0
            || processor.merge_size == 0
            || processor.temporal_patch_size == 0
        {
            return Err(err(
                "patch_size",
                "patch_size, merge_size and temporal_patch_size must be positive".into(),
            ));
        }
        Ok(processor)
    }

    /// Side length every resized dimension is a multiple of.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// HF `smart_resize`: the `(height, width)` an image of this size is resized to. `origin`
    /// names the image in errors.
    pub fn smart_resize(
        &self,
        height: usize,
        width: usize,
        origin: &Path,
    ) -> Result<(usize, usize), ModelError> {
        let factor = self.factor();
        let bad = |message: String| ModelError::Image {
            path: origin.into(),
            message,
        };
        // An image with fewer pixels than one merged patch carries no usable detail and usually
        // means a wrong file; HF 5.24 would silently upscale it (earlier Qwen processors refused
        // any side below `factor`; we refuse by area so thin-but-real images still match HF).
        if height * width < factor * factor {
            return Err(bad(format!(
                "{width}×{height} px holds fewer pixels than one merged patch ({factor}×{factor} px = patch_size · merge_size); give a larger image"
            )));
        }
        let (long, short) = (height.max(width) as f64, height.min(width) as f64);
        if long / short > 200.0 {
            return Err(bad(format!("aspect ratio {:.1} exceeds 200", long / short)));
        }
        let f = factor as f64;
        let (h, w) = (height as f64, width as f64);
        let mut h_bar = (h / f).round_ties_even() * f;
        let mut w_bar = (w / f).round_ties_even() * f;
        if h_bar * w_bar > self.max_pixels as f64 {
            let beta = (h * w / self.max_pixels as f64).sqrt();
            h_bar = f.max((h / beta / f).floor() * f);
            w_bar = f.max((w / beta / f).floor() * f);
        } else if h_bar * w_bar < self.min_pixels as f64 {
            let beta = (self.min_pixels as f64 / (h * w)).sqrt();
            h_bar = (h * beta / f).ceil() * f;
            w_bar = (w * beta / f).ceil() * f;
        }
        Ok((h_bar as usize, w_bar as usize))
    }

    /// The `(height, width)` an image of this size is processed at: [`Self::smart_resize`]'s, or
    /// with `do_resize` false its own (which must then be multiples of [`Self::factor`]).
    pub fn processed_size(
        &self,
        height: usize,
        width: usize,
        origin: &Path,
    ) -> Result<(usize, usize), ModelError> {
        if self.do_resize {
            return self.smart_resize(height, width, origin);
        }
        if !height.is_multiple_of(self.factor()) || !width.is_multiple_of(self.factor()) {
            return Err(ModelError::Image {
                path: origin.into(),
                message: format!(
                    "with do_resize false, {width}×{height} px must be multiples of {}",
                    self.factor()
                ),
            });
        }
        Ok((height, width))
    }

    /// The `image_grid_thw` an image of this size gets, without decoding it (what a prompt needs
    /// to hold the right number of image-pad tokens).
    pub fn grid(
        &self,
        height: usize,
        width: usize,
        origin: &Path,
    ) -> Result<[usize; 3], ModelError> {
        let (h, w) = self.processed_size(height, width, origin)?;
        Ok([1, h / self.patch_size, w / self.patch_size])
    }

    /// Preprocesses images in order; `origins[i]` names image `i` in errors (a path or a label).
    pub fn process(
        &self,
        images: &[DynamicImage],
        origins: &[PathBuf],
    ) -> Result<QwenImages, ModelError> {
        let (p, m, tp) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let patch_dim = 3 * tp * p * p;
        let mut out = QwenImages {
            pixel_values: Vec::new(),
            patch_dim,
            image_grid_thw: Vec::new(),
        };
        for (i, image) in images.iter().enumerate() {
            let origin = origins
                .get(i)
                .cloned()
                .unwrap_or_else(|| PathBuf::from(format!("image #{i}")));
            let mut rgb = image.to_rgb8();
            let (h, w) =
                self.processed_size(rgb.height() as usize, rgb.width() as usize, &origin)?;
            if self.do_resize {
                rgb = resize_bicubic_antialias(&rgb, w as u32, h as u32);
            }
            // [3, h, w] normalised, channel-major.
            let mut chw = vec![0f32; 3 * h * w];
            for (x, y, px) in rgb.enumerate_pixels() {
                for c in 0..3 {
                    let mut v = px[c] as f64;
                    if self.do_rescale {
                        v *= self.rescale_factor;
                    }
                    if self.do_normalize {
                        v = (v - self.image_mean[c]) / self.image_std[c];
                    }
                    chw[(c * h + y as usize) * w + x as usize] = v as f32;
                }
            }
            let (gh, gw) = (h / p, w / p);
            // Patches block-major: (gh/m, gw/m, m, m); features (c, t, py, px).
            for bh in 0..gh / m {
                for bw in 0..gw / m {
                    for mh in 0..m {
                        for mw in 0..m {
                            let (row, col) = (bh * m + mh, bw * m + mw);
                            for c in 0..3 {
                                for _t in 0..tp {
                                    for py in 0..p {
                                        let start = (c * h + row * p + py) * w + col * p;
                                        out.pixel_values.extend_from_slice(&chw[start..start + p]);
                                    }
                                }
                            }
                        }
                    }
                }
            }
            out.image_grid_thw.push([1, gh, gw]);
        }
        Ok(out)
    }

    /// Opens and preprocesses image files (PNG or JPEG).
    pub fn process_files(&self, paths: &[PathBuf]) -> Result<QwenImages, ModelError> {
        let images = paths
            .iter()
            .map(|path| {
                image::open(path).map_err(|e| ModelError::Image {
                    path: path.clone(),
                    message: format!("{e}; give a PNG or JPEG file"),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.process(&images, paths)
    }

    /// Image-pad tokens one image of grid `[t, h, w]` takes in the prompt: `t·h·w / merge²`.
    pub fn n_image_tokens(&self, grid: [usize; 3]) -> usize {
        grid[0] * grid[1] * grid[2] / (self.merge_size * self.merge_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn processor(min_pixels: usize, max_pixels: usize) -> QwenImageProcessor {
        QwenImageProcessor {
            min_pixels,
            max_pixels,
            patch_size: 14,
            temporal_patch_size: 2,
            merge_size: 2,
            image_mean: [0.5; 3],
            image_std: [0.5; 3],
            rescale_factor: 1.0 / 255.0,
            do_rescale: true,
            do_normalize: true,
            do_resize: true,
        }
    }

    #[test]
    fn smart_resize_matches_hf_values() {
        let o = Path::new("x.png");
        // Values from transformers' smart_resize (factor 28).
        let p = processor(56 * 56, 28 * 28 * 1280);
        assert_eq!(p.smart_resize(480, 640, o).unwrap(), (476, 644));
        assert_eq!(p.smart_resize(2000, 3000, o).unwrap(), (812, 1204));
        let p = processor(200 * 28 * 28, 28 * 28 * 1280);
        assert_eq!(p.smart_resize(100, 150, o).unwrap(), (336, 504));
        assert!(p.smart_resize(20, 30, o).is_err());
        assert_eq!(p.smart_resize(20, 300, o).unwrap(), (112, 1540));
    }
}
