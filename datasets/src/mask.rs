//! Binary lesion masks: from a PNG (any non-zero pixel is inside), from boxes (SLAKE
//! `detection.json`), or drawn by the synthetic generator.

use std::path::Path;

use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, Luma};

use crate::error::DatasetError;
use crate::image::{check_pixel_budget, load_image, save_png, DEFAULT_MAX_IMAGE_PIXELS};
use crate::records::{BoxRegion, MaskSource};

/// A binary mask over a `width × height` image, row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mask {
    width: u32,
    height: u32,
    inside: Vec<bool>,
}

impl Mask {
    /// An all-outside mask (the caller has sized it: an image it decoded, or the generator's).
    pub fn empty(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            inside: vec![false; width as usize * height as usize],
        }
    }

    /// A mask from a predicate on pixel coordinates (sized by the caller, as [`Mask::empty`]).
    pub fn from_fn(width: u32, height: u32, mut f: impl FnMut(u32, u32) -> bool) -> Self {
        let mut inside = Vec::with_capacity(width as usize * height as usize);
        for y in 0..height {
            for x in 0..width {
                inside.push(f(x, y));
            }
        }
        Self {
            width,
            height,
            inside,
        }
    }

    /// Pixels of a grayscale image that are non-zero.
    pub fn from_luma(image: &GrayImage) -> Self {
        Self::from_fn(image.width(), image.height(), |x, y| {
            image.get_pixel(x, y)[0] != 0
        })
    }

    /// Reads a PNG mask and resizes it (nearest neighbour) to `width × height` if needed; a
    /// target above the pixel budget ([`DEFAULT_MAX_IMAGE_PIXELS`]) is refused before anything
    /// is read.
    pub fn from_png(path: &Path, width: u32, height: u32) -> Result<Self, DatasetError> {
        check_pixel_budget(
            &format!("mask `{}` resized to its image", path.display()),
            width,
            height,
            DEFAULT_MAX_IMAGE_PIXELS,
        )?;
        let image = load_image(path)?;
        let image = if (image.width(), image.height()) == (width, height) {
            image
        } else {
            image.resize_exact(width, height, FilterType::Nearest)
        };
        // Any non-zero channel counts (colour-coded SLAKE masks use different colours per organ).
        let rgba = image.to_rgba8();
        Ok(Self::from_fn(width, height, |x, y| {
            let p = rgba.get_pixel(x, y).0;
            p[0] != 0 || p[1] != 0 || p[2] != 0
        }))
    }

    /// The union of `boxes`, clipped to the image.
    pub fn from_boxes(boxes: &[BoxRegion], width: u32, height: u32) -> Self {
        Self::from_fn(width, height, |x, y| {
            let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
            boxes
                .iter()
                .any(|b| px >= b.x && px < b.x + b.width && py >= b.y && py < b.y + b.height)
        })
    }

    /// Loads the mask a record's [`MaskSource`] describes, at the image's size; a size above the
    /// pixel budget ([`DEFAULT_MAX_IMAGE_PIXELS`]) is refused before anything is allocated.
    pub fn load(
        source: &MaskSource,
        root: &Path,
        width: u32,
        height: u32,
    ) -> Result<Self, DatasetError> {
        match source {
            MaskSource::Png { path } => Self::from_png(&root.join(path), width, height),
            MaskSource::Boxes { boxes } => {
                check_pixel_budget("boxes mask", width, height, DEFAULT_MAX_IMAGE_PIXELS)?;
                Ok(Self::from_boxes(boxes, width, height))
            }
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Whether pixel `(x, y)` is inside.
    pub fn contains(&self, x: u32, y: u32) -> bool {
        self.inside[self.index(x, y)]
    }

    /// Marks pixel `(x, y)`.
    pub fn set(&mut self, x: u32, y: u32, inside: bool) {
        let index = self.index(x, y);
        self.inside[index] = inside;
    }

    /// Row-major index of `(x, y)`, in `usize` (a `u32` product wraps above 65536²).
    fn index(&self, x: u32, y: u32) -> usize {
        y as usize * self.width as usize + x as usize
    }

    /// Number of inside pixels.
    pub fn area(&self) -> usize {
        self.inside.iter().filter(|&&v| v).count()
    }

    /// Whether no pixel is inside.
    pub fn is_empty(&self) -> bool {
        !self.inside.iter().any(|&v| v)
    }

    /// Adds the pixels of `other` (same size).
    pub fn union_with(&mut self, other: &Mask) {
        debug_assert_eq!((self.width, self.height), (other.width, other.height));
        for (a, b) in self.inside.iter_mut().zip(&other.inside) {
            *a |= *b;
        }
    }

    /// The mask as a grayscale image: 255 inside, 0 outside.
    pub fn to_luma(&self) -> GrayImage {
        GrayImage::from_fn(self.width, self.height, |x, y| {
            Luma([if self.contains(x, y) { 255 } else { 0 }])
        })
    }

    /// Writes the mask as a PNG (255 inside, 0 outside).
    pub fn save_png(&self, path: &Path) -> Result<(), DatasetError> {
        save_png(&DynamicImage::ImageLuma8(self.to_luma()), path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_cover_expected_pixels() {
        let boxes = [BoxRegion {
            x: 1.0,
            y: 2.0,
            width: 2.0,
            height: 3.0,
            label: None,
        }];
        let mask = Mask::from_boxes(&boxes, 6, 6);
        assert_eq!(mask.area(), 6);
        assert!(mask.contains(1, 2) && mask.contains(2, 4));
        assert!(!mask.contains(0, 2) && !mask.contains(3, 2) && !mask.contains(1, 5));
    }

    #[test]
    fn png_round_trip_and_nearest_resize() {
        let dir = std::env::temp_dir().join(format!("firempo-mask-{}", std::process::id()));
        let path = dir.join("m.png");
        let mask = Mask::from_fn(4, 4, |x, y| x < 2 && y < 2);
        mask.save_png(&path).unwrap();
        assert_eq!(Mask::from_png(&path, 4, 4).unwrap(), mask);
        let big = Mask::from_png(&path, 8, 8).unwrap();
        assert_eq!(big.area(), 16);
        assert!(big.contains(3, 3) && !big.contains(4, 4));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
