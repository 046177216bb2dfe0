//! `firempo eval`'s paper metrics against a local OpenAI-compatible judge on 127.0.0.1 that the
//! test starts (a `TcpListener` thread that counts requests and stops after 5 s idle, as in
//! `datasets/tests/judge.rs`), and `--samples`: the mean over sampled answers, deterministic for
//! a seed.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use burn::backend::Autodiff;
use firempo::backend::{BackendTask, TestCpu};
use firempo::eval::judge::prompts::{GRADER_SYSTEM, GREEN_SYSTEM};
use firempo::eval::judge::{judge_answers, DecidedBy, GreenCounts, JudgeItem, Judgement};
use firempo::eval::{mean_open_recall, normalize_answer};
use firempo::stages::eval::{AnswerSampling, EvalReport, EvalStage};
use firempo::stages::sft::{ModelSource, SftStage};
use firempo::train::TrainerConfig;
use firempo_datasets::{AnswerType, CorruptionConfig, JudgeClient, JudgeConfig};
use serde_json::{json, Value};

type B = Autodiff<TestCpu>;

/// A judge on 127.0.0.1: `reply(request)` gives each reply's content; `requests` counts them.
struct Server {
    base_url: String,
    requests: Arc<Mutex<usize>>,
}

fn serve(reply: impl Fn(&Value) -> String + Send + 'static) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        let mut idle_since = Instant::now();
        while idle_since.elapsed() < Duration::from_secs(5) {
            let Ok((stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            stream.set_nonblocking(false).unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut length, mut line) = (0, String::new());
            while reader.read_line(&mut line).unwrap() > 0 && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                line.clear();
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let request: Value = serde_json::from_slice(&body).unwrap();
            let content = reply(&request);
            *count.lock().unwrap() += 1;
            let text = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
                .to_string();
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
            idle_since = Instant::now();
        }
    });
    Server { base_url, requests }
}

impl Server {
    fn requests(&self) -> usize {
        *self.requests.lock().unwrap()
    }
}

fn config(base_url: &str, cache: Option<&Path>) -> JudgeConfig {
    JudgeConfig {
        base_url: base_url.into(),
        model: "local-judge".into(),
        api_key_env: None,
        timeout_secs: 5.0,
        max_retries: 1,
        retry_backoff_ms: 5,
        concurrency: 2,
        cache_dir: cache.map(Path::to_path_buf),
        ..Default::default()
    }
}

/// The model answer in a grading prompt.
fn graded_answer(request: &Value) -> String {
    let prompt = request["messages"][1]["content"].as_str().unwrap();
    prompt
        .lines()
        .find_map(|l| l.strip_prefix("Model answer: "))
        .unwrap()
        .to_string()
}

/// The test judge's rule: an answer is right when its normalized text has an even length.
fn even(answer: &str) -> bool {
    normalize_answer(answer).len().is_multiple_of(2)
}

const GREEN_REPLY: &str = "[Explanation]:\nOne finding missing.\n\n\
    [Clinically Significant Errors]:\n\
    (a) False report of a finding in the candidate: 0.\n\
    (b) Missing a finding present in the reference: 1. Effusion.\n\
    (c) Misidentification of a finding's anatomic location/position: 0.\n\
    (d) Misassessment of the severity of a finding: 0.\n\
    (e) Mentioning a comparison that isn't in the reference: 0.\n\
    (f) Omitting a comparison detailing a change from a prior study: 0.\n\n\
    [Clinically Insignificant Errors]:\n(a) False report of a finding in the candidate: 2.\n\n\
    [Matched Findings]:\n3. Cardiomegaly; clear lungs; no pneumothorax.";

/// Grades by [`even`] (JSON in a Markdown fence, as some servers send), GREEN: 3 matched, 1
/// significant error.
fn even_judge(request: &Value) -> String {
    match request["messages"][0]["content"].as_str().unwrap() {
        GREEN_SYSTEM => GREEN_REPLY.to_string(),
        GRADER_SYSTEM => format!(
            "```json\n{}\n```",
            json!({"correct": even(&graded_answer(request)), "reason": "test"})
        ),
        other => panic!("unexpected system prompt {other}"),
    }
}

fn item<'a>(id: &'a str, kind: AnswerType, truth: &'a str, answer: &'a str) -> JudgeItem<'a> {
    JudgeItem {
        record_id: id,
        answer_type: kind,
        question: "Is there a lesion?",
        truth,
        answer,
    }
}

