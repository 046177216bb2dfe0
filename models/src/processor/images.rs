//! Images as each model family takes them: LLaVA-style towers a fixed square (CLIP
//! preprocessing), Qwen-VL native-resolution patches; one preprocessed image and a batch of them.

use std::path::Path;

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use image::DynamicImage;

use crate::config::{VisionConfig, MAX_IMAGE_SIDE};
use crate::error::ModelError;
use crate::preprocess::{preprocess, PixelValues, PreprocessConfig, Resize};
use crate::qwen_vl::{QwenImageProcessor, QwenImages};

/// How images become model inputs, per model family.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageProcessing {
    /// LLaVA-style: every image preprocessed to the vision tower's square, `tokens`
    /// image-feature positions each.
    Square {
        preprocess: PreprocessConfig,
        tokens: usize,
    },
    /// Qwen-VL: native-resolution patches; an image's token count follows from its size.
    Patches(QwenImageProcessor),
}

/// One image preprocessed as its family's [`ImageProcessing`] makes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessedImage {
    /// `[C, H, W]` values of the tower's square.
    Square(PixelValues),
    /// The image's patches and its grid.
    Patches(QwenImages),
}

impl ProcessedImage {
    /// Bytes of its pixel values (what a cache of processed images spends on it).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Square(values) => std::mem::size_of_val(values.data.as_slice()),
            Self::Patches(images) => std::mem::size_of_val(images.pixel_values.as_slice()),
        }
    }
}

/// A batch of preprocessed images as a model family takes them.
#[derive(Debug, Clone)]
pub enum Pixels<B: Backend> {
    /// LLaVA: `[n_images, C, H, W]`, every image the vision tower's square.
    Square(Tensor<B, 4>),
    /// Qwen-VL: all images' patches `[n_patches, C·T·p·p]`, and one `[t, h, w]` grid (in
    /// patches) per image; images of different sizes have different grids.
    Patches {
        values: Tensor<B, 2>,
        grids: Vec<[usize; 3]>,
    },
}

impl<B: AutodiffBackend> Pixels<B> {
    /// The same pixels on the inner backend (for the graph-free reference model).
    pub fn inner(&self) -> Pixels<B::InnerBackend> {
        match self {
            Self::Square(t) => Pixels::Square(t.clone().inner()),
            Self::Patches { values, grids } => Pixels::Patches {
                values: values.clone().inner(),
                grids: grids.clone(),
            },
        }
    }
}

impl<B: Backend> Pixels<B> {
    /// What kind of images these are, for errors ("LLaVA-style square images").
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Square(_) => "LLaVA-style square images",
            Self::Patches { .. } => "Qwen-VL image patches",
        }
    }
}

impl ImageProcessing {
    /// The image-feature positions every image takes, when they do not depend on its size
    /// (LLaVA-style towers); `None` for Qwen-VL.
    pub fn fixed_tokens(&self) -> Option<usize> {
        match self {
            Self::Square { tokens, .. } => Some(*tokens),
            Self::Patches(_) => None,
        }
    }

    /// Image-feature positions an image of `width × height` pixels takes in a prompt: the
    /// vision tower's fixed count, or for Qwen-VL one per merged patch at the processed size.
    /// `origin` names the image in errors.
    pub fn tokens(&self, width: u32, height: u32, origin: &Path) -> Result<usize, ModelError> {
        match self {
            Self::Square { tokens, .. } => Ok(*tokens),
            Self::Patches(processor) => {
                let grid = processor.grid(height as usize, width as usize, origin)?;
                Ok(processor.n_image_tokens(grid))
            }
        }
    }

