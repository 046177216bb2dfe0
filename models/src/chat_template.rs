//! Hugging Face chat templates: the Jinja `chat_template` a checkpoint ships (in
//! `chat_template.jinja`, `chat_template.json`, `processor_config.json` or
//! `tokenizer_config.json`), or one of the named prompt formats of [`PROMPT_FORMATS`] for
//! checkpoints without one, rendered with `minijinja` the way transformers' `apply_chat_template`
//! renders them (`trim_blocks`, `lstrip_blocks`, loop controls, `raise_exception`,
//! `strftime_now`, Python string methods, `{% generation %}` blocks).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{Environment, Error, ErrorKind, Value};
use serde::Serialize;

use crate::error::ModelError;

/// The named prompt formats, for checkpoints that ship no chat template
/// (`models/src/templates/NAME.jinja`).
pub const PROMPT_FORMATS: [&str; 6] = [
    "llava-1.5",
    "llava-med",
    "mistral-instruct",
    "chatml",
    "huatuo",
    "qwen-vl",
];

/// The Jinja text of a named prompt format.
fn named_source(name: &str) -> Option<&'static str> {
    Some(match name {
        "llava-1.5" => include_str!("templates/llava-1.5.jinja"),
        "llava-med" => include_str!("templates/llava-med.jinja"),
        "mistral-instruct" => include_str!("templates/mistral-instruct.jinja"),
        "chatml" => include_str!("templates/chatml.jinja"),
        "huatuo" => include_str!("templates/huatuo.jinja"),
        "qwen-vl" => include_str!("templates/qwen-vl.jinja"),
        _ => return None,
    })
}

/// One message of a conversation, as `apply_chat_template` takes it.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Text, or (for VLM templates) a list of image and text parts.
    pub content: MessageContent,
}

/// The content of a message: a string, or the list form of VLM processors.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text (the image, if any, as `<image>` inside it).
    Text(String),
    /// `[{"type": "image"}, {"type": "text", "text": ...}]`.
    Parts(Vec<ContentPart>),
}

/// One item of list-form content.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ContentPart {
    /// `{"type": "image"}`: the template places the image token.
    Image,
    /// `{"type": "text", "text": ...}`.
    Text {
        /// The text.
        text: String,
    },
}

impl ChatMessage {
    /// A message with string content.
    pub fn text(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: MessageContent::Text(content.to_string()),
        }
    }

    /// A message with list-form content: the image first when `image`, then the text.
    pub fn parts(role: &str, text: &str, image: bool) -> Self {
        let mut parts = Vec::new();
        if image {
            parts.push(ContentPart::Image);
        }
        parts.push(ContentPart::Text {
            text: text.to_string(),
        });
        Self {
            role: role.to_string(),
            content: MessageContent::Parts(parts),
        }
    }
}

/// A compiled chat template and the special tokens it is rendered with.
pub struct HfChatTemplate {
    env: Environment<'static>,
    source: String,
    origin: String,
    /// `bos_token` of the tokenizer config (the template variable of that name).
    pub bos_token: Option<String>,
    /// `eos_token` of the tokenizer config.
    pub eos_token: Option<String>,
}

impl std::fmt::Debug for HfChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HfChatTemplate")
            .field("origin", &self.origin)
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

const NAME: &str = "chat_template";

