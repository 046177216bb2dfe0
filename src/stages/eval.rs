//! `firempo eval`: answers the test records with a model and scores them: closed accuracy, open
//! recall, report BLEU-4 / ROUGE-L / finding F1, and visual sensitivity (how often the answer
//! changes, and how much its log-probability drops, when the lesion is corrupted).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use firempo_datasets::{
    write_corruption, write_jsonl, AnswerType, BadRecordPolicy, CorruptionConfig, Mask, Record,
};
use firempo_losses::logps::{masked_sum, token_log_probs};
use firempo_models::Vlm;
use serde::{Deserialize, Serialize};

use super::data::read_records;
use super::sample::answer_questions;
use crate::backend::BackendTask;
use crate::eval::{
    closed_accuracy, corpus_bleu, corpus_rouge_l, finding_scores, mean_open_recall,
    visual_sensitivity, BleuSmoothing, FindingVocabulary, SensitivityRecord,
};
use crate::pipeline::batch::scoring_batch;
use crate::pipeline::model_dir::load_model;
use crate::pipeline::processor::Processor;

/// Settings of the evaluation stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalStage {
    /// Test records.
    pub records: PathBuf,
    /// The model directory.
    pub model: PathBuf,
    /// Output folder: `eval.json`, `predictions.jsonl`, `corrupted/`.
    pub out: PathBuf,
    /// Evaluate at most this many records.
    pub limit: Option<usize>,
    /// Prompts decoded together.
    pub batch: usize,
    /// Longest answer in tokens.
    pub max_new_tokens: usize,
    /// Lesion corruption for the visual-sensitivity probe.
    pub corruption: CorruptionConfig,
}

/// Scores of one model (percentages, except the log-prob drop in nats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Metric name → value.
    pub metrics: BTreeMap<String, f64>,
    /// Records evaluated per answer type.
    pub counts: BTreeMap<String, usize>,
}

/// Metric names in report order.
pub const EVAL_METRICS: [&str; 8] = [
    "closed_acc",
    "open_recall",
    "bleu4",
    "rouge_l",
    "finding_f1",
    "answer_change",
    "logp_drop",
    "avg",
];

/// One prediction line of `predictions.jsonl`.
#[derive(Debug, Clone, Serialize)]
struct Prediction<'a> {
    record_id: &'a str,
    answer_type: AnswerType,
    question: &'a str,
    truth: &'a str,
    answer: &'a str,
    corrupted_answer: &'a str,
    logp_clean: f64,
    logp_corrupted: f64,
}

/// Writes one corrupted copy per distinct image (seeded by the image path, so reruns and other
/// models see the same noise); returns the corrupted path of each record.
fn corrupted_images(
    records: &[Record],
    root: &Path,
    config: &CorruptionConfig,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut done: HashMap<PathBuf, PathBuf> = HashMap::new();
    records
        .iter()
        .map(|record| {
            let image = record.image_path(root);
            if let Some(path) = done.get(&image) {
                return Ok(path.clone());
            }
            let key = record.image.display().to_string();
            let target = out
                .join("corrupted")
                .join(format!("{}.png", key.replace(['/', '\\'], "_")));
            let mask = match &record.mask {
                Some(source) => {
                    let (width, height) = image::image_dimensions(&image)
                        .with_context(|| format!("reading {}", image.display()))?;
                    Some(Mask::load(source, root, width, height)?)
                }
                None => None,
            };
            write_corruption(&image, mask.as_ref(), config, &key, &target, None)?;
            done.insert(image, target.clone());
            Ok(target)
        })
        .collect()
}

/// Summed log-prob of each answer under each image: `[(logp | clean), (logp | corrupted)]`.
fn answer_logps<B: Backend>(
    model: &Vlm<B>,
    processor: &Processor,
    questions: &[&str],
    answers: &[&str],
    images: [&[&Path]; 2],
    batch: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<[f64; 2]>> {
    let mut out = Vec::with_capacity(questions.len());
    for start in (0..questions.len()).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(questions.len());
        let mut prompts = Vec::new();
        let mut replies = Vec::new();
        let mut paths = Vec::new();
        for side in images {
            for i in start..end {
                prompts.push(processor.prompt_ids(questions[i])?);
                replies.push(vec![processor.answer_ids(answers[i])?]);
                paths.push(side[i]);
            }
        }
        let pixels = processor.pixels::<B>(&paths, device)?;
        let batch = scoring_batch(
            &prompts,
            &replies,
            Some(pixels),
            processor.special.pad,
            device,
        );
        let logits = model.score_answers(batch.input)?; // [2n, 1, T, V]
        let [n2, _, t, v] = logits.dims();
        let mask = batch.answer_mask.reshape([n2, t]);
        let logps = masked_sum(
            token_log_probs(
                logits.reshape([n2, t, v]),
                batch.labels.reshape([n2, t]),
                mask.clone(),
            ),
            mask,
        );
        let values: Vec<f64> = logps
            .into_data()
            .convert::<f64>()
            .to_vec()
            .expect("f64 values");
        let n = end - start;
        out.extend((0..n).map(|i| [values[i], values[n + i]]));
    }
    Ok(out)
}