    /// Preprocesses one decoded image; `origin` names it in errors.
    pub fn process(
        &self,
        image: &DynamicImage,
        origin: &Path,
    ) -> Result<ProcessedImage, ModelError> {
        Ok(match self {
            Self::Square {
                preprocess: config, ..
            } => {
                ProcessedImage::Square(preprocess(image, config).map_err(|e| in_image(origin, e))?)
            }
            Self::Patches(processor) => ProcessedImage::Patches(
                processor.process(std::slice::from_ref(image), &[origin.to_path_buf()])?,
            ),
        })
    }
}

fn in_image(origin: &Path, e: ModelError) -> ModelError {
    ModelError::Image {
        path: origin.to_path_buf(),
        message: e.to_string(),
    }
}

/// One batch of preprocessed images, in order. Images of the other family, or LLaVA images of
/// different sizes, are an error (a LLaVA tower takes one size).
pub fn batch<B: Backend>(
    images: &[&ProcessedImage],
    device: &B::Device,
) -> Result<Pixels<B>, ModelError> {
    match images.first() {
        None => Err(ModelError::Input("no images given".into())),
        Some(ProcessedImage::Patches(first)) => {
            let mut values = Vec::new();
            let mut grids = Vec::new();
            for image in images {
                let ProcessedImage::Patches(image) = image else {
                    return Err(mixed_families());
                };
                values.extend_from_slice(&image.pixel_values);
                grids.extend_from_slice(&image.image_grid_thw);
            }
            let rows = values.len() / first.patch_dim.max(1);
            Ok(Pixels::Patches {
                values: Tensor::from_data(TensorData::new(values, [rows, first.patch_dim]), device),
                grids,
            })
        }
        Some(ProcessedImage::Square(_)) => {
            let values = images
                .iter()
                .map(|image| match image {
                    ProcessedImage::Square(values) => Ok(values),
                    ProcessedImage::Patches(_) => Err(mixed_families()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Pixels::Square(PixelValues::stack(&values, device)?))
        }
    }
}

fn mixed_families() -> ModelError {
    ModelError::Input("a batch mixes square images and Qwen-VL patches".into())
}

/// Checks that `preprocess` turns any image into the square the vision tower takes, within
/// [`MAX_IMAGE_SIDE`]; names the field at fault as `processor.json` spells it.
pub fn check_square_preprocess(
    preprocess: &PreprocessConfig,
    vision: &VisionConfig,
) -> Result<(), ModelError> {
    let refuse = |field: &str, message: String| {
        Err(ModelError::Processor(format!("field `{field}`: {message}")))
    };
    if let Err(e) = preprocess.validate() {
        return refuse("preprocess", e.to_string());
    }
    let side = vision.image_size;
    if let Resize::ShortestEdge { size } | Resize::Square { size } = preprocess.resize {
        if size as usize > MAX_IMAGE_SIDE {
            return refuse(
                "preprocess.resize.size",
                format!(
                    "{size} px is above the maximum {MAX_IMAGE_SIDE}; fix: resize to the vision \
                     tower's {side} px"
                ),
            );
        }
    }
    let out = match (preprocess.center_crop, preprocess.resize) {
        (Some(crop), _) => Some(crop),
        (None, Resize::Square { size }) => Some([size, size]),
        (None, _) => None,
    };
    let field = if preprocess.center_crop.is_some() {
        "preprocess.center_crop"
    } else {
        "preprocess.resize"
    };
    if out != Some([side as u32, side as u32]) {
        return refuse(
            field,
            format!(
                "the preprocessing gives {}, but the vision tower takes {side}×{side} px images \
                 (its image_size); fix: set `center_crop` to [{side}, {side}] or `resize` to \
                 `square` {side}",
                match out {
                    Some([h, w]) => format!("{h}×{w} px images"),
                    None => "images of their own size or aspect ratio".to_string(),
                }
            ),
        );
    }
    if preprocess.n_channels() != vision.num_channels {
        return refuse(
            "preprocess.channels",
            format!(
                "the preprocessing gives {} channels but the vision tower takes {}",
                preprocess.n_channels(),
                vision.num_channels
            ),
        );
    }
    Ok(())
}
