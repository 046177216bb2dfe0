//! The judge: any OpenAI-compatible chat endpoint (`POST {base_url}/chat/completions`).
//! [`JudgeClient`] sends prompts with timeouts, retries with exponential backoff, a circuit
//! breaker, bounded concurrency and an on-disk cache of replies, and its errors say which record
//! and stage failed and why; [`JudgeEditor`] runs the paper's two-stage JSON prompts through it
//! (`firempo pairs`), and `firempo eval` its grading prompts.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::DatasetError;
use crate::pair::PairBranch;
use crate::phrase::{diff_phrases, parse_mask_markup};
use crate::records::Record;
use crate::rng::fnv1a;
use crate::sample::Sample;

use super::prompts::{self, json_body, StageOne, StageTwo};
use super::{Edit, Editor};

/// How stage 2 (phrase localization) is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhraseSource {
    /// Ask the judge to mark phrases with `<mask>…</mask>` (the paper).
    #[default]
    Judge,
    /// Use the local word diff ([`diff_phrases`]); one request per sample instead of two.
    Diff,
}

/// Judge settings; the API key is read from the environment variable `api_key_env`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JudgeConfig {
    /// Endpoint base, e.g. `https://api.openai.com/v1` or `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// Model name sent in each request.
    pub model: String,
    /// Environment variable holding the API key; `None` sends no `Authorization` header.
    pub api_key_env: Option<String>,
    /// Per-request timeout in seconds.
    pub timeout_secs: f64,
    /// Retries after the first attempt (timeouts, connection errors, HTTP 429/5xx, non-JSON).
    pub max_retries: u32,
    /// Stop judging after this many requests in a row failed (after their retries): the
    /// endpoint is down or misconfigured. 0 never stops.
    pub max_consecutive_failures: usize,
    /// Backoff before retry `k` is `retry_backoff_ms · 2^k`.
    pub retry_backoff_ms: u64,
    /// Samples judged at once.
    pub concurrency: usize,
    /// Folder for cached replies (one JSON file per request); `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Sampling temperature.
    pub temperature: f32,
    /// Send `response_format: {"type": "json_object"}` (turn off for servers without it).
    pub json_mode: bool,
    /// Where phrase marks come from.
    pub phrases: PhraseSource,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            model: "gpt-4o-mini".into(),
            api_key_env: Some("OPENAI_API_KEY".into()),
            timeout_secs: 60.0,
            max_retries: 3,
            max_consecutive_failures: 5,
            retry_backoff_ms: 500,
            concurrency: 4,
            cache_dir: None,
            temperature: 0.0,
            json_mode: true,
            phrases: PhraseSource::Judge,
        }
    }
}

/// The OpenAI-compatible chat client every judge use shares: one request per prompt (or its
/// cached reply), retried on timeouts, connection errors, HTTP 429/5xx and replies the caller's
/// parser refuses; a circuit breaker stops all requests after too many failures in a row.
#[derive(Debug)]
pub struct JudgeClient {
    config: JudgeConfig,
    api_key: Option<String>,
    agent: ureq::Agent,
    breaker: Breaker,
}

/// The judge editor: the paper's two-stage prompts through a [`JudgeClient`].
#[derive(Debug)]
pub struct JudgeEditor {
    client: JudgeClient,
}

impl JudgeEditor {
    /// Checks the config and reads the API key.
    pub fn new(config: JudgeConfig) -> Result<Self, DatasetError> {
        Ok(Self {
            client: JudgeClient::new(config)?,
        })
    }

    fn ask<T: DeserializeOwned>(
        &self,
        record: &str,
        stage: &'static str,
        prompt: String,
    ) -> Result<T, DatasetError> {
        self.client.ask_json(record, stage, prompts::SYSTEM, prompt)
    }
}

/// Counts requests that failed in a row; opens (stops all judging) at the configured limit.
#[derive(Debug, Default)]
struct Breaker {
    /// Failed requests since the last success.
    consecutive: AtomicUsize,
    /// Once open: the number of failures in a row and the last one's message.
    open: Mutex<Option<(usize, String)>>,
}

