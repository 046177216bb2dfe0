//! The one image preprocessing of every model input: optional padding to a square (LLaVA's
//! `expand2square`), resize, center crop, rescale, normalize, as HuggingFace image processors do
//! (`transformers/image_processing_utils.py`, `CLIPImageProcessor`). A checkpoint's
//! `preprocessor_config.json` maps onto [`PreprocessConfig`] through
//! [`crate::ImagePreprocessor::config`]; firempo model directories store the config itself.
//!
//! Resampling uses the `image` crate's filters (bicubic → Catmull-Rom); PIL's fixed-point bicubic
//! differs by at most about one 8-bit level (checked against CLIPImageProcessor's pixel values in
//! `tests/chat.rs`).

use burn::tensor::{backend::Backend, Tensor, TensorData};
use image::imageops::FilterType;
use image::{DynamicImage, RgbImage};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

fn invalid(field: &str, value: String, requirement: &str) -> ModelError {
    ModelError::InvalidConfig {
        field: field.into(),
        message: format!("{value}: must be {requirement}"),
    }
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

/// How to bring an image to the encoder's input size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Resize {
    /// Keep the size.
    None,
    /// Scale so the shorter side is `size`, keeping the aspect ratio (CLIP).
    ShortestEdge { size: u32 },
    /// Scale to `size × size`, ignoring the aspect ratio (SigLIP, LLaVA-Med pad-free).
    Square { size: u32 },
}

/// Channels fed to the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelMode {
    /// Three channels (grayscale images are replicated).
    Rgb,
    /// One luminance channel.
    Grayscale,
}

/// Resampling filter for resizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resample {
    /// Nearest neighbour.
    Nearest,
    /// Bilinear.
    Bilinear,
    /// Bicubic (Catmull–Rom), HF's default for CLIP.
    Bicubic,
}

impl Resample {
    fn filter(self) -> FilterType {
        match self {
            Resample::Nearest => FilterType::Nearest,
            Resample::Bilinear => FilterType::Triangle,
            Resample::Bicubic => FilterType::CatmullRom,
        }
    }
}

/// Image preprocessing: `resize → center crop → × rescale_factor → (x − mean) / std`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Resize step.
    pub resize: Resize,
    /// Center crop to `[height, width]` after resizing (HF `crop_size`), if any.
    pub center_crop: Option<[u32; 2]>,
    /// Multiplies 0–255 values (HF `rescale_factor`, usually 1/255).
    pub rescale_factor: f32,
    /// Per-channel mean, one value per output channel (or one for all).
    pub image_mean: Vec<f32>,
    /// Per-channel standard deviation, one value per output channel (or one for all).
    pub image_std: Vec<f32>,
    /// Output channels.
    pub channels: ChannelMode,
    /// Resampling filter.
    pub resample: Resample,
    /// Pad a non-square image to a square of this colour first (original LLaVA's
    /// `image_aspect_ratio: pad`, LLaVA's `expand2square`); `None`: no padding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pad_to_square: Option<[u8; 3]>,
}

impl PreprocessConfig {
    /// CLIP ViT preprocessing (`openai/clip-vit-large-patch14` `preprocessor_config.json`).
    pub fn clip(size: u32) -> Self {
        Self {
            resize: Resize::ShortestEdge { size },
            center_crop: Some([size, size]),
            rescale_factor: 1.0 / 255.0,
            image_mean: vec![0.481_454_66, 0.457_827_5, 0.408_210_73],
            image_std: vec![0.268_629_54, 0.261_302_6, 0.275_777_1],
            channels: ChannelMode::Rgb,
            resample: Resample::Bicubic,
            pad_to_square: None,
        }
    }

    /// Single-channel preprocessing to `size × size` with values in `[-1, 1]` (the synthetic demo).
    pub fn grayscale(size: u32) -> Self {
        Self {
            resize: Resize::Square { size },
            center_crop: None,
            rescale_factor: 1.0 / 255.0,
            image_mean: vec![0.5],
            image_std: vec![0.5],
            channels: ChannelMode::Grayscale,
            resample: Resample::Bilinear,
            pad_to_square: None,
        }
    }

    /// Number of output channels.
    pub fn n_channels(&self) -> usize {
        match self.channels {
            ChannelMode::Rgb => 3,
            ChannelMode::Grayscale => 1,
        }
    }

    /// Output `[height, width]` for an input of `[height, width]`.
    pub fn output_size(&self, height: u32, width: u32) -> [u32; 2] {
        if let Some(crop) = self.center_crop {
            return crop;
        }
        self.resized_size(height, width)
    }

