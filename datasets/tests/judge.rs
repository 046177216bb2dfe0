//! The judge editor against a local OpenAI-compatible server on 127.0.0.1 that the test starts
//! (std `TcpListener` in a thread; it serves a bounded number of requests and stops by itself).

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::TempDir;
use firempo_datasets::{
    AnswerType, DatasetError, Editor, JudgeConfig, JudgeEditor, PairBranch, PhraseSource, Record,
    Sample, Split,
};
use serde_json::{json, Value};

/// What the fake endpoint does with one request body.
enum Reply {
    /// HTTP 200 with this assistant message content.
    Content(String),
    /// This HTTP status with a short body.
    Status(u16),
    /// Wait this long, then answer (the client has given up by then).
    Stall(Duration),
}

struct Server {
    base_url: String,
    requests: Arc<Mutex<Vec<Value>>>,
    handle: JoinHandle<()>,
}

/// Serves at most `max_requests` requests, and stops after 5 s without one.
fn serve(max_requests: usize, reply: impl Fn(usize, &Value) -> Reply + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    let handle = std::thread::spawn(move || {
        let mut idle_since = Instant::now();
        let mut served = 0;
        while served < max_requests && idle_since.elapsed() < Duration::from_secs(5) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request: Value = serde_json::from_slice(&body).unwrap();
            let (status, text) = match reply(served, &request) {
                Reply::Content(content) => (
                    200,
                    json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
                        .to_string(),
                ),
                Reply::Status(code) => (code, "{\"error\": \"scripted\"}".to_string()),
                Reply::Stall(wait) => {
                    std::thread::sleep(wait);
                    (200, "{}".to_string())
                }
            };
            seen.lock().unwrap().push(request);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            served += 1;
            idle_since = Instant::now();
        }
    });
    Server {
        base_url,
        requests,
        handle,
    }
}

fn config(base_url: &str) -> JudgeConfig {
    JudgeConfig {
        base_url: base_url.into(),
        model: "local-judge".into(),
        api_key_env: None,
        timeout_secs: 2.0,
        max_retries: 2,
        retry_backoff_ms: 10,
        concurrency: 2,
        ..Default::default()
    }
}

fn item(id: &str, truth: &str, answer: &str) -> (Sample, Record) {
    let record = Record {
        id: id.into(),
        image: "x.png".into(),
        question: "Which organ is enlarged?".into(),
        answer: truth.into(),
        answer_type: AnswerType::Open,
        mask: None,
        concept: None,
        split: Split::Train,
        meta: Default::default(),
    };
    let sample = Sample {
        record_id: id.into(),
        question: record.question.clone(),
        answer: answer.into(),
        model: None,
        meta: Default::default(),
    };
    (sample, record)
}

fn user_prompt(request: &Value) -> String {
    request["messages"][1]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A judge that knows "liver" is right and "spleen" is wrong.
fn liver_judge(_: usize, request: &Value) -> Reply {
    let prompt = user_prompt(request);
    if prompt.contains("Chosen answer:") {
        let chosen = prompt
            .lines()
            .next()
            .unwrap()
            .trim_start_matches("Chosen answer: ");
        let rejected = prompt
            .lines()
            .nth(1)
            .unwrap()
            .trim_start_matches("Rejected answer: ");
        let mark = |t: &str| {
            t.replace("liver", "<mask>liver</mask>")
                .replace("spleen", "<mask>spleen</mask>")
        };
        return Reply::Content(
            json!({"chosen_marked": mark(chosen), "rejected_marked": mark(rejected)}).to_string(),
        );
    }
    let wrong = prompt.contains("Model answer: The spleen");
    let stage_one = json!({
        "answer_sentence": if wrong { "The spleen is enlarged" } else { "The liver is enlarged" },
        "final_answer": if wrong { "spleen" } else { "liver" },
        "is_correct": !wrong,
        "corrected_sentence": "The liver is enlarged",
        "opposite_answer": "The spleen is enlarged",
    });
    // Some servers wrap JSON in a Markdown fence; the editor must cope.
    Reply::Content(format!("```json\n{stage_one}\n```"))
}

#[test]
fn two_stage_edits_with_cache_and_concurrency() {
    let cache = TempDir::new("judge-cache");
    let server = serve(4, liver_judge);
    let mut cfg = config(&server.base_url);
    cfg.cache_dir = Some(cache.path().to_path_buf());
    let judge = JudgeEditor::new(cfg.clone()).unwrap();
    assert_eq!(judge.name(), "judge:local-judge");

    let wrong = item(
        "w",
        "liver",
        "The spleen is enlarged, with no focal lesion.",
    );
    let right = item("r", "liver", "The liver is enlarged.");
    let edits = judge.edit_all(&[(&wrong.0, &wrong.1), (&right.0, &right.1)]);
    let w = edits[0].as_ref().unwrap();
    assert_eq!(w.branch, PairBranch::Corrected);
    assert_eq!(w.chosen, "The liver is enlarged, with no focal lesion.");
    assert_eq!(w.rejected, "The spleen is enlarged, with no focal lesion.");
    assert_eq!(
        &w.chosen[w.chosen_spans[0].start..w.chosen_spans[0].end],
        "liver"
    );
    assert_eq!(
        &w.rejected[w.rejected_spans[0].start..w.rejected_spans[0].end],
        "spleen"
    );
    let r = edits[1].as_ref().unwrap();
    assert_eq!(r.branch, PairBranch::OppositeSpliced);
    assert_eq!(
        (r.chosen.as_str(), r.rejected.as_str()),
        ("The liver is enlarged.", "The spleen is enlarged.")
    );

    server.handle.join().unwrap();
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4, "two stages for two samples");
    assert_eq!(requests[0]["model"], "local-judge");
    assert_eq!(requests[0]["response_format"]["type"], "json_object");
    assert!(user_prompt(&requests[0]).contains("Respond only with valid JSON"));

    // Second run: every reply comes from the cache, no server needed.
    let offline = JudgeEditor::new(JudgeConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        ..cfg
    })
    .unwrap();
    assert_eq!(offline.edit(&wrong.0, &wrong.1).unwrap(), *w);
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 4);
}