/// One cache file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheEntry {
    request: Value,
    content: String,
}

impl JudgeClient {
    /// Checks the config and reads the API key.
    pub fn new(config: JudgeConfig) -> Result<Self, DatasetError> {
        if !(config.timeout_secs.is_finite() && config.timeout_secs > 0.0) {
            return Err(DatasetError::InvalidConfig {
                field: "timeout_secs",
                value: config.timeout_secs.to_string(),
                requirement: "> 0",
            });
        }
        if config.concurrency == 0 {
            return Err(DatasetError::InvalidConfig {
                field: "concurrency",
                value: "0".into(),
                requirement: ">= 1",
            });
        }
        let api_key = match &config.api_key_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| DatasetError::InvalidConfig {
                field: "api_key_env",
                value: var.clone(),
                requirement: "the name of a set environment variable holding the API key",
            })?),
        };
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(config.timeout_secs))
            .build();
        Ok(Self {
            config,
            api_key,
            agent,
            breaker: Breaker::default(),
        })
    }

    /// The settings.
    pub fn config(&self) -> &JudgeConfig {
        &self.config
    }

    /// Why judging stopped, once `max_consecutive_failures` requests in a row have failed.
    pub fn stopped(&self) -> Option<DatasetError> {
        self.breaker_error()
    }

    /// Why judging stopped, once `max_consecutive_failures` requests in a row have failed.
    fn breaker_error(&self) -> Option<DatasetError> {
        let open = self.breaker.open.lock().unwrap_or_else(|e| e.into_inner());
        open.as_ref()
            .map(|(failures, last)| DatasetError::JudgeStopped {
                url: self.config.base_url.clone(),
                failures: *failures,
                last: last.clone(),
            })
    }

    /// Records how a request ended (after its retries) and opens the breaker at the limit.
    fn record_outcome<T>(&self, outcome: &Result<T, DatasetError>) {
        let Err(err) = outcome else {
            self.breaker.consecutive.store(0, Ordering::SeqCst);
            return;
        };
        let failures = self.breaker.consecutive.fetch_add(1, Ordering::SeqCst) + 1;
        let limit = self.config.max_consecutive_failures;
        if limit > 0 && failures >= limit {
            let mut open = self.breaker.open.lock().unwrap_or_else(|e| e.into_inner());
            open.get_or_insert_with(|| (failures, err.to_string()));
        }
    }

    /// Sends `system` + `prompt` (or reads the reply from the cache) and parses the reply as
    /// JSON `T` (Markdown code fences tolerated), with `response_format: json_object` when
    /// `json_mode` is on. See [`Self::ask_with`].
    pub fn ask_json<T: DeserializeOwned>(
        &self,
        record: &str,
        stage: &'static str,
        system: &str,
        prompt: String,
    ) -> Result<T, DatasetError> {
        self.ask_with(
            record,
            stage,
            system,
            prompt,
            self.config.json_mode,
            |content| {
                serde_json::from_str::<T>(json_body(content))
                    .map_err(|e| format!("reply is not the expected JSON ({e})"))
            },
        )
    }

    /// Sends one chat request (`system` and `prompt` messages; `json_mode`: ask for a JSON
    /// object) or reads its reply from the cache, and parses the reply's content with `parse`.
    /// A reply `parse` refuses (its `Err` says why) is retried like a failed request (and never
    /// cached); after the last attempt the error names `record`, `stage`, why and the reply. Counts the outcome
    /// for the circuit breaker, and sends nothing once it is open.
    pub fn ask_with<T>(
        &self,
        record: &str,
        stage: &'static str,
        system: &str,
        prompt: String,
        json_mode: bool,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, DatasetError> {
        if let Some(stopped) = self.breaker_error() {
            return Err(stopped);
        }
        let outcome = self.request(record, stage, system, prompt, json_mode, &parse);
        self.record_outcome(&outcome);
        outcome
    }

    /// Runs `task` on every item, up to `concurrency` at once; results keep the input order.
    /// Once the circuit breaker opens, the items not started get its error.
    pub fn map_concurrent<I: Sync, T: Send>(
        &self,
        items: &[I],
        task: impl Fn(&I) -> Result<T, DatasetError> + Sync,
    ) -> Vec<Result<T, DatasetError>> {
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<T, DatasetError>>>> =
            Mutex::new((0..items.len()).map(|_| None).collect());
        std::thread::scope(|scope| {
            for _ in 0..self.config.concurrency.min(items.len()) {
                scope.spawn(|| loop {
                    if self.breaker_error().is_some() {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(item) = items.get(i) else {
                        break;
                    };
                    let result = task(item);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                });
            }
        });
        // Items left when the breaker opened get its error.
        results
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(self.breaker_error().expect("only the breaker leaves items"))
                })
            })
            .collect()
    }

    /// [`Self::ask_with`] without the breaker.
    fn request<T>(
        &self,
        record: &str,
        stage: &'static str,
        system: &str,
        prompt: String,
        json_mode: bool,
        parse: &impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, DatasetError> {
        let mut request = json!({
            "model": self.config.model,
            "temperature": self.config.temperature,
            "messages": [
                {"role": "system", "content": system},
                {"role": "user", "content": prompt},
            ],
        });
        if json_mode {
            request["response_format"] = json!({"type": "json_object"});
        }
        let cache_path = self.config.cache_dir.as_ref().map(|dir| {
            let key = fnv1a(request.to_string().as_bytes());
            dir.join(format!("{key:016x}.json"))
        });
        if let Some(path) = &cache_path {
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Ok(entry) = serde_json::from_str::<CacheEntry>(&text) {
                    if entry.request == request {
                        if let Ok(parsed) = parse(&entry.content) {
                            return Ok(parsed);
                        }
                    }
                }
            }
        }
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let body = request.to_string();
        let mut last = String::new();
        let attempts = self.config.max_retries + 1;
        for attempt in 0..attempts {
            if attempt > 0 {
                let backoff = self
                    .config
                    .retry_backoff_ms
                    .saturating_mul(1 << (attempt - 1).min(16));
                std::thread::sleep(Duration::from_millis(backoff));
            }
            let mut call = self
                .agent
                .post(&url)
                .set("Content-Type", "application/json");
            if let Some(key) = &self.api_key {
                call = call.set("Authorization", &format!("Bearer {key}"));
            }
            let content = match call.send_string(&body) {
                Ok(response) => match response.into_string() {
                    Ok(text) => chat_content(&text),
                    Err(e) => Err(format!("cannot read the reply: {e}")),
                },
                Err(ureq::Error::Status(code, response)) => {
                    let text = response.into_string().unwrap_or_default();
                    let message = format!("HTTP {code}: {}", clip(&text));
                    if code == 429 || code >= 500 {
                        Err(message)
                    } else {
                        return Err(judge_error(
                            record,
                            stage,
                            message,
                            attempt + 1,
                            "check base_url, model and the API key (a 4xx is not retried)",
                        ));
                    }
                }
                Err(ureq::Error::Transport(t)) => Err(format!("transport error: {t}")),
            };
            match content.and_then(|c| match parse(&c) {
                Ok(parsed) => Ok((parsed, c)),
                Err(why) => Err(format!("{why}: {}", clip(&c))),
            }) {
                Ok((parsed, content)) => {
                    if let Some(path) = &cache_path {
                        write_cache(path, request, content);
                    }
                    return Ok(parsed);
                }
                Err(message) => {
                    tracing::warn!(
                        "judge {stage} for `{record}`, attempt {}: {message}",
                        attempt + 1
                    );
                    last = message;
                }
            }
        }
        Err(judge_error(record, stage, last, attempts,
            "check the endpoint (timeouts: raise timeout_secs; non-JSON: a model that follows JSON instructions, or json_mode)"))
    }
}

