//! The processor of a model (HF's term): its tokenizer, image preprocessing and prompt format.
//! Turns questions, answers and image files into the token ids and pixels the model consumes,
//! and generated ids back into text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::Context;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use firempo_datasets::{image_dimensions, load_image, PhraseSpan};
use firempo_models::{
    expand_image_tokens, ChatMessage, ChatTemplate, HfChatTemplate, QwenImageProcessor, QwenImages,
    QwenVlConfig, TextConfig, VisionConfig, VlmConfig, IMAGE_PLACEHOLDER, MAX_IMAGE_SIDE,
};
use firempo_models::{preprocess, PixelValues, PreprocessConfig, Resize};
use tokenizers::Tokenizer;

use super::model::Pixels;

/// The token Qwen-VL chat templates write for an image (between `<|vision_start|>` and
/// `<|vision_end|>`); the prompt expands it to one copy per merged image patch. Rendered prompt
/// formats keep [`IMAGE_PLACEHOLDER`] in its place, as for every family.
pub const QWEN_IMAGE_PAD: &str = "<|image_pad|>";

/// How a question becomes a prompt and where an answer ends: the template text and the special
/// tokens around it. A model directory keeps it in `processor.json` (see `model_dir::ProcessorConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptFormat {
    /// Prompt text with `{question}` and one `<image>`.
    pub template: String,
    /// Token prepended to every prompt (`<s>` for LLaMA tokenizers, none for ChatML).
    pub bos_token: Option<String>,
    /// Token that ends an answer: appended in training, stops generation.
    pub eos_token: String,
    /// Where the format came from when it was rendered from a chat template: the checkpoint's
    /// template file, or `prompt format `NAME``; `None` for the built-in formats.
    pub origin: Option<String>,
}

/// Where the question goes while a chat template is rendered into a [`PromptFormat`].
const QUESTION_SLOT: &str = "{question}";
/// A question and an answer rendered to check that a template treats them as opaque text and to
/// find what it puts after an answer.
const PROBE_QUESTION: &str = "Is there a lesion in the left lung?";
const PROBE_ANSWER: &str = "Yes, in the lower lobe.";

impl PromptFormat {
    /// The format of one of the models crate's chat templates (one user turn with the image).
    pub fn of(template: ChatTemplate) -> Self {
        Self {
            template: template.prompt("{question}", true),
            bos_token: (template == ChatTemplate::Llava15).then(|| "<s>".to_string()),
            eos_token: template.stop_tokens()[0].to_string(),
            origin: None,
        }
    }

    /// The format a chat template gives one user turn with an image, rendered as transformers
    /// would, for `tokenizer`:
    /// - the prompt is the template's rendering of that turn with the generation prompt; the
    ///   content is tried in the list form of VLM processors (`{"type": "image"}`, then the text)
    ///   and then as a string `<image>\n{question}`; the first rendering with exactly one
    ///   `<image>` and the question is taken;
    /// - the begin token is the one the tokenizer adds in front of a text (as HF processors
    ///   tokenize with special tokens), unless the rendered prompt already starts with it;
    /// - the end token is the special token the template writes right after an answer, else the
    ///   checkpoint's `eos_token`.
    ///
    /// A template that places no `<image>`, rewrites the question, or ends answers with no
    /// special token when the checkpoint names no `eos_token` is an error.
    pub fn from_chat_template(
        template: &HfChatTemplate,
        tokenizer: &Tokenizer,
    ) -> anyhow::Result<Self> {
        Self::from_chat_template_for(template, tokenizer, IMAGE_PLACEHOLDER)
    }