impl HfChatTemplate {
    /// Compiles `source`; `origin` says where it came from in errors (a file, or `prompt format
    /// NAME`).
    pub fn new(source: &str, origin: impl Into<String>) -> Result<Self, ModelError> {
        let origin = origin.into();
        let mut env = Environment::new();
        env.set_syntax(
            SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .map_err(|e| template_error(&origin, &e))?,
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(NAME, without_generation_tags(source))
            .map_err(|e| template_error(&origin, &e))?;
        Ok(Self {
            env,
            source: source.to_string(),
            origin,
            bos_token: None,
            eos_token: None,
        })
    }

    /// A named prompt format (one of [`PROMPT_FORMATS`]); an unknown name is an error that lists
    /// them.
    pub fn named(name: &str) -> Result<Self, ModelError> {
        let source = named_source(name).ok_or_else(|| ModelError::ChatTemplate {
            origin: format!("prompt format `{name}`"),
            message: format!(
                "no such prompt format; the named formats are {}",
                PROMPT_FORMATS.join(", ")
            ),
        })?;
        Self::new(source, format!("prompt format `{name}`"))
    }

    /// The chat template a checkpoint directory ships, as transformers looks for it:
    /// `chat_template.jinja`, else `chat_template.json` (`{"chat_template": ...}`), else the
    /// `chat_template` of `processor_config.json` (where older processors kept it), else that of
    /// `tokenizer_config.json` (a string, or a list of named templates of which `default` is
    /// taken). `None` when the checkpoint has none. The special tokens are
    /// those of `tokenizer_config.json` (see [`special_tokens`]).
    pub fn from_checkpoint(dir: &Path) -> Result<Option<Self>, ModelError> {
        let jinja = dir.join("chat_template.jinja");
        let found = if jinja.is_file() {
            Some((read(&jinja)?, jinja))
        } else if let Some(found) = template_in_json(&dir.join("chat_template.json"))? {
            Some(found)
        } else if let Some(found) = template_in_json(&dir.join("processor_config.json"))? {
            Some(found)
        } else {
            template_in_json(&dir.join("tokenizer_config.json"))?
        };
        let Some((source, path)) = found else {
            return Ok(None);
        };
        let (bos_token, eos_token) = special_tokens(dir)?;
        let mut template = Self::new(&source, path.display().to_string())?;
        template.bos_token = bos_token;
        template.eos_token = eos_token;
        Ok(Some(template))
    }

    /// The prompt format of checkpoint `dir`: the named `format` when given (it overrides the
    /// checkpoint's template), else the checkpoint's template; with neither, an error that lists
    /// the named formats. The special tokens come from `tokenizer_config.json`.
    pub fn for_checkpoint(dir: &Path, format: Option<&str>) -> Result<Self, ModelError> {
        if let Some(name) = format {
            let mut template = Self::named(name)?;
            (template.bos_token, template.eos_token) = special_tokens(dir)?;
            return Ok(template);
        }
        Self::from_checkpoint(dir)?.ok_or_else(|| ModelError::ChatTemplate {
            origin: dir.display().to_string(),
            message: format!(
                "the checkpoint has no chat template (no chat_template.jinja, no chat_template.json, \
                 no `chat_template` in processor_config.json or tokenizer_config.json); fix: pass --prompt-format NAME with \
                 the format the model was trained with, one of {}",
                PROMPT_FORMATS.join(", ")
            ),
        })
    }

    /// Where the template came from (a file, or `prompt format NAME`).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The Jinja text.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Checks that the special tokens the template uses are known: rendering a missing one empty
    /// would change the prompt silently.
    pub fn check_special_tokens(&self) -> Result<(), ModelError> {
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| template_error(&self.origin, &e))?;
        let used = template.undeclared_variables(false);
        for (name, token) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
        ] {
            if token.is_none() && used.contains(name) {
                return Err(ModelError::ChatTemplate {
                    origin: self.origin.clone(),
                    message: format!(
                        "the template uses `{name}` but the checkpoint's tokenizer_config.json \
                         names none; fix: add `\"{name}\": \"...\"` to tokenizer_config.json"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Renders `messages` as `apply_chat_template(messages, tokenize=False,
    /// add_generation_prompt=...)` does. A template that uses `bos_token` or `eos_token` without
    /// it being known is an error (see [`Self::check_special_tokens`]).
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ModelError> {
        self.check_special_tokens()?;
        let mut context = BTreeMap::new();
        context.insert("messages", Value::from(Serde(messages)));
        context.insert("add_generation_prompt", Value::from(add_generation_prompt));
        for (name, token) in [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
        ] {
            if let Some(token) = token {
                context.insert(name, Value::from(token.as_str()));
            }
        }
        let template = self
            .env
            .get_template(NAME)
            .map_err(|e| template_error(&self.origin, &e))?;
        template
            .render(context)
            .map_err(|e| template_error(&self.origin, &e))
    }
}

/// `raise_exception(message)` of transformers' template environment.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message))
}

/// `strftime_now(format)` of transformers' template environment (LLaMA-3.1-style templates write
/// today's date with it), on the current UTC time (transformers takes the local time).
fn strftime_now(format: String) -> Result<Value, Error> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?
        .as_secs();
    strftime(&format, secs as i64).map(Value::from)
}

/// Python's `strftime` for `%Y %y %m %d %j %H %M %S %b %B %a %A %%` at `secs` after the epoch
/// (UTC); any other directive is an error.
fn strftime(format: &str, secs: i64) -> Result<String, Error> {
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const DAYS: [&str; 7] = [
        "Sunday",
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
    ];
    let days = secs.div_euclid(86_400);
    let time = secs.rem_euclid(86_400);
    // Days to the civil date (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let before: [i64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    let yday = before[(month - 1) as usize] + day + i64::from(leap && month > 2);
    let weekday = (days + 4).rem_euclid(7) as usize;
    let month_name = MONTHS[(month - 1) as usize];
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year.rem_euclid(100))),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('j') => out.push_str(&format!("{yday:03}")),
            Some('H') => out.push_str(&format!("{:02}", time / 3600)),
            Some('M') => out.push_str(&format!("{:02}", time / 60 % 60)),
            Some('S') => out.push_str(&format!("{:02}", time % 60)),
            Some('b') => out.push_str(&month_name[..3]),
            Some('B') => out.push_str(month_name),
            Some('a') => out.push_str(&DAYS[weekday][..3]),
            Some('A') => out.push_str(DAYS[weekday]),
            Some('%') => out.push('%'),
            other => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!(
                        "strftime_now: `%{}` is not supported (supported: %Y %y %m %d %j %H %M %S \
                         %b %B %a %A %%)",
                        other.map(String::from).unwrap_or_default()
                    ),
                ))
            }
        }
    }
    Ok(out)
}