    fn resized_size(&self, height: u32, width: u32) -> [u32; 2] {
        match self.resize {
            Resize::None => [height, width],
            Resize::Square { size } => [size, size],
            Resize::ShortestEdge { size } => {
                // HF `get_resize_output_image_size`: (size, int(size * long / short)).
                let (short, long) = (height.min(width), height.max(width));
                let new_long = (size as u64 * long as u64 / short.max(1) as u64) as u32;
                if height <= width {
                    [size, new_long]
                } else {
                    [new_long, size]
                }
            }
        }
    }

    /// Checks the config, naming the bad field.
    pub fn validate(&self) -> Result<(), ModelError> {
        let channels = self.n_channels();
        for (field, values) in [
            ("image_mean", &self.image_mean),
            ("image_std", &self.image_std),
        ] {
            if values.len() != 1 && values.len() != channels {
                return Err(invalid(
                    field,
                    format!("{values:?}"),
                    "one value, or one per output channel",
                ));
            }
        }
        if self.image_std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(invalid(
                "image_std",
                format!("{:?}", self.image_std),
                "finite and > 0",
            ));
        }
        let zero = matches!(
            self.resize,
            Resize::ShortestEdge { size: 0 } | Resize::Square { size: 0 }
        ) || self.center_crop.is_some_and(|c| c[0] == 0 || c[1] == 0);
        if zero {
            return Err(invalid("resize/center_crop", "0".into(), "sizes > 0"));
        }
        Ok(())
    }
}

/// Preprocessed pixels, channel-major: `data[c * height * width + y * width + x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct PixelValues {
    /// Channels `C`.
    pub channels: usize,
    /// Height `H`.
    pub height: usize,
    /// Width `W`.
    pub width: usize,
    /// `C·H·W` values.
    pub data: Vec<f32>,
}

impl PixelValues {
    /// A batch `[n_images, C, H, W]`; images of different sizes are an error (a LLaVA tower
    /// takes one size).
    pub fn stack<B: Backend>(
        images: &[&PixelValues],
        device: &B::Device,
    ) -> Result<Tensor<B, 4>, ModelError> {
        let first = images
            .first()
            .ok_or_else(|| ModelError::Input("no images given".into()))?;
        let shape = [first.channels, first.height, first.width];
        let mut data = Vec::with_capacity(images.len() * first.data.len());
        for (i, image) in images.iter().enumerate() {
            let [c, h, w] = [image.channels, image.height, image.width];
            if [c, h, w] != shape {
                return Err(ModelError::Input(format!(
                    "image {i} preprocesses to {c}×{h}×{w} but image 0 to {}×{}×{}; the \
                     preprocessing must give one size (set `crop_size` or a fixed `size`)",
                    shape[0], shape[1], shape[2]
                )));
            }
            data.extend_from_slice(&image.data);
        }
        let [c, h, w] = shape;
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), c, h, w]),
            device,
        ))
    }
}

/// Turns an image into `[C, H, W]` f32 pixel values as `config` says.
pub fn preprocess(
    image: &DynamicImage,
    config: &PreprocessConfig,
) -> Result<PixelValues, ModelError> {
    config.validate()?;
    let padded;
    let image = match config.pad_to_square {
        Some(colour) if image.width() != image.height() => {
            padded = DynamicImage::ImageRgb8(expand2square(&image.to_rgb8(), colour));
            &padded
        }
        _ => image,
    };
    let [rh, rw] = config.resized_size(image.height(), image.width());
    let mut image = if [rh, rw] == [image.height(), image.width()] {
        image.clone()
    } else {
        image.resize_exact(rw, rh, config.resample.filter())
    };
    if let Some([ch, cw]) = config.center_crop {
        // Pad-free HF center crop: top = (H − h) / 2, left = (W − w) / 2; smaller images are padded with 0.
        let top = rh.saturating_sub(ch) / 2;
        let left = rw.saturating_sub(cw) / 2;
        let cropped = image.crop_imm(left, top, cw.min(rw), ch.min(rh));
        image = if cropped.width() == cw && cropped.height() == ch {
            cropped
        } else {
            let mut canvas = DynamicImage::new(cw, ch, cropped.color());
            let (ox, oy) = ((cw - cropped.width()) / 2, (ch - cropped.height()) / 2);
            image::imageops::overlay(&mut canvas, &cropped, ox.into(), oy.into());
            canvas
        };
    }
    let (width, height) = (image.width() as usize, image.height() as usize);
    let planes: Vec<Vec<u8>> = match config.channels {
        ChannelMode::Grayscale => vec![image.to_luma8().into_raw()],
        ChannelMode::Rgb => {
            let rgb = image.to_rgb8().into_raw();
            (0..3)
                .map(|c| rgb.iter().skip(c).step_by(3).copied().collect())
                .collect()
        }
    };
    let mut data = Vec::with_capacity(planes.len() * width * height);
    for (c, plane) in planes.iter().enumerate() {
        let mean = pick(&config.image_mean, c);
        let std = pick(&config.image_std, c);
        data.extend(
            plane
                .iter()
                .map(|&v| (v as f32 * config.rescale_factor - mean) / std),
        );
    }
    Ok(PixelValues {
        channels: planes.len(),
        height,
        width,
        data,
    })
}