    /// [`Self::from_chat_template`] for a model family whose templates write `image_token` for
    /// an image (Qwen-VL: [`QWEN_IMAGE_PAD`], inside `<|vision_start|>…<|vision_end|>`); the
    /// format holds [`IMAGE_PLACEHOLDER`] in its place, as for every family.
    pub fn from_chat_template_for(
        template: &HfChatTemplate,
        tokenizer: &Tokenizer,
        image_token: &str,
    ) -> anyhow::Result<Self> {
        let origin = template.origin();
        template.check_special_tokens()?;
        let render = |messages: &[ChatMessage], generation: bool| {
            template
                .render(messages, generation)
                .map(|text| text.replace(image_token, IMAGE_PLACEHOLDER))
        };
        type Form = fn(&str, &str, bool) -> ChatMessage;
        let list: Form = ChatMessage::parts;
        let string: Form = |role, text, image| {
            let text = if image {
                format!("{IMAGE_PLACEHOLDER}\n{text}")
            } else {
                text.to_string()
            };
            ChatMessage::text(role, &text)
        };
        let mut tried = Vec::new();
        let mut chosen = None;
        for (name, form) in [("list", list), ("string", string)] {
            match render(&[form("user", QUESTION_SLOT, true)], true) {
                Ok(prompt)
                    if prompt.matches(QUESTION_SLOT).count() == 1
                        && prompt.matches(IMAGE_PLACEHOLDER).count() == 1 =>
                {
                    chosen = Some((form, prompt));
                    break;
                }
                Ok(prompt) => tried.push(format!("{name} content gives {prompt:?}")),
                Err(e) => tried.push(format!("{name} content fails: {e}")),
            }
        }
        let Some((form, prompt)) = chosen else {
            anyhow::bail!(
                "chat template {origin}: one user turn with an image must render with exactly one \
                 `{IMAGE_PLACEHOLDER}` and the question, but {}; fix: use a template that writes \
                 `{IMAGE_PLACEHOLDER}` for the image (or pass --prompt-format NAME)",
                tried.join(", and ")
            )
        };
        let probe = render(&[form("user", PROBE_QUESTION, true)], true)?;
        anyhow::ensure!(
            probe == prompt.replace(QUESTION_SLOT, PROBE_QUESTION),
            "chat template {origin}: the question {PROBE_QUESTION:?} renders as {probe:?}, not as \
             the question put into {prompt:?}; the pipeline needs a template that writes the \
             question as it is"
        );
        let answered = render(
            &[
                form("user", PROBE_QUESTION, true),
                form("assistant", PROBE_ANSWER, false),
            ],
            false,
        )?;
        let Some((_, after_answer)) = answered.rsplit_once(PROBE_ANSWER) else {
            anyhow::bail!(
                "chat template {origin}: a conversation with the answer {PROBE_ANSWER:?} renders \
                 as {answered:?}, without the answer"
            )
        };
        let added = tokenizer.get_added_tokens_decoder();
        let end_of_turn = added
            .values()
            .filter(|token| token.special && after_answer.trim_start().starts_with(&token.content))
            .map(|token| token.content.clone())
            .max_by_key(String::len);
        let eos_token = match end_of_turn.or_else(|| template.eos_token.clone()) {
            Some(token) => token,
            None => anyhow::bail!(
                "chat template {origin}: after an answer the template writes {after_answer:?}, \
                 which starts with no special token of the tokenizer, and the checkpoint's \
                 tokenizer_config.json names no `eos_token`; fix: add `eos_token` to \
                 tokenizer_config.json"
            ),
        };
        let encode = |add_special: bool| -> anyhow::Result<Vec<u32>> {
            Ok(tokenizer
                .encode("a", add_special)
                .map_err(|e| anyhow::anyhow!("tokenizing a probe text: {e}"))?
                .get_ids()
                .to_vec())
        };
        let (with, without) = (encode(true)?, encode(false)?);
        let bos_token = match with.split_first() {
            Some((&first, rest)) if rest == without.as_slice() => tokenizer.id_to_token(first),
            _ => None,
        }
        .filter(|bos| !prompt.starts_with(bos.as_str()));
        let format = Self {
            template: prompt,
            bos_token,
            eos_token,
            origin: Some(origin.to_string()),
        };
        format
            .validate()
            .with_context(|| format!("chat template {origin}"))?;
        Ok(format)
    }

    /// The LLaVA-1.5 format `USER: <image>\n{question} ASSISTANT:` with `<s>` and `</s>`.
    pub fn llava15() -> Self {
        Self::of(ChatTemplate::Llava15)
    }

    /// The prompt text of `question` (before tokenization and image expansion).
    pub fn prompt(&self, question: &str) -> String {
        self.template.replace("{question}", question.trim())
    }

    fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.template.contains("{question}")
                && self.template.matches(IMAGE_PLACEHOLDER).count() == 1,
            "the prompt template must contain `{{question}}` and exactly one `{IMAGE_PLACEHOLDER}`: {:?}",
            self.template
        );
        Ok(())
    }
}

/// Checks that `preprocess` turns any image into the square the vision tower takes, within
/// [`MAX_IMAGE_SIDE`]; names the field at fault (as `processor.json` spells it; callers name the
/// file).
fn check_preprocess(preprocess: &PreprocessConfig, vision: &VisionConfig) -> anyhow::Result<()> {
    preprocess.validate().context("field `preprocess`")?;
    let side = vision.image_size;
    if let Resize::ShortestEdge { size } | Resize::Square { size } = preprocess.resize {
        anyhow::ensure!(
            size as usize <= MAX_IMAGE_SIDE,
            "field `preprocess.resize.size`: {size} px is above the maximum \
             {MAX_IMAGE_SIDE}; fix: resize to the vision tower's {side} px"
        );
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
    anyhow::ensure!(
        out == Some([side as u32, side as u32]),
        "field `{field}`: the preprocessing gives {}, but the vision tower takes \
         {side}×{side} px images (its image_size); fix: set `center_crop` to [{side}, \
         {side}] or `resize` to `square` {side}",
        match out {
            Some([h, w]) => format!("{h}×{w} px images"),
            None => "images of their own size or aspect ratio".to_string(),
        }
    );
    anyhow::ensure!(
        preprocess.n_channels() == vision.num_channels,
        "field `preprocess.channels`: the preprocessing gives {} channels but the \
         vision tower takes {}",
        preprocess.n_channels(),
        vision.num_channels
    );
    Ok(())
}

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

/// Everything needed to talk to a model, except the model.
pub struct Processor {
    /// The tokenizer (with the format's special tokens and the image token).
    pub tokenizer: Tokenizer,
    /// Image preprocessing matching the vision tower.
    pub images: ImageProcessing,
    /// Prompt template and special tokens.
    pub format: PromptFormat,
    /// Token ids of the special tokens.
    pub special: SpecialIds,
    /// Positions the model reads: prompt plus answer (`text.max_position_embeddings`).
    pub context: usize,
    pixel_cache: Mutex<PixelCache>,
}

/// One preprocessed image, as its family's [`ImageProcessing`] makes it.
enum Preprocessed {
    Square(PixelValues),
    Patches(QwenImages),
}

impl Preprocessed {
    fn bytes(&self) -> usize {
        match self {
            Self::Square(values) => std::mem::size_of_val(values.data.as_slice()),
            Self::Patches(images) => std::mem::size_of_val(images.pixel_values.as_slice()),
        }
    }
}

/// Preprocessed pixels kept between batches (training revisits every image each epoch).
#[derive(Default)]
struct PixelCache {
    entries: HashMap<PathBuf, Preprocessed>,
    bytes: usize,
}

/// Most bytes of preprocessed pixels a processor keeps (1 GiB: about 800 LLaVA-1.5 images, or
/// every image of the demo many times over); eval's one corrupted image per record would
/// otherwise grow it with the test set.
pub const PIXEL_CACHE_BYTES: usize = 1 << 30;

/// Ids of the special tokens the pipeline needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecialIds {
    /// Padding (never attended or scored): `<pad>`, else `<unk>`, else `<|endoftext|>`, else
    /// the end token.
    pub pad: i64,
    /// Begin of sequence, prepended to every prompt, if the format has one.
    pub bos: Option<i64>,
    /// End of answer, appended to every answer; generation stops there.
    pub eos: i64,
    /// The image id the model reads at image-feature positions (its `image_token_id`): the
    /// tokenizer's `<image>`, or, for original-LLaVA checkpoints whose tokenizer has none
    /// (LLaVA-Med, HuatuoGPT-Vision), an id past the vocabulary.
    pub image: i64,
    /// Whether `<image>` is a token of the tokenizer. When it is not, prompts are tokenized
    /// around the placeholder, a piece at a time, as LLaVA's `tokenizer_image_token` does.
    pub image_in_tokenizer: bool,
}

