//! Image preprocessing from `preprocessor_config.json`: resize (shortest edge or fixed size),
//! center crop, rescale, normalize (HF `CLIPImageProcessor` / `image_processing_utils`).
//!
//! With [`ImageAspectRatio::Pad`] (original LLaVA `image_aspect_ratio: pad`) the image is first padded
//! to a square with the mean colour, as LLaVA's `expand2square`.
//!
//! Resampling uses the `image` crate's filters (bicubic → Catmull-Rom); PIL's fixed-point bicubic
//! differs by at most about one 8-bit level (see `tests/preprocess.rs` for the bound).

use std::path::Path;

use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use serde::Deserialize;

use crate::config::ImageAspectRatio;
use crate::error::ModelError;

/// `size` / `crop_size` as HF writes them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct SizeSpec {
    pub shortest_edge: Option<u32>,
    pub height: Option<u32>,
    pub width: Option<u32>,
}

/// The fields of `preprocessor_config.json` that CLIP/SigLIP-style processors use.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ImagePreprocessor {
    #[serde(default = "yes")]
    pub do_resize: bool,
    pub size: Option<SizeSpec>,
    /// PIL resample code: 0 nearest, 2 bilinear, 3 bicubic.
    #[serde(default = "bicubic")]
    pub resample: u32,
    #[serde(default)]
    pub do_center_crop: bool,
    pub crop_size: Option<SizeSpec>,
    #[serde(default = "yes")]
    pub do_rescale: bool,
    #[serde(default = "inv255")]
    pub rescale_factor: f64,
    #[serde(default = "yes")]
    pub do_normalize: bool,
    #[serde(default = "clip_mean")]
    pub image_mean: Vec<f64>,
    #[serde(default = "clip_std")]
    pub image_std: Vec<f64>,
    /// Not a `preprocessor_config.json` field: the model's `image_aspect_ratio`
    /// ([`ImagePreprocessor::with_aspect_ratio`]); `Square` (no padding) by default.
    #[serde(skip)]
    pub aspect_ratio: ImageAspectRatio,
}

/// LLaVA's `expand2square` (`llava/mm_utils.py`): a non-square image pasted onto a square of side
/// `max(w, h)` filled with `background`, at offset `(side - w) // 2` or `(side - h) // 2` along the
/// short side and 0 along the long one. Square images are returned as they are.
pub fn expand2square(image: &RgbImage, background: [u8; 3]) -> RgbImage {
    let (w, h) = image.dimensions();
    if w == h {
        return image.clone();
    }
    let side = w.max(h);
    let mut out = RgbImage::from_pixel(side, side, image::Rgb(background));
    let (x, y) = if w > h {
        (0, (side - h) / 2)
    } else {
        ((side - w) / 2, 0)
    };
    image::imageops::replace(&mut out, image, i64::from(x), i64::from(y));
    out
}

fn yes() -> bool {
    true
}
fn bicubic() -> u32 {
    3
}
fn inv255() -> f64 {
    1.0 / 255.0
}
fn clip_mean() -> Vec<f64> {
    vec![0.481_454_66, 0.457_827_5, 0.408_210_73]
}
fn clip_std() -> Vec<f64> {
    vec![0.268_629_54, 0.261_302_58, 0.275_777_11]
}