fn write_cache(path: &std::path::Path, request: Value, content: String) {
    let entry = CacheEntry { request, content };
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|_| std::fs::write(path, serde_json::to_string(&entry).expect("cache entry")));
    if let Err(e) = written {
        tracing::warn!("cannot write judge cache {}: {e}", path.display());
    }
}

fn judge_error(
    record: &str,
    stage: &'static str,
    message: String,
    attempts: u32,
    hint: &'static str,
) -> DatasetError {
    DatasetError::Judge {
        record: record.to_string(),
        stage,
        message,
        attempts,
        hint,
    }
}

/// `choices[0].message.content` of an OpenAI chat completion.
fn chat_content(body: &str) -> Result<String, String> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| format!("endpoint reply is not JSON ({e}): {}", clip(body)))?;
    value
        .pointer("/choices/0/message/content")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("no choices[0].message.content in {}", clip(body)))
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(200);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

impl Editor for JudgeEditor {
    fn name(&self) -> String {
        format!("judge:{}", self.client.config.model)
    }

    fn edit(&self, sample: &Sample, record: &Record) -> Result<Edit, DatasetError> {
        let answer = sample.answer.trim();
        let one: StageOne = self.ask(
            &record.id,
            "stage 1",
            prompts::stage_one(record.answer_type, &record.question, &record.answer, answer),
        )?;
        let content_error = |message: String| {
            judge_error(
                &record.id,
                "stage 1",
                message,
                1,
                "the judge must copy answer_sentence exactly from the model answer",
            )
        };
        if one.answer_sentence.is_empty() || !answer.contains(&one.answer_sentence) {
            return Err(content_error(format!(
                "answer_sentence {:?} is not part of the model answer {answer:?}",
                one.answer_sentence
            )));
        }
        let (chosen, rejected, branch) = if one.is_correct {
            let rejected = answer.replacen(&one.answer_sentence, &one.opposite_answer, 1);
            (answer.to_string(), rejected, PairBranch::OppositeSpliced)
        } else {
            let chosen = answer.replacen(&one.answer_sentence, &one.corrected_sentence, 1);
            (chosen, answer.to_string(), PairBranch::Corrected)
        };
        if chosen == rejected {
            return Err(content_error("the edit changed nothing".into()));
        }
        let (chosen_spans, rejected_spans) =
            match self.client.config.phrases {
                PhraseSource::Diff => diff_phrases(&chosen, &rejected),
                PhraseSource::Judge => {
                    let two: StageTwo = self.ask(
                        &record.id,
                        "stage 2",
                        prompts::stage_two(&chosen, &rejected),
                    )?;
                    let stage2 =
                        |e: DatasetError| {
                            judge_error(&record.id, "stage 2", e.to_string(), 1,
                        "the judge must return both answers unchanged apart from <mask> tags")
                        };
                    let c = parse_mask_markup(&two.chosen_marked).map_err(stage2)?;
                    let r = parse_mask_markup(&two.rejected_marked).map_err(stage2)?;
                    if c.text != chosen || r.text != rejected {
                        return Err(judge_error(
                            &record.id,
                            "stage 2",
                            format!(
                                "marked texts differ from the answers: {:?} / {:?}",
                                c.text, r.text
                            ),
                            1,
                            "the judge must return both answers unchanged apart from <mask> tags",
                        ));
                    }
                    (c.spans, r.spans)
                }
            };
        Ok(Edit {
            chosen,
            rejected,
            chosen_spans,
            rejected_spans,
            branch,
        })
    }

    /// Judges up to `concurrency` samples at once; results keep the input order.
    fn edit_all(&self, items: &[(&Sample, &Record)]) -> Vec<Result<Edit, DatasetError>> {
        self.client
            .map_concurrent(items, |(sample, record)| self.edit(sample, record))
    }

    fn stopped(&self) -> Option<DatasetError> {
        self.client.stopped()
    }
}
