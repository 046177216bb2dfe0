//! A model's processor (`firempo_models::Processor`) over image files: each image is read
//! through the datasets crate's checked reader (regular files only, pixel budget, decoder
//! limits), preprocessed once and its pixels kept for the next batch, since training revisits
//! every image each epoch. Everything else is the models crate's processor (through `Deref`).

use std::collections::HashMap;
use std::ops::{Deref, Range};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use burn::tensor::backend::Backend;
use firempo_datasets::{image_dimensions, load_image, PhraseSpan};
use firempo_models::{processor, Pixels, ProcessedImage, Processor};

/// Most bytes of preprocessed pixels a processor keeps (1 GiB: about 800 LLaVA-1.5 images, or
/// every image of the demo many times over); eval's one corrupted image per record would
/// otherwise grow it with the test set.
pub const PIXEL_CACHE_BYTES: usize = 1 << 30;

/// The model's processor with an image-file cache.
pub struct FileProcessor {
    processor: Processor,
    cache: Mutex<PixelCache>,
}

/// Preprocessed pixels kept between batches.
#[derive(Default)]
struct PixelCache {
    entries: HashMap<PathBuf, ProcessedImage>,
    bytes: usize,
}

impl Deref for FileProcessor {
    type Target = Processor;

    fn deref(&self) -> &Processor {
        &self.processor
    }
}

impl From<Processor> for FileProcessor {
    fn from(processor: Processor) -> Self {
        Self {
            processor,
            cache: Mutex::new(PixelCache::default()),
        }
    }
}

impl FileProcessor {
    /// Image-feature positions the image file takes in a prompt: LLaVA-style towers' fixed
    /// count (the file is not read), else from the size in the file's header (not decoded).
    pub fn image_tokens_of(&self, image: &Path) -> anyhow::Result<usize> {
        if let Some(tokens) = self.processor.images.fixed_tokens() {
            return Ok(tokens);
        }
        let (width, height) = image_dimensions(image)?;
        Ok(self.processor.image_tokens(width, height, image)?)
    }

    /// Prompt ids of `question` about the image file `image`.
    pub fn prompt_for(&self, question: &str, image: &Path) -> anyhow::Result<Vec<i64>> {
        Ok(self
            .processor
            .prompt_ids(question, self.image_tokens_of(image)?)?)
    }

    /// Answer ids and phrase ids (see `Processor::answer_ids_with_phrases`) for an answer with
    /// the phrase spans of a preference pair.
    pub fn answer_with_spans(
        &self,
        answer: &str,
        spans: &[PhraseSpan],
    ) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
        let ranges: Vec<(Range<usize>, u32)> =
            spans.iter().map(|s| (s.start..s.end, s.id)).collect();
        Ok(self.processor.answer_ids_with_phrases(answer, &ranges)?)
    }

    /// The image files as the model's family takes them (LLaVA `[n, C, H, W]`, Qwen-VL patches
    /// and grids). Each file is decoded once and cached, up to [`PIXEL_CACHE_BYTES`]; files
    /// beyond that are decoded again when asked for again.
    pub fn pixels<B: Backend>(
        &self,
        paths: &[&Path],
        device: &B::Device,
    ) -> anyhow::Result<Pixels<B>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh: Vec<(&Path, ProcessedImage)> = Vec::new();
        for &path in paths {
            if !cache.entries.contains_key(path) && !fresh.iter().any(|(p, _)| *p == path) {
                let image = load_image(path)?;
                fresh.push((path, self.processor.process_image(&image, path)?));
            }
        }
        let mut uncached = HashMap::new();
        for (path, image) in fresh {
            let size = image.bytes();
            if cache.bytes + size <= PIXEL_CACHE_BYTES {
                cache.bytes += size;
                cache.entries.insert(path.to_path_buf(), image);
            } else {
                uncached.insert(path, image);
            }
        }
        let images: Vec<&ProcessedImage> = paths
            .iter()
            .map(|path| cache.entries.get(*path).or_else(|| uncached.get(path)))
            .collect::<Option<_>>()
            .expect("every image was preprocessed above");
        Ok(processor::batch(&images, device)?)
    }
}