impl ImagePreprocessor {
    /// Reads `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self, ModelError> {
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.into(),
            source,
        })?;
        let config: Self = serde_json::from_str(&text).map_err(|e| ModelError::Json {
            path: path.into(),
            what: "an image preprocessor config",
            message: e.to_string(),
        })?;
        if config.image_mean.len() != 3 || config.image_std.len() != 3 {
            return Err(ModelError::ConfigField {
                path: path.into(),
                field: "image_mean/image_std".into(),
                message: "need three values (RGB)".into(),
            });
        }
        Ok(config)
    }

    /// The same settings with the model's `image_aspect_ratio` applied before resizing.
    pub fn with_aspect_ratio(mut self, aspect_ratio: ImageAspectRatio) -> Self {
        self.aspect_ratio = aspect_ratio;
        self
    }

    /// LLaVA's padding colour: `tuple(int(x * 255) for x in image_processor.image_mean)`.
    pub fn pad_colour(&self) -> [u8; 3] {
        let channel = |c: usize| {
            let mean = self.image_mean.get(c).copied().unwrap_or(0.0);
            (mean * 255.0).clamp(0.0, 255.0) as u8 // Python's int(): truncation
        };
        [channel(0), channel(1), channel(2)]
    }

    /// Opens and decodes an image file (PNG or JPEG).
    pub fn open(path: &Path) -> Result<DynamicImage, ModelError> {
        image::open(path).map_err(|e| ModelError::Image {
            path: path.into(),
            message: format!("{e}; give a PNG or JPEG file"),
        })
    }

    fn filter(&self) -> FilterType {
        match self.resample {
            0 => FilterType::Nearest,
            2 => FilterType::Triangle,
            _ => FilterType::CatmullRom,
        }
    }

    /// Output size of the resize step (HF `get_resize_output_image_size`).
    fn resized_size(&self, width: u32, height: u32) -> (u32, u32) {
        match self.size {
            Some(SizeSpec {
                shortest_edge: Some(s),
                ..
            }) => {
                let (short, long) = (width.min(height), width.max(height));
                let new_long = (s as u64 * long as u64 / short as u64) as u32;
                if width <= height {
                    (s, new_long)
                } else {
                    (new_long, s)
                }
            }
            Some(SizeSpec {
                height: Some(h),
                width: Some(w),
                ..
            }) => (w, h),
            _ => (width, height),
        }
    }

    /// Pixel values `[3, H, W]`, channel-major, as the HF processor produces them.
    pub fn pixels(&self, image: &DynamicImage) -> (Vec<f32>, usize, usize) {
        let mut rgb: RgbImage = image.to_rgb8();
        if self.aspect_ratio == ImageAspectRatio::Pad {
            rgb = expand2square(&rgb, self.pad_colour());
        }
        if self.do_resize {
            let (w, h) = self.resized_size(rgb.width(), rgb.height());
            if (w, h) != rgb.dimensions() {
                rgb = image::imageops::resize(&rgb, w, h, self.filter());
            }
        }
        if self.do_center_crop {
            if let Some(SizeSpec {
                height: Some(ch),
                width: Some(cw),
                ..
            }) = self.crop_size
            {
                let top = rgb.height().saturating_sub(ch) / 2;
                let left = rgb.width().saturating_sub(cw) / 2;
                rgb = image::imageops::crop_imm(
                    &rgb,
                    left,
                    top,
                    cw.min(rgb.width()),
                    ch.min(rgb.height()),
                )
                .to_image();
            }
        }
        let (w, h) = (rgb.width() as usize, rgb.height() as usize);
        let mut out = vec![0f32; 3 * h * w];
        for (x, y, px) in rgb.enumerate_pixels() {
            for c in 0..3 {
                let mut v = px[c] as f64;
                if self.do_rescale {
                    v *= self.rescale_factor;
                }
                if self.do_normalize {
                    v = (v - self.image_mean[c]) / self.image_std[c];
                }
                out[(c * h + y as usize) * w + x as usize] = v as f32;
            }
        }
        (out, h, w)
    }

    /// A batch `[n_images, 3, H, W]` (all images must come out the same size).
    pub fn batch<B: Backend>(
        &self,
        images: &[DynamicImage],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, ModelError> {
        let mut data = Vec::new();
        let mut size = None;
        for image in images {
            let (px, h, w) = self.pixels(image);
            if *size.get_or_insert((h, w)) != (h, w) {
                return Err(ModelError::Input(
                    "images preprocess to different sizes; set `crop_size` or a fixed `size`"
                        .into(),
                ));
            }
            data.extend(px);
        }
        let (h, w) = size.ok_or_else(|| ModelError::Input("no images given".into()))?;
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), 3, h, w]),
            device,
        ))
    }
}