#[test]
fn closed_open_and_report_answers_are_judged_as_the_paper_does_and_cached() {
    let cache = std::env::temp_dir().join(format!("firempo-judged-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let server = serve(even_judge);
    let items = [
        // The first yes/no word decides: no request.
        item("c1", AnswerType::Closed, "yes", "Yes, there is one."),
        item("c2", AnswerType::Closed, "no", "There is no lesion; yes."),
        item("c3", AnswerType::Closed, "ct", "CT"),
        // No yes/no word (or no exact match): the judge decides (here: by length parity).
        item("c4", AnswerType::Closed, "yes", "There is a lesion"),
        item("c5", AnswerType::Closed, "left", "the left side"),
        item("o1", AnswerType::Open, "left lung", "left lung"),
        item("o2", AnswerType::Open, "left lung", "lung"),
        item(
            "r1",
            AnswerType::Report,
            "Effusion. Cardiomegaly.",
            "Cardiomegaly.",
        ),
    ];
    let client = JudgeClient::new(config(&server.base_url, Some(&cache))).unwrap();
    let judged = judge_answers(&client, &items).unwrap();
    assert_eq!(server.requests(), 5, "c1-c3 need no judge");
    let grade = |correct, by| Judgement::Grade { correct, by };
    assert_eq!(judged[0], grade(true, DecidedBy::YesNoWord));
    assert_eq!(judged[1], grade(true, DecidedBy::YesNoWord));
    assert_eq!(judged[2], grade(true, DecidedBy::ExactMatch));
    for (i, answer) in [
        (3, "There is a lesion"),
        (4, "the left side"),
        (5, "left lung"),
        (6, "lung"),
    ] {
        assert_eq!(judged[i], grade(even(answer), DecidedBy::Judge), "{answer}");
    }
    // Both verdicts occur ("left lung" odd, "lung" even), so an ignored judge would fail.
    assert_ne!(judged[5], judged[6]);
    let green = GreenCounts {
        matched: 3,
        significant_errors: 1,
    };
    assert_eq!(judged[7], Judgement::Green(green));
    assert!((judged[7].score() - 0.75).abs() < 1e-12);

    // A rerun reads every reply from the cache: no request.
    let again = JudgeClient::new(config(&server.base_url, Some(&cache))).unwrap();
    assert_eq!(judge_answers(&again, &items).unwrap(), judged);
    assert_eq!(server.requests(), 5, "the rerun sent nothing");
    std::fs::remove_dir_all(&cache).unwrap();
}

#[test]
fn unreadable_replies_and_a_down_judge_are_errors_naming_the_record() {
    let server = serve(|request| match request["messages"][0]["content"].as_str() {
        Some(GREEN_SYSTEM) => "The candidate report is mostly fine.".to_string(),
        _ => "I think it is right.".to_string(),
    });
    let client = JudgeClient::new(config(&server.base_url, None)).unwrap();
    let open = [item("o-unreadable", AnswerType::Open, "liver", "spleen")];
    let err = format!("{:#}", judge_answers(&client, &open).unwrap_err());
    assert!(
        err.contains("o-unreadable") && err.contains("I think it is right"),
        "{err}"
    );
    let report = [item(
        "r-unreadable",
        AnswerType::Report,
        "Effusion.",
        "Normal.",
    )];
    let err = format!("{:#}", judge_answers(&client, &report).unwrap_err());
    assert!(
        err.contains("r-unreadable")
            && err.contains("Clinically Significant Errors")
            && err.contains("mostly fine"),
        "{err}"
    );
    // Nothing listens on port 9 (discard): a clear error with the URL and the record.
    let down = JudgeClient::new(config("http://127.0.0.1:9/v1", None)).unwrap();
    let err = format!("{:#}", judge_answers(&down, &open).unwrap_err());
    assert!(
        err.contains("127.0.0.1:9") && err.contains("o-unreadable"),
        "{err}"
    );
}

/// One SFT step of the demo model on a tiny synthetic set: a model directory to evaluate.
fn tiny_model(setup: &crate::common::TinySetup) -> std::path::PathBuf {
    SftStage {
        records: setup.root.join("train.jsonl"),
        out: setup.dir.join("sft"),
        model: ModelSource::Demo,
        limit: None,
        freeze_vision: true,
        lora: None,
        trainer: TrainerConfig {
            steps: 1,
            micro_batch_size: 4,
            progress: false,
            ..TrainerConfig::default()
        },
        resume: false,
        merge: false,
        dtype: Default::default(),
        prompt_format: None,
    }
    .run::<B>(Default::default())
    .unwrap()
}

fn eval(
    setup: &crate::common::TinySetup,
    model: &Path,
    out: &str,
    judge: Option<JudgeConfig>,
) -> EvalReport {
    EvalStage {
        records: setup.root.join("test.jsonl"),
        model: model.to_path_buf(),
        out: setup.dir.join(out),
        limit: None,
        batch: 8,
        max_new_tokens: 6,
        corruption: CorruptionConfig::default(),
        finding_vocabulary: None,
        dtype: Default::default(),
        prompt_format: None,
        judge,
        sampling: AnswerSampling {
            samples: 3,
            temperature: 0.7,
            top_p: 0.95,
            seed: 1,
        },
        devices: Default::default(),
    }
    .run::<B>(Default::default())
    .unwrap()
}

fn predictions(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// `--samples 3 --temperature 0.7 --top-p 0.95` with a judge: each metric is the mean of the
/// three samples' own scores (recomputed here from `predictions.jsonl`), the samples differ,
/// the same seed gives the same answers and report, and the rerun's judge replies all come from
/// the cache.
#[test]
fn eval_samples_average_their_metrics_and_rerun_from_the_judge_cache() {
    let _serial = crate::common::exclusive();
    let setup = crate::common::tiny_setup("eval-judge");
    let model = tiny_model(&setup);
    let server = serve(even_judge);
    let cache = setup.dir.join("judge-cache");
    let judge = config(&server.base_url, Some(&cache));
    let report = eval(&setup, &model, "eval-a", Some(judge.clone()));
    let sent = server.requests();
    assert!(sent > 0, "open answers are always judged");

    let rows = predictions(&setup.dir.join("eval-a"));
    let n_records = rows.len() / 3;
    assert_eq!(rows.len(), 3 * n_records);
    assert_eq!(report.per_sample.len(), 3);
    let mut per_sample: Vec<[f64; 3]> = Vec::new(); // closed_acc, open_recall, open_acc
    for s in 0..3 {
        let sample: Vec<&Value> = rows.iter().filter(|r| r["sample"] == s).collect();
        assert_eq!(sample.len(), n_records);
        let of = |kind: &str| -> Vec<&Value> {
            sample
                .iter()
                .copied()
                .filter(|r| r["answer_type"] == kind)
                .collect()
        };
        let text = |r: &Value, k: &str| r[k].as_str().unwrap().to_string();
        // Closed: the rule where it decides, else the test judge's rule.
        let closed: Vec<f64> = of("closed")
            .iter()
            .map(|r| {
                let (answer, truth) = (text(r, "answer"), text(r, "truth"));
                let right = match firempo::eval::closed_rule(&answer, &truth) {
                    Some(right) => right,
                    None => even(&answer),
                };
                assert_eq!(r["judgement"]["grade"]["correct"], right, "{r}");
                100.0 * f64::from(u8::from(right))
            })
            .collect();
        let open = of("open");
        let pairs: Vec<(String, String)> = open
            .iter()
            .map(|r| (text(r, "answer"), text(r, "truth")))
            .collect();
        let open_acc: Vec<f64> = pairs
            .iter()
            .map(|(a, _)| 100.0 * f64::from(u8::from(even(a))))
            .collect();
        per_sample.push([
            mean(&closed),
            100.0 * mean_open_recall(&pairs).unwrap(),
            mean(&open_acc),
        ]);
        assert_eq!(report.per_sample[s]["open_acc"], per_sample[s][2]);
    }
    for (k, metric) in ["closed_acc", "open_recall", "open_acc"].iter().enumerate() {
        let expected = mean(&per_sample.iter().map(|m| m[k]).collect::<Vec<_>>());
        assert!(
            (report.metrics[*metric] - expected).abs() < 1e-9,
            "{metric}: {} vs the mean of the samples {expected}",
            report.metrics[*metric]
        );
    }
    // GREEN: the test judge's 3 matched, 1 error on every report → 75.
    assert!(
        (report.metrics["green"] - 75.0).abs() < 1e-9,
        "{:?}",
        report.metrics
    );
    assert_eq!(report.labels["open_recall"], "open_recall (LLaVA-Med)");
    assert_eq!(report.labels["open_acc"], "open_acc (judge)");
    // The three samples are not the same answers (sampling, not greedy three times).
    let answers = |s: i64| -> Vec<String> {
        rows.iter()
            .filter(|r| r["sample"] == s)
            .map(|r| r["answer"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(answers(0) != answers(1) || answers(1) != answers(2));

    // Same seed: the same answers and report; the judge's replies come from the cache.
    let again = eval(&setup, &model, "eval-b", Some(judge));
    assert_eq!(server.requests(), sent, "the rerun sent no request");
    assert_eq!(again.metrics, report.metrics);
    let rerun = predictions(&setup.dir.join("eval-b"));
    assert_eq!(rerun, rows);
    std::fs::remove_dir_all(&setup.dir).ok();
}