impl SpecialIds {
    /// Looks the special tokens of `format` up in `tokenizer`, naming any that is missing;
    /// `image_token_id` is the model's, `image_token` the text of its token when the family
    /// names one other than `<image>` (Qwen-VL's [`QWEN_IMAGE_PAD`]).
    pub fn from_tokenizer(
        tokenizer: &Tokenizer,
        format: &PromptFormat,
        image_token_id: usize,
        image_token: Option<&str>,
    ) -> anyhow::Result<Self> {
        let lookup = |token: &str| tokenizer.token_to_id(token).map(i64::from);
        let id = |token: &str| -> anyhow::Result<i64> {
            lookup(token).with_context(|| {
                format!("the tokenizer has no `{token}` token; add it as a special token")
            })
        };
        let eos = id(&format.eos_token)?;
        let image = match image_token.map(|token| (token, lookup(token))) {
            Some((token, found)) => {
                anyhow::ensure!(
                    found == Some(image_token_id as i64),
                    "the model's image token {token} has id {image_token_id}, but the tokenizer \
                     gives it {}; fix: use the tokenizer.json of the model's checkpoint",
                    found.map_or("no id".to_string(), |id| format!("id {id}"))
                );
                image_token_id as i64
            }
            None => match lookup(IMAGE_PLACEHOLDER) {
                Some(image) => {
                    anyhow::ensure!(
                        image as usize == image_token_id,
                        "the tokenizer's {IMAGE_PLACEHOLDER} id {image} differs from the model's \
                     image_token_id {image_token_id}"
                    );
                    image
                }
                None => {
                    let vocab = tokenizer.get_vocab_size(true);
                    anyhow::ensure!(
                        image_token_id >= vocab,
                        "the tokenizer has no `{IMAGE_PLACEHOLDER}` token and the model's \
                     image_token_id {image_token_id} is one of its {vocab} text tokens, so \
                     images and text would mix; fix: add `{IMAGE_PLACEHOLDER}` to the tokenizer \
                     as a special token with id {image_token_id}"
                    );
                    image_token_id as i64
                }
            },
        };
        Ok(Self {
            pad: ["<pad>", "<unk>", "<|endoftext|>"]
                .into_iter()
                .find_map(lookup)
                .unwrap_or(eos),
            bos: format.bos_token.as_deref().map(id).transpose()?,
            eos,
            image,
            image_in_tokenizer: lookup(IMAGE_PLACEHOLDER).is_some(),
        })
    }
}

impl Processor {
    /// Bundles a tokenizer, preprocessing and prompt format for the model `config`; checks they
    /// agree.
    pub fn new(
        config: &VlmConfig,
        tokenizer: Tokenizer,
        preprocess: PreprocessConfig,
        format: PromptFormat,
    ) -> anyhow::Result<Self> {
        if let Some(vision) = &config.vision {
            check_preprocess(&preprocess, vision)?;
        }
        let images = ImageProcessing::Square {
            preprocess,
            tokens: config.image_tokens_per_image(),
        };
        Self::assemble(
            &config.text,
            config.image_token_id,
            None,
            tokenizer,
            images,
            format,
        )
    }

    /// [`Self::new`] for a Qwen-VL model: images as `images` patches them, the image token
    /// `<|image_pad|>`.
    pub fn for_qwen_vl(
        config: &QwenVlConfig,
        tokenizer: Tokenizer,
        images: QwenImageProcessor,
        format: PromptFormat,
    ) -> anyhow::Result<Self> {
        let vision = &config.vision;
        anyhow::ensure!(
            images.patch_size == vision.patch_size
                && images.merge_size == vision.spatial_merge_size
                && images.temporal_patch_size == vision.temporal_patch_size,
            "the image processor makes {p}×{p} patches merged {m}×{m} over {t} frames, but the \
             vision tower takes patch_size {}, spatial_merge_size {} and temporal_patch_size {}; \
             fix: use the preprocessor_config.json of the model's checkpoint",
            vision.patch_size,
            vision.spatial_merge_size,
            vision.temporal_patch_size,
            p = images.patch_size,
            m = images.merge_size,
            t = images.temporal_patch_size,
        );
        Self::assemble(
            &config.text,
            config.image_token_id,
            Some(QWEN_IMAGE_PAD),
            tokenizer,
            ImageProcessing::Patches(images),
            format,
        )
    }

