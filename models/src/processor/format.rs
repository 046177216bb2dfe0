//! Prompt formats: how a question becomes a prompt and where an answer ends, rendered once from
//! a chat template (the checkpoint's, or a named one) into a `{question}` template.

use tokenizers::Tokenizer;

use super::IMAGE_PLACEHOLDER;
use crate::chat_template::{ChatMessage, HfChatTemplate};
use crate::error::ModelError;

/// The token Qwen-VL chat templates write for an image (between `<|vision_start|>` and
/// `<|vision_end|>`); the prompt expands it to one copy per merged image patch. Rendered prompt
/// formats keep [`IMAGE_PLACEHOLDER`] in its place, as for every family.
pub const QWEN_IMAGE_PAD: &str = "<|image_pad|>";

/// How a question becomes a prompt and where an answer ends: the template text and the special
/// tokens around it. A firempo model directory keeps it in `processor.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptFormat {
    /// Prompt text with `{question}` and one `<image>`.
    pub template: String,
    /// Token prepended to every prompt (`<s>` for LLaMA tokenizers, none for ChatML).
    pub bos_token: Option<String>,
    /// Token that ends an answer: appended in training, stops generation.
    pub eos_token: String,
    /// Where the format came from when it was rendered from a chat template: the checkpoint's
    /// template file, or `prompt format `NAME``; `None` for the built-in format.
    pub origin: Option<String>,
}

/// Where the question goes while a chat template is rendered into a [`PromptFormat`].
const QUESTION_SLOT: &str = "{question}";
/// A question and an answer rendered to check that a template treats them as opaque text and to
/// find what it puts after an answer.
const PROBE_QUESTION: &str = "Is there a lesion in the left lung?";
const PROBE_ANSWER: &str = "Yes, in the lower lobe.";

impl PromptFormat {
    /// The LLaVA-1.5 conversation format without a system prompt, `USER: <image>\n{question}
    /// ASSISTANT:` with `<s>` and `</s>`: the built-in demo model's, and the default of
    /// `processor.json` files written before formats were recorded.
    pub fn llava15() -> Self {
        Self {
            template: format!("USER: {IMAGE_PLACEHOLDER}\n{QUESTION_SLOT} ASSISTANT:"),
            bos_token: Some("<s>".into()),
            eos_token: "</s>".into(),
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
    ) -> Result<Self, ModelError> {
        Self::from_chat_template_for(template, tokenizer, IMAGE_PLACEHOLDER)
    }

    /// [`Self::from_chat_template`] for a model family whose templates write `image_token` for
    /// an image (Qwen-VL: [`QWEN_IMAGE_PAD`], inside `<|vision_start|>…<|vision_end|>`); the
    /// format holds [`IMAGE_PLACEHOLDER`] in its place, as for every family.
    pub fn from_chat_template_for(
        template: &HfChatTemplate,
        tokenizer: &Tokenizer,
        image_token: &str,
    ) -> Result<Self, ModelError> {
        let origin = template.origin();
        let refuse = |message: String| ModelError::ChatTemplate {
            origin: origin.to_string(),
            message,
        };
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
            return Err(refuse(format!(
                "one user turn with an image must render with exactly one `{IMAGE_PLACEHOLDER}` \
                 and the question, but {}; fix: use a template that writes `{IMAGE_PLACEHOLDER}` \
                 for the image (or pass --prompt-format NAME)",
                tried.join(", and ")
            )));
        };
        let probe = render(&[form("user", PROBE_QUESTION, true)], true)?;
        if probe != prompt.replace(QUESTION_SLOT, PROBE_QUESTION) {
            return Err(refuse(format!(
                "the question {PROBE_QUESTION:?} renders as {probe:?}, not as the question put \
                 into {prompt:?}; the pipeline needs a template that writes the question as it is"
            )));
        }
        let answered = render(
            &[
                form("user", PROBE_QUESTION, true),
                form("assistant", PROBE_ANSWER, false),
            ],
            false,
        )?;
        let Some((_, after_answer)) = answered.rsplit_once(PROBE_ANSWER) else {
            return Err(refuse(format!(
                "a conversation with the answer {PROBE_ANSWER:?} renders as {answered:?}, \
                 without the answer"
            )));
        };
        let added = tokenizer.get_added_tokens_decoder();
        let end_of_turn = added
            .values()
            .filter(|token| token.special && after_answer.trim_start().starts_with(&token.content))
            .map(|token| token.content.clone())
            .max_by_key(String::len);
        let Some(eos_token) = end_of_turn.or_else(|| template.eos_token.clone()) else {
            return Err(refuse(format!(
                "after an answer the template writes {after_answer:?}, which starts with no \
                 special token of the tokenizer, and the checkpoint's tokenizer_config.json \
                 names no `eos_token`; fix: add `eos_token` to tokenizer_config.json"
            )));
        };
        let encode = |add_special: bool| -> Result<Vec<u32>, ModelError> {
            Ok(tokenizer
                .encode("a", add_special)
                .map_err(|e| refuse(format!("tokenizing a probe text: {e}")))?
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
        format.validate().map_err(|e| refuse(e.to_string()))?;
        Ok(format)
    }

    /// The prompt text of `question` (before tokenization and image expansion).
    pub fn prompt(&self, question: &str) -> String {
        self.template.replace(QUESTION_SLOT, question.trim())
    }

    /// Checks that the template holds `{question}` and exactly one `<image>`.
    pub fn validate(&self) -> Result<(), ModelError> {
        if self.template.contains(QUESTION_SLOT)
            && self.template.matches(IMAGE_PLACEHOLDER).count() == 1
        {
            return Ok(());
        }
        Err(ModelError::Processor(format!(
            "the prompt template must contain `{QUESTION_SLOT}` and exactly one \
             `{IMAGE_PLACEHOLDER}`: {:?}",
            self.template
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat_template::HfChatTemplate;

    /// The fixture tokenizer with `<s>` and `</s>` added and, when `adds_bos`, a post-processor
    /// that puts `<s>` in front of every text (as LLaMA tokenizers do).
    fn tokenizer(adds_bos: bool) -> Tokenizer {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer.json");
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