impl BackendTask for EvalStage {
    type Output = EvalReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<EvalReport> {
        let data = read_records(&self.records, BadRecordPolicy::Skip, self.limit)?;
        let (model, processor) = load_model::<B::InnerBackend>(&self.model, &device)?;
        let records = &data.records;
        let clean: Vec<PathBuf> = records.iter().map(|r| r.image_path(&data.root)).collect();
        let corrupted = corrupted_images(records, &data.root, &self.corruption, &self.out)?;
        let clean_refs: Vec<&Path> = clean.iter().map(PathBuf::as_path).collect();
        let corrupted_refs: Vec<&Path> = corrupted.iter().map(PathBuf::as_path).collect();
        let questions: Vec<&str> = records.iter().map(|r| r.question.as_str()).collect();
        let (batch, max_new) = (self.batch, self.max_new_tokens);
        let answers = answer_questions(
            &model,
            &processor,
            &questions,
            &clean_refs,
            batch,
            max_new,
            &device,
        )?;
        let corrupted_answers = answer_questions(
            &model,
            &processor,
            &questions,
            &corrupted_refs,
            batch,
            max_new,
            &device,
        )?;
        let answer_refs: Vec<&str> = answers.iter().map(String::as_str).collect();
        let logps = answer_logps(
            &model,
            &processor,
            &questions,
            &answer_refs,
            [&clean_refs, &corrupted_refs],
            batch,
            &device,
        )?;

        let predictions: Vec<Prediction> = records
            .iter()
            .enumerate()
            .map(|(i, r)| Prediction {
                record_id: &r.id,
                answer_type: r.answer_type,
                question: &r.question,
                truth: &r.answer,
                answer: &answers[i],
                corrupted_answer: &corrupted_answers[i],
                logp_clean: logps[i][0],
                logp_corrupted: logps[i][1],
            })
            .collect();
        write_jsonl(&self.out.join("predictions.jsonl"), &predictions)?;
        let report = score(&predictions)?;
        std::fs::write(
            self.out.join("eval.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        Ok(report)
    }
}

/// Aggregates predictions into the report's metrics.
fn score(predictions: &[Prediction]) -> anyhow::Result<EvalReport> {
    let of_type = |kind: AnswerType| -> Vec<(&str, &str)> {
        predictions
            .iter()
            .filter(|p| p.answer_type == kind)
            .map(|p| (p.answer, p.truth))
            .collect()
    };
    let (closed, open, reports) = (
        of_type(AnswerType::Closed),
        of_type(AnswerType::Open),
        of_type(AnswerType::Report),
    );
    let mut metrics = BTreeMap::new();
    let mut headline = Vec::new();
    if !closed.is_empty() {
        let value = 100.0 * closed_accuracy(&closed)?;
        metrics.insert("closed_acc".to_string(), value);
        headline.push(value);
    }
    if !open.is_empty() {
        let value = 100.0 * mean_open_recall(&open)?;
        metrics.insert("open_recall".to_string(), value);
        headline.push(value);
    }
    if !reports.is_empty() {
        metrics.insert(
            "bleu4".into(),
            100.0 * corpus_bleu(&reports, BleuSmoothing::None)?,
        );
        metrics.insert("rouge_l".into(), 100.0 * corpus_rouge_l(&reports)?);
        let findings = 100.0 * finding_scores(&FindingVocabulary::default(), &reports)?.f1;
        metrics.insert("finding_f1".into(), findings);
        headline.push(findings);
    }
    if !headline.is_empty() {
        metrics.insert(
            "avg".into(),
            headline.iter().sum::<f64>() / headline.len() as f64,
        );
    }
    let sensitivity: Vec<SensitivityRecord> = predictions
        .iter()
        .map(|p| SensitivityRecord {
            clean_answer: p.answer.to_string(),
            corrupted_answer: p.corrupted_answer.to_string(),
            clean_logp_clean_image: p.logp_clean,
            clean_logp_corrupted_image: p.logp_corrupted,
        })
        .collect();
    let sensitivity = visual_sensitivity(&sensitivity)?;
    metrics.insert(
        "answer_change".into(),
        100.0 * sensitivity.answer_change_rate,
    );
    metrics.insert("logp_drop".into(), sensitivity.mean_logp_drop);
    let counts = [
        ("closed", closed.len()),
        ("open", open.len()),
        ("report", reports.len()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    Ok(EvalReport { metrics, counts })
}
