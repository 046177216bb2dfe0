//! Image file I/O: PNG/JPEG decoding within a pixel budget and PNG writing. Turning images into a
//! model's pixel values is the models crate's job (`firempo_models::preprocess`).

use std::path::Path;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

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
