//! A checkpoint's `preprocessor_config.json` (the fields CLIP/SigLIP-style processors use) and
//! its mapping onto the one image preprocessing, [`PreprocessConfig`].

use std::path::{Path, PathBuf};

use burn::tensor::{backend::Backend, Tensor};
use image::DynamicImage;
use serde::Deserialize;

use crate::config::ImageAspectRatio;
use crate::error::ModelError;
use crate::preprocess::{preprocess, ChannelMode, PixelValues, PreprocessConfig, Resample, Resize};

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
    /// Where it was read from, for errors.
    #[serde(skip)]
    pub path: PathBuf,
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
        let mut config: Self = serde_json::from_str(&text).map_err(|e| ModelError::Json {
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
        config.path = path.into();
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

    /// These settings as the preprocessing that runs them (RGB output). Sizes and PIL resample
    /// codes firempo does not implement are errors naming the file and field.
    pub fn config(&self) -> Result<PreprocessConfig, ModelError> {
        let field = |field: &str, message: String| ModelError::ConfigField {
            path: self.path.clone(),
            field: field.into(),
            message,
        };
        let unsupported = |name: &str, what: String| {
            field(
                name,
                format!(
                    "{what} is not supported; use `shortest_edge` or a square `height`/`width`"
                ),
            )
        };
        let resize = match (self.do_resize, self.size) {
            (false, _) | (true, None) => Resize::None,
            (
                true,
                Some(SizeSpec {
                    shortest_edge: Some(size),
                    ..
                }),
            ) => Resize::ShortestEdge { size },
            (
                true,
                Some(SizeSpec {
                    height: Some(height),
                    width: Some(width),
                    ..
                }),
            ) if height == width => Resize::Square { size: height },
            (true, Some(size)) => return Err(unsupported("size", format!("{size:?}"))),
        };
        let center_crop = match (self.do_center_crop, self.crop_size) {
            (false, _) => None,
            (
                true,
                Some(SizeSpec {
                    height: Some(height),
                    width: Some(width),
                    ..
                }),
            ) => Some([height, width]),
            (true, crop) => return Err(unsupported("crop_size", format!("{crop:?}"))),
        };
        let resample = match self.resample {
            0 => Resample::Nearest,
            2 => Resample::Bilinear,
            3 => Resample::Bicubic,
            other => {
                let name = match other {
                    1 => "PIL LANCZOS",
                    4 => "PIL BOX",
                    5 => "PIL HAMMING",
                    _ => "not a PIL filter",
                };
                return Err(field(
                    "resample",
                    format!(
                        "{other} ({name}) is not supported; use 0 (nearest), 2 (bilinear) or 3 \
                         (bicubic, CLIP's)"
                    ),
                ));
            }
        };
        let channel_values = |values: &[f64], identity: f32| -> Vec<f32> {
            if self.do_normalize {
                values.iter().map(|&v| v as f32).collect()
            } else {
                vec![identity]
            }
        };
        Ok(PreprocessConfig {
            resize,
            center_crop,
            rescale_factor: if self.do_rescale {
                self.rescale_factor as f32
            } else {
                1.0
            },
            image_mean: channel_values(&self.image_mean, 0.0),
            image_std: channel_values(&self.image_std, 1.0),
            channels: ChannelMode::Rgb,
            resample,
            pad_to_square: (self.aspect_ratio == ImageAspectRatio::Pad).then(|| self.pad_colour()),
        })
    }

    /// Pixel values `[3, H, W]`, channel-major, as the HF processor produces them.
    pub fn pixels(&self, image: &DynamicImage) -> Result<(Vec<f32>, usize, usize), ModelError> {
        let values = preprocess(image, &self.config()?)?;
        Ok((values.data, values.height, values.width))
    }

    /// A batch `[n_images, 3, H, W]`; images that preprocess to different sizes are an error
    /// (a LLaVA tower takes one size: set `crop_size` or a fixed `size`).
    pub fn batch<B: Backend>(
        &self,
        images: &[DynamicImage],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, ModelError> {
        let config = self.config()?;
        let values = images
            .iter()
            .map(|image| preprocess(image, &config))
            .collect::<Result<Vec<_>, _>>()?;
        PixelValues::stack(&values.iter().collect::<Vec<_>>(), device)
            .map_err(|e| ModelError::Input(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preprocessor(resample: u32) -> ImagePreprocessor {
        let mut p: ImagePreprocessor = serde_json::from_value(serde_json::json!({
            "size": {"shortest_edge": 336},
            "do_center_crop": true,
            "crop_size": {"height": 336, "width": 336},
            "resample": resample,
        }))
        .unwrap();
        p.path = "ckpt/preprocessor_config.json".into();
        p
    }

    #[test]
    fn pil_resample_codes_map_and_unknown_ones_are_refused() {
        for (code, want) in [
            (0, Resample::Nearest),
            (2, Resample::Bilinear),
            (3, Resample::Bicubic),
        ] {
            assert_eq!(preprocessor(code).config().unwrap().resample, want);
        }
        let err = preprocessor(1).config().unwrap_err().to_string();
        assert!(
            err.contains("ckpt/preprocessor_config.json")
                && err.contains("resample")
                && err.contains("1 (PIL LANCZOS)"),
            "{err}"
        );
    }

    #[test]
    fn clip_settings_map_and_pad_takes_the_mean_colour() {
        let config = preprocessor(3).config().unwrap();
        assert_eq!(config.resize, Resize::ShortestEdge { size: 336 });
        assert_eq!(config.center_crop, Some([336, 336]));
        assert_eq!(config.pad_to_square, None);
        let padded = preprocessor(3)
            .with_aspect_ratio(ImageAspectRatio::Pad)
            .config()
            .unwrap();
        // int(x * 255) of CLIP's mean, as LLaVA's expand2square background.
        assert_eq!(padded.pad_to_square, Some([122, 116, 104]));
    }
}