    fn assemble(
        text: &TextConfig,
        image_token_id: usize,
        image_token: Option<&str>,
        tokenizer: Tokenizer,
        images: ImageProcessing,
        format: PromptFormat,
    ) -> anyhow::Result<Self> {
        format.validate()?;
        let special = SpecialIds::from_tokenizer(&tokenizer, &format, image_token_id, image_token)?;
        let vocab = tokenizer.get_vocab_size(true);
        anyhow::ensure!(
            vocab <= text.vocab_size,
            "the tokenizer has {vocab} tokens but the model's vocabulary only {}",
            text.vocab_size
        );
        Ok(Self {
            context: text.max_position_embeddings,
            tokenizer,
            images,
            format,
            special,
            pixel_cache: Mutex::new(PixelCache::default()),
        })
    }

    /// Image-feature positions `image` takes in a prompt: the vision tower's fixed count, or
    /// for Qwen-VL one per merged patch of the image at the size it is processed at.
    pub fn image_tokens(&self, image: &Path) -> anyhow::Result<usize> {
        match &self.images {
            ImageProcessing::Square { tokens, .. } => Ok(*tokens),
            ImageProcessing::Patches(processor) => {
                let (width, height) = image_dimensions(image)?;
                let grid = processor.grid(height as usize, width as usize, image)?;
                Ok(processor.n_image_tokens(grid))
            }
        }
    }

    fn encode(&self, text: &str) -> anyhow::Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing {text:?}: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Prompt ids of `question` about `image`: the begin token (if any), the template with the
    /// question, `<image>` expanded to the image's token count ([`Self::image_tokens`]). A
    /// prompt that leaves no room in the model's context for one answer token is an error.
    pub fn prompt_ids(&self, question: &str, image: &Path) -> anyhow::Result<Vec<i64>> {
        let text = self.format.prompt(question);
        let image_tokens = self.image_tokens(image)?;
        let expanded = if self.special.image_in_tokenizer {
            let ids = self.encode(&text)?;
            expand_image_tokens(&ids, self.special.image as u32, image_tokens, 1)
                .with_context(|| format!("the prompt {text:?}"))?
        } else {
            self.encode_around_image(&text, image_tokens)?
        };
        let prompt: Vec<i64> = self
            .special
            .bos
            .into_iter()
            .chain(expanded.into_iter().map(i64::from))
            .collect();
        self.check_fits(prompt.len(), 1)?;
        Ok(prompt)
    }

    /// Ids of a prompt for a tokenizer without `<image>`: the text before and after the
    /// placeholder tokenized separately, the image ids between them. This is LLaVA's
    /// `tokenizer_image_token` (each piece is tokenized as a text of its own; the begin token is
    /// the format's, added once by [`Self::prompt_ids`]).
    fn encode_around_image(&self, text: &str, image_tokens: usize) -> anyhow::Result<Vec<u32>> {
        let pieces: Vec<&str> = text.split(IMAGE_PLACEHOLDER).collect();
        anyhow::ensure!(
            pieces.len() == 2,
            "the prompt {text:?} has {} `{IMAGE_PLACEHOLDER}` placeholders; it needs exactly one",
            pieces.len() - 1
        );
        let mut ids = self.encode(pieces[0])?;
        ids.extend(std::iter::repeat_n(self.special.image as u32, image_tokens));
        ids.extend(self.encode(pieces[1])?);
        Ok(ids)
    }

    /// Checks that a prompt of `prompt_len` ids followed by `answer_len` answer ids fits the
    /// model's context: beyond `max_position_embeddings` the model was never trained, and its
    /// scores and answers there mean nothing.
    pub fn check_fits(&self, prompt_len: usize, answer_len: usize) -> anyhow::Result<()> {
        let total = prompt_len + answer_len;
        anyhow::ensure!(
            total <= self.context,
            "the prompt ({prompt_len} tokens with the image's) and the answer ({answer_len} \
             tokens) need {total} positions, but the model's context is {} tokens \
             (text.max_position_embeddings); fix: shorten the question or answer (or, when \
             generating, lower --max-new-tokens; for Qwen-VL, lower max_pixels in \
             preprocessor_config.json)",
            self.context
        );
        Ok(())
    }