#[test]
fn non_json_replies_fail_after_retries_naming_the_stage() {
    let server = serve(3, |_, _| Reply::Content("I think it is the liver.".into()));
    let judge = JudgeEditor::new(config(&server.base_url)).unwrap();
    let (sample, record) = item("n", "liver", "The liver.");
    let err = judge.edit(&sample, &record).unwrap_err();
    server.handle.join().unwrap();
    let DatasetError::Judge {
        record,
        stage,
        message,
        attempts,
        ..
    } = &err
    else {
        panic!("expected a judge error, got {err}")
    };
    assert_eq!((record.as_str(), *stage, *attempts), ("n", "stage 1", 3));
    assert!(
        message.contains("not the expected JSON") && message.contains("I think"),
        "{message}"
    );
    assert_eq!(server.requests.lock().unwrap().len(), 3);
}

#[test]
fn timeouts_are_retried_then_reported() {
    let server = serve(2, |_, _| Reply::Stall(Duration::from_millis(900)));
    let mut cfg = config(&server.base_url);
    cfg.timeout_secs = 0.3;
    cfg.max_retries = 1;
    let judge = JudgeEditor::new(cfg).unwrap();
    let (sample, record) = item("t", "liver", "The liver.");
    let started = Instant::now();
    let err = judge.edit(&sample, &record).unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3));
    server.handle.join().unwrap();
    let text = err.to_string();
    assert!(
        matches!(err, DatasetError::Judge { attempts: 2, .. }),
        "{text}"
    );
    assert!(
        text.to_lowercase().contains("timed out") || text.contains("transport"),
        "{text}"
    );
}

#[test]
fn server_errors_are_retried_and_client_errors_are_not() {
    let server = serve(2, |n, request| match n {
        0 => Reply::Status(503),
        _ => liver_judge(n, request),
    });
    let mut cfg = config(&server.base_url);
    cfg.phrases = PhraseSource::Diff;
    let judge = JudgeEditor::new(cfg).unwrap();
    let (sample, record) = item("s", "liver", "The spleen is enlarged.");
    let edit = judge.edit(&sample, &record).unwrap();
    assert_eq!(edit.chosen, "The liver is enlarged.");
    assert_eq!(edit.chosen_spans.len(), 1, "phrases from the local diff");
    assert_eq!(
        server.requests.lock().unwrap().len(),
        2,
        "503, then stage 1 only"
    );
    drop(judge);

    let denied = serve(1, |_, _| Reply::Status(401));
    let judge = JudgeEditor::new(config(&denied.base_url)).unwrap();
    let err = judge.edit(&sample, &record).unwrap_err();
    denied.handle.join().unwrap();
    assert!(
        matches!(err, DatasetError::Judge { attempts: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("HTTP 401"), "{err}");
    server.handle.join().unwrap();
}

#[test]
fn missing_api_key_variable_is_a_config_error() {
    let cfg = JudgeConfig {
        api_key_env: Some("FIREMPO_TEST_KEY_THAT_IS_NOT_SET".into()),
        ..Default::default()
    };
    let err = JudgeEditor::new(cfg).unwrap_err().to_string();
    assert!(
        err.contains("api_key_env") && err.contains("FIREMPO_TEST_KEY_THAT_IS_NOT_SET"),
        "{err}"
    );
}

/// Issue 9, item 18: an endpoint that keeps failing opens the circuit breaker after
/// `max_consecutive_failures` requests in a row (a success resets the count); the error names
/// the URL and the last failure, and nothing more is sent.
#[test]
fn a_failing_endpoint_opens_the_circuit_breaker() {
    // Requests 0, 1 fail; 2 succeeds; 3, 4, 5 fail: the third failure in a row opens it.
    let server = serve(6, |n, request| match n {
        2 => liver_judge(n, request),
        _ => Reply::Status(503),
    });
    let mut cfg = config(&server.base_url);
    cfg.max_retries = 0;
    cfg.max_consecutive_failures = 3;
    cfg.concurrency = 1;
    cfg.phrases = PhraseSource::Diff;
    let judge = JudgeEditor::new(cfg).unwrap();
    assert!(judge.stopped().is_none());
    let items: Vec<(Sample, Record)> = (0..9)
        .map(|i| item(&format!("s{i}"), "liver", "The spleen is enlarged."))
        .collect();
    let refs: Vec<(&Sample, &Record)> = items.iter().map(|(s, r)| (s, r)).collect();
    let edits = judge.edit_all(&refs);
    server.handle.join().unwrap();
    assert_eq!(
        server.requests.lock().unwrap().len(),
        6,
        "nothing sent once open"
    );
    assert_eq!(edits.len(), 9);
    assert!(edits[2].is_ok());
    for edit in &edits[6..] {
        assert!(
            matches!(edit, Err(DatasetError::JudgeStopped { failures: 3, .. })),
            "{edit:?}"
        );
    }
    let stopped = judge.stopped().expect("the breaker is open").to_string();
    assert!(
        stopped.contains(&server.base_url)
            && stopped.contains("3 requests in a row failed")
            && stopped.contains("HTTP 503"),
        "{stopped}"
    );
}
