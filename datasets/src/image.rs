//! Image I/O (PNG/JPEG, grayscale or RGB) and the preprocessing a vision encoder expects:
//! resize, center crop, rescale, normalize, as HuggingFace image processors do
//! (`transformers/image_processing_utils.py`, `CLIPImageProcessor`). The models crate maps a
//! checkpoint's `preprocessor_config.json` onto [`PreprocessConfig`].

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use serde::{Deserialize, Serialize};

use crate::error::DatasetError;
use crate::files::require_regular_file;

/// The default pixel budget of one image or mask (50 megapixels): a larger one is refused before
/// it is decoded, so memory stays bounded by what a real image needs, not by what a crafted
/// header claims. [`load_image_within`] and [`image_dimensions_within`] take another budget.
pub const DEFAULT_MAX_IMAGE_PIXELS: u64 = 50_000_000;

/// Bytes per pixel of the widest decoded layout (16-bit RGBA), for the decoder's allocation limit.
const MAX_BYTES_PER_PIXEL: u64 = 8;

/// Reads a PNG or JPEG (format guessed from the content, not the extension) within the default
/// pixel budget ([`DEFAULT_MAX_IMAGE_PIXELS`]).
pub fn load_image(path: &Path) -> Result<DynamicImage, DatasetError> {
    load_image_within(path, DEFAULT_MAX_IMAGE_PIXELS)
}

/// Reads a PNG or JPEG of at most `max_pixels` pixels: the file must be a regular file (a FIFO
/// would block), the header's dimensions are checked before anything is decoded, and the decoder
/// runs under an allocation limit. Every image and mask of the crate is read through here.
pub fn load_image_within(path: &Path, max_pixels: u64) -> Result<DynamicImage, DatasetError> {
    let decoder = open_decoder(path, max_pixels)?;
    DynamicImage::from_decoder(decoder).map_err(|e| cannot_decode(path, e))
}

/// The `(width, height)` of an image from its header alone, within the default pixel budget.
pub fn image_dimensions(path: &Path) -> Result<(u32, u32), DatasetError> {
    image_dimensions_within(path, DEFAULT_MAX_IMAGE_PIXELS)
}

/// The `(width, height)` of an image from its header alone; an image above `max_pixels` pixels
/// is an error.
pub fn image_dimensions_within(path: &Path, max_pixels: u64) -> Result<(u32, u32), DatasetError> {
    open_decoder(path, max_pixels).map(|decoder| decoder.dimensions())
}

/// Checks that a `width × height` image or mask has pixels and fits in `max_pixels`; returns its
/// pixel count. `what` names it in the error (e.g. "image `a.png`").
pub fn check_pixel_budget(
    what: &str,
    width: u32,
    height: u32,
    max_pixels: u64,
) -> Result<usize, DatasetError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels == 0 || pixels > max_pixels {
        return Err(DatasetError::ImageSize {
            what: what.to_string(),
            width,
            height,
            max_pixels,
        });
    }
    usize::try_from(pixels).map_err(|_| DatasetError::ImageSize {
        what: what.to_string(),
        width,
        height,
        max_pixels,
    })
}

fn open_decoder(path: &Path, max_pixels: u64) -> Result<impl ImageDecoder, DatasetError> {
    require_regular_file(path, "an image file (PNG or JPEG)")?;
    let mut reader = ImageReader::open(path)
        .map_err(|e| DatasetError::io(path, e))?
        .with_guessed_format()
        .map_err(|e| DatasetError::io(path, e))?;
    let mut limits = Limits::default();
    limits.max_alloc = Some(
        max_pixels
            .saturating_mul(MAX_BYTES_PER_PIXEL)
            .saturating_add(64 << 20),
    );
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| cannot_decode(path, e))?;
    let (width, height) = decoder.dimensions();
    check_pixel_budget(
        &format!("image `{}`", path.display()),
        width,
        height,
        max_pixels,
    )?;
    Ok(decoder)
}

fn cannot_decode(path: &Path, e: image::ImageError) -> DatasetError {
    DatasetError::Image {
        path: path.to_path_buf(),
        message: format!("cannot decode ({e}); fix: use a PNG or JPEG file"),
    }
}

/// Writes a PNG (lossless, so corrupted images keep untouched pixels bit-identical), creating
/// parent directories.
pub fn save_png(image: &DynamicImage, path: &Path) -> Result<(), DatasetError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| DatasetError::io(parent, e))?;
    }
    image
        .save_with_format(path, ImageFormat::Png)
        .map_err(|e| DatasetError::Image {
            path: path.to_path_buf(),
            message: format!("cannot encode PNG ({e})"),
        })
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
    pub fn validate(&self) -> Result<(), DatasetError> {
        let channels = self.n_channels();
        for (field, values) in [
            ("image_mean", &self.image_mean),
            ("image_std", &self.image_std),
        ] {
            if values.len() != 1 && values.len() != channels {
                return Err(DatasetError::InvalidConfig {
                    field,
                    value: format!("{values:?}"),
                    requirement: "one value, or one per output channel",
                });
            }
        }
        if self.image_std.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DatasetError::InvalidConfig {
                field: "image_std",
                value: format!("{:?}", self.image_std),
                requirement: "finite and > 0",
            });
        }
        let zero = matches!(
            self.resize,
            Resize::ShortestEdge { size: 0 } | Resize::Square { size: 0 }
        ) || self.center_crop.is_some_and(|c| c[0] == 0 || c[1] == 0);
        if zero {
            return Err(DatasetError::InvalidConfig {
                field: "resize/center_crop",
                value: "0".into(),
                requirement: "sizes > 0",
            });
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

/// Turns an image into `[C, H, W]` f32 pixel values as `config` says.
pub fn preprocess(
    image: &DynamicImage,
    config: &PreprocessConfig,
) -> Result<PixelValues, DatasetError> {
    config.validate()?;
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
    fn bad_mean_length_names_the_field() {
        let mut config = PreprocessConfig::clip(8);
        config.image_mean = vec![0.1, 0.2];
        let err = preprocess(&DynamicImage::new_luma8(4, 4), &config).unwrap_err();
        assert!(err.to_string().contains("image_mean"), "{err}");
    }
}