    /// Answer ids followed by the end token (what SFT teaches and preference losses score).
    pub fn answer_ids(&self, answer: &str) -> anyhow::Result<Vec<i64>> {
        Ok(self.answer_ids_with_phrases(answer, &[])?.0)
    }

    /// Answer ids followed by the end token, and for each id its phrase id: the id of the byte
    /// span in `spans` that the token overlaps, 0 outside every span (and for the end token).
    pub fn answer_ids_with_phrases(
        &self,
        answer: &str,
        spans: &[PhraseSpan],
    ) -> anyhow::Result<(Vec<i64>, Vec<i64>)> {
        let encoding = self
            .tokenizer
            .encode(answer, false)
            .map_err(|e| anyhow::anyhow!("tokenizing {answer:?}: {e}"))?;
        let mut ids: Vec<i64> = encoding.get_ids().iter().map(|&id| i64::from(id)).collect();
        let mut phrases: Vec<i64> = encoding
            .get_offsets()
            .iter()
            .map(|&(start, end)| {
                spans
                    .iter()
                    .find(|span| start < span.end && span.start < end)
                    .map_or(0, |span| i64::from(span.id))
            })
            .collect();
        ids.push(self.special.eos);
        phrases.push(0);
        Ok((ids, phrases))
    }

    /// Text of generated ids, up to the first end token.
    pub fn decode(&self, ids: &[i64]) -> anyhow::Result<String> {
        let end = ids
            .iter()
            .position(|&id| id == self.special.eos)
            .unwrap_or(ids.len());
        let ids: Vec<u32> = ids[..end].iter().map(|&id| id as u32).collect();
        self.tokenizer
            .decode(&ids, true)
            .map_err(|e| anyhow::anyhow!("decoding {ids:?}: {e}"))
    }