fn template_error(origin: &str, error: &Error) -> ModelError {
    let mut message = error.to_string();
    if let Some(detail) = error.detail() {
        if !message.contains(detail) {
            message = format!("{message}: {detail}");
        }
    }
    ModelError::ChatTemplate {
        origin: origin.to_string(),
        message,
    }
}

/// transformers renders `{% generation %}…{% endgeneration %}` (which marks the assistant's
/// tokens) as its body; minijinja knows no such tag, so it becomes `{% if true %}…{% endif %}`
/// with the same whitespace control.
fn without_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        let (before, tag) = rest.split_at(start);
        out.push_str(before);
        let body_start = 2 + usize::from(tag[2..].starts_with(['-', '+']));
        let Some(end) = tag.find("%}") else {
            out.push_str(tag);
            return out;
        };
        let inner_end = end - usize::from(tag[..end].ends_with(['-', '+']) && end > body_start);
        let word = tag[body_start..inner_end].trim();
        let replacement = match word {
            "generation" => Some("if true"),
            "endgeneration" => Some("endif"),
            _ => None,
        };
        match replacement {
            Some(replacement) => {
                out.push_str(&tag[..body_start]);
                out.push(' ');
                out.push_str(replacement);
                out.push(' ');
                out.push_str(&tag[inner_end..end + 2]);
            }
            None => out.push_str(&tag[..end + 2]),
        }
        rest = &tag[end + 2..];
    }
    out.push_str(rest);
    out
}