fn pick(values: &[f32], channel: usize) -> f32 {
    if values.len() == 1 {
        values[0]
    } else {
        values[channel]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma, Rgb, RgbImage};

    #[test]
    fn grayscale_values_are_rescaled_and_normalized() {
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(4, 2, |x, _| Luma([x as u8 * 85])));
        let config = PreprocessConfig {
            resize: Resize::None,
            ..PreprocessConfig::grayscale(4)
        };
        let px = preprocess(&img, &config).unwrap();
        assert_eq!((px.channels, px.height, px.width), (1, 2, 4));
        let expected = [-1.0, -1.0 / 3.0, 1.0 / 3.0, 1.0];
        for (i, e) in expected.iter().enumerate() {
            assert!((px.data[i] - e).abs() < 1e-6, "{} vs {e}", px.data[i]);
            assert!((px.data[4 + i] - e).abs() < 1e-6);
        }
    }

    #[test]
    fn rgb_is_channel_major_with_per_channel_stats() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([255, 0, 51])));
        let config = PreprocessConfig {
            resize: Resize::None,
            center_crop: None,
            rescale_factor: 1.0 / 255.0,
            image_mean: vec![0.5, 0.0, 0.2],
            image_std: vec![0.5, 1.0, 0.1],
            channels: ChannelMode::Rgb,
            resample: Resample::Nearest,
            pad_to_square: None,
        };
        let px = preprocess(&img, &config).unwrap();
        assert_eq!(px.data.len(), 12);
        assert!(px.data[0..4].iter().all(|v| (v - 1.0).abs() < 1e-6));
        assert!(px.data[4..8].iter().all(|v| v.abs() < 1e-6));
        assert!(px.data[8..12].iter().all(|v| v.abs() < 1e-5));
    }

    #[test]
    fn shortest_edge_then_center_crop_gives_crop_size() {
        let config = PreprocessConfig::clip(8);
        assert_eq!(config.resized_size(10, 20), [8, 16]);
        assert_eq!(config.resized_size(30, 15), [16, 8]);
        let img = DynamicImage::ImageLuma8(GrayImage::from_fn(20, 10, |x, _| Luma([x as u8])));
        let px = preprocess(&img, &config).unwrap();
        assert_eq!((px.channels, px.height, px.width), (3, 8, 8));
    }

    #[test]
    fn padding_to_a_square_centres_the_image_on_the_colour() {
        // 4 wide, 2 high, white: padded to 4×4 with rows 0 and 3 of the background colour.
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(4, 2, Rgb([255, 255, 255])));
        let config = PreprocessConfig {
            resize: Resize::None,
            center_crop: None,
            rescale_factor: 1.0,
            image_mean: vec![0.0],
            image_std: vec![1.0],
            channels: ChannelMode::Rgb,
            resample: Resample::Nearest,
            pad_to_square: Some([122, 116, 104]),
        };
        let px = preprocess(&img, &config).unwrap();
        assert_eq!((px.channels, px.height, px.width), (3, 4, 4));
        let red: Vec<f32> = px.data[..16].to_vec();
        assert_eq!(&red[..4], &[122.0; 4]);
        assert_eq!(&red[4..12], &[255.0; 8]);
        assert_eq!(&red[12..], &[122.0; 4]);
        assert_eq!(px.data[16], 116.0);
        // Square images are not padded.
        let square = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([9, 9, 9])));
        assert!(preprocess(&square, &config)
            .unwrap()
            .data
            .iter()
            .all(|&v| v == 9.0));
    }

    #[test]
    fn bad_mean_length_names_the_field() {
        let mut config = PreprocessConfig::clip(8);
        config.image_mean = vec![0.1, 0.2];
        let err = preprocess(&DynamicImage::new_luma8(4, 4), &config).unwrap_err();
        assert!(err.to_string().contains("image_mean"), "{err}");
    }
}