    /// Preprocessed images as the model's family takes them: LLaVA `[n, C, H, W]`, Qwen-VL
    /// patches and grids. Each file is decoded once and cached, up to [`PIXEL_CACHE_BYTES`];
    /// files beyond that are decoded again when asked for again.
    pub fn pixels<B: Backend>(
        &self,
        paths: &[&Path],
        device: &B::Device,
    ) -> anyhow::Result<Pixels<B>> {
        let mut cache = self.pixel_cache.lock().expect("pixel cache");
        let mut fresh = Vec::new();
        for path in paths {
            if !cache.entries.contains_key(*path) && !fresh.iter().any(|(p, _)| p == path) {
                fresh.push((*path, self.preprocess_file(path)?));
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
        let images: Vec<&Preprocessed> = paths
            .iter()
            .map(|path| cache.entries.get(*path).or_else(|| uncached.get(path)))
            .collect::<Option<_>>()
            .expect("every image was preprocessed above");
        Ok(stack(&images, device))
    }

    fn preprocess_file(&self, path: &Path) -> anyhow::Result<Preprocessed> {
        let image = load_image(path)?;
        let context = || format!("preprocessing {}", path.display());
        Ok(match &self.images {
            ImageProcessing::Square {
                preprocess: config, ..
            } => Preprocessed::Square(preprocess(&image, config).with_context(context)?),
            ImageProcessing::Patches(processor) => Preprocessed::Patches(
                processor
                    .process(&[image], &[path.to_path_buf()])
                    .with_context(context)?,
            ),
        })
    }
}

/// One batch of preprocessed images (all of one family), in order.
fn stack<B: Backend>(images: &[&Preprocessed], device: &B::Device) -> Pixels<B> {
    match images.first() {
        Some(Preprocessed::Patches(first)) => {
            let mut values = Vec::new();
            let mut grids = Vec::new();
            for image in images {
                if let Preprocessed::Patches(image) = image {
                    values.extend_from_slice(&image.pixel_values);
                    grids.extend_from_slice(&image.image_grid_thw);
                }
            }
            let rows = values.len() / first.patch_dim.max(1);
            Pixels::Patches {
                values: Tensor::from_data(TensorData::new(values, [rows, first.patch_dim]), device),
                grids,
            }
        }
        _ => {
            let mut data = Vec::new();
            let mut shape = [0usize; 3];
            for image in images {
                if let Preprocessed::Square(values) = image {
                    shape = [values.channels, values.height, values.width];
                    data.extend_from_slice(&values.data);
                }
            }
            let [c, h, w] = shape;
            Pixels::Square(Tensor::from_data(
                TensorData::new(data, [images.len(), c, h, w]),
                device,
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fixture tokenizer with `<s>` and `</s>` added and, when `adds_bos`, a post-processor
    /// that puts `<s>` in front of every text (as LLaMA tokenizers do).
    fn tokenizer(adds_bos: bool) -> Tokenizer {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/tokenizer.json");
        let mut json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        for (id, content) in [(121, "<s>"), (122, "</s>")] {
            json["added_tokens"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true,
                }));
        }
        if adds_bos {
            json["post_processor"] = serde_json::json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 0}}],
                "special_tokens": {"<s>": {"id": "<s>", "ids": [121], "tokens": ["<s>"]}},
            });
        }
        Tokenizer::from_bytes(json.to_string()).unwrap()
    }

    /// The error of a format `template` cannot give (with the fixture tokenizer).
    fn refusal(template: &HfChatTemplate) -> String {
        PromptFormat::from_chat_template(template, &tokenizer(false))
            .unwrap_err()
            .to_string()
    }

    fn named(name: &str) -> HfChatTemplate {
        let mut template = HfChatTemplate::named(name).unwrap();
        template.bos_token = Some("<s>".into());
        template.eos_token = Some("</s>".into());
        template
    }

    #[test]
    fn begin_and_end_tokens_follow_the_tokenizer_and_the_template() {
        // LLaVA-1.5: the tokenizer adds <s>; answers end with eos_token.
        let format =
            PromptFormat::from_chat_template(&named("llava-1.5"), &tokenizer(true)).unwrap();
        assert!(format
            .template
            .ends_with(" USER: <image>\n{question} ASSISTANT:"));
        assert_eq!(format.bos_token.as_deref(), Some("<s>"));
        assert_eq!(format.eos_token, "</s>");
        assert_eq!(format.origin.as_deref(), Some("prompt format `llava-1.5`"));
        // Mistral-instruct writes <s> itself: not prepended a second time.
        let format =
            PromptFormat::from_chat_template(&named("mistral-instruct"), &tokenizer(true)).unwrap();
        assert_eq!(format.template, "<s>[INST] <image>\n{question} [/INST]");
        assert_eq!(format.bos_token, None);
        // A tokenizer that adds nothing: no begin token; ChatML ends answers with <|im_end|>.
        let format = PromptFormat::from_chat_template(&named("chatml"), &tokenizer(false)).unwrap();
        assert_eq!(format.bos_token, None);
        assert_eq!(format.eos_token, "<|im_end|>");
        // HuatuoGPT-Vision writes no special token after an answer: eos_token, and without one
        // an error.
        let format = PromptFormat::from_chat_template(&named("huatuo"), &tokenizer(false)).unwrap();
        assert_eq!(format.eos_token, "</s>");
        let mut template = named("huatuo");
        template.eos_token = None;
        let err = refusal(&template);
        assert!(
            err.contains("no `eos_token`") && err.contains("huatuo"),
            "{err}"
        );
    }

    #[test]
    fn a_template_that_rewrites_the_question_is_refused() {
        let template =
            HfChatTemplate::new("{{ messages[0].content | upper }}", "test template").unwrap();
        let err = refusal(&template);
        assert!(
            err.contains("test template") && err.contains("<image>"),
            "{err}"
        );
        let template = HfChatTemplate::new(
            "{{ messages[0].content | replace('lung', 'chest') }}",
            "test template",
        )
        .unwrap();
        let err = refusal(&template);
        assert!(err.contains("writes the question as it is"), "{err}");
    }
}