fn read(path: &Path) -> Result<String, ModelError> {
    std::fs::read_to_string(path).map_err(|source| ModelError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn read_json(path: &Path, what: &'static str) -> Result<Option<serde_json::Value>, ModelError> {
    if !path.is_file() {
        return Ok(None);
    }
    serde_json::from_str(&read(path)?)
        .map(Some)
        .map_err(|e| ModelError::Json {
            path: path.to_path_buf(),
            what,
            message: e.to_string(),
        })
}

/// The `chat_template` field of a JSON file, if the file and the field exist.
fn template_in_json(path: &Path) -> Result<Option<(String, PathBuf)>, ModelError> {
    let Some(json) = read_json(path, "a chat template")? else {
        return Ok(None);
    };
    let field = |message: String| ModelError::ConfigField {
        path: path.to_path_buf(),
        field: "chat_template".to_string(),
        message,
    };
    match json.get("chat_template") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(source)) => Ok(Some((source.clone(), path.to_path_buf()))),
        Some(serde_json::Value::Array(named)) => {
            let default = named.iter().find(|entry| entry["name"] == "default");
            match default.and_then(|entry| entry["template"].as_str()) {
                Some(source) => Ok(Some((source.to_string(), path.to_path_buf()))),
                None => Err(field(format!(
                    "a list of named templates without a `default` one (names: {}); fix: name the \
                     template to use `default`",
                    named
                        .iter()
                        .filter_map(|entry| entry["name"].as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
        Some(other) => Err(field(format!(
            "expected a string or a list of {{\"name\", \"template\"}} objects, found {other}"
        ))),
    }
}

/// `bos_token` and `eos_token` of a checkpoint's `tokenizer_config.json` (each a string or an
/// added-token object with `content`); `None` where the file or the field is missing.
pub fn special_tokens(dir: &Path) -> Result<(Option<String>, Option<String>), ModelError> {
    let path = dir.join("tokenizer_config.json");
    let Some(json) = read_json(&path, "a tokenizer config")? else {
        return Ok((None, None));
    };
    let token = |name: &str| -> Result<Option<String>, ModelError> {
        match json.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(token)) => Ok(Some(token.clone())),
            Some(value) => match value.get("content").and_then(|c| c.as_str()) {
                Some(token) => Ok(Some(token.to_string())),
                None => Err(ModelError::ConfigField {
                    path: path.clone(),
                    field: name.to_string(),
                    message: format!(
                        "expected a token string or an object with `content`, found {value}"
                    ),
                }),
            },
        }
    };
    Ok((token("bos_token")?, token("eos_token")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_tags_become_plain_blocks() {
        assert_eq!(
            without_generation_tags("a{% generation %}b{%- endgeneration -%}c{% if x %}"),
            "a{% if true %}b{%- endif -%}c{% if x %}"
        );
        assert_eq!(without_generation_tags("{{ x }} {%"), "{{ x }} {%");
    }

    #[test]
    fn strftime_is_pythons() {
        // Expected strings from Python's datetime.strftime (UTC).
        let format = "%d %b %Y|%A %a %B %m %y %H:%M:%S %j %%";
        for (secs, want) in [
            (0, "01 Jan 1970|Thursday Thu January 01 70 00:00:00 001 %"),
            (
                951_786_061,
                "29 Feb 2000|Tuesday Tue February 02 00 01:01:01 060 %",
            ),
            (
                1_796_083_200,
                "01 Dec 2026|Tuesday Tue December 12 26 00:00:00 335 %",
            ),
        ] {
            assert_eq!(strftime(format, secs).unwrap(), want);
        }
        let err = strftime("%Z", 0).unwrap_err().to_string();
        assert!(err.contains("`%Z` is not supported"), "{err}");
        let template = HfChatTemplate::new("{{ strftime_now('%Y') }}", "t").unwrap();
        assert_eq!(template.render(&[], false).unwrap().len(), 4);
    }

    #[test]
    fn every_named_format_compiles_and_unknown_names_list_them() {
        for name in PROMPT_FORMATS {
            HfChatTemplate::named(name).unwrap();
        }
        let err = HfChatTemplate::named("vicuna").unwrap_err().to_string();
        assert!(
            err.contains("vicuna") && err.contains("llava-med, mistral-instruct"),
            "{err}"
        );
    }
}
