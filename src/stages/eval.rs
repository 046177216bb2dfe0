//! `firempo eval`: answers the test records with a model and scores them: closed accuracy, open
//! recall, report BLEU-4 / ROUGE-L / finding F1, and visual sensitivity (how often the answer
//! changes, and how much its log-probability drops, when the lesion is corrupted). With a judge
//! (`--judge-url`) also the paper's metrics: closed accuracy with the judge deciding what no
//! yes/no word does, judged open accuracy, and a GREEN-style report score
//! ([`crate::eval::judge`]). With `--samples N` every question is answered N times by sampling
//! and every metric is the mean over the N answers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use burn::tensor::backend::{AutodiffBackend, Backend};
use firempo_datasets::{
    corrupt_records, write_jsonl, AnswerType, BadRecordPolicy, CorruptionConfig, DatasetError,
    JudgeClient, JudgeConfig, Location, MaskSource, Record,
};
use firempo_losses::logps::{masked_sum, token_log_probs};
use firempo_models::precision::WeightDType;
use firempo_models::{GenerationConfig, Sampling};
use serde::{Deserialize, Serialize};

use super::data::{read_records, RecordFile};
use super::decoders::Decoders;
use super::sample::{answer_prompts_with, record_prompts};
use crate::backend::BackendTask;
use crate::eval::judge::{judge_answers, JudgeItem, Judgement};
use crate::eval::{
    closed_accuracy, corpus_bleu, corpus_rouge_l, finding_scores, mean_open_recall,
    visual_sensitivity, BleuSmoothing, FindingVocabulary, SensitivityRecord,
};
use crate::pipeline::batch::scoring_batch;
use crate::pipeline::file_processor::FileProcessor;
use crate::pipeline::image_check::list_some;
use crate::pipeline::model::Model;
use crate::pipeline::model_dir::load_model_in;
use crate::train::DeviceSpec;

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
    /// The words report findings are parsed with, for `finding_f1`: a [`FindingVocabulary`]
    /// JSON file, or `synthetic` for the synthetic benchmark's template. `None`: the synthetic
    /// vocabulary when the records come from `firempo synth` (a `synth.json` beside them), else
    /// no `finding_f1`.
    pub finding_vocabulary: Option<PathBuf>,
    /// Dtype of the decoder projections' frozen base weights (`--dtype`; bf16/f16 need a
    /// backend with half precision). Recorded in the run's identity unless f32.
    #[serde(default, skip_serializing_if = "super::is_f32")]
    pub dtype: WeightDType,
    /// Named prompt format (`--prompt-format`) for a HF checkpoint `model`, overriding its chat
    /// template; `None`: the checkpoint's template (or a model directory's own format).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_format: Option<String>,
    /// An OpenAI-compatible judge (`--judge-url`, the client and cache `firempo pairs` uses) for
    /// the paper's metrics: closed answers without a yes/no word, open accuracy, GREEN-style
    /// report scores. `None`: the rule metrics only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub judge: Option<JudgeConfig>,
    /// How many answers per question, and how they are drawn (default: one greedy answer).
    #[serde(default)]
    pub sampling: AnswerSampling,
    /// Devices that generate the answers, each a share of the batches (`--devices`); the
    /// answers and metrics do not depend on it.
    #[serde(default, skip_serializing_if = "DeviceSpec::is_single")]
    pub devices: DeviceSpec,
}

/// How each question is answered: once greedily (the default), or `samples` times by
/// temperature + nucleus (top-p) sampling; every metric is then the mean over the samples.
///
/// Sample `s` draws with generator seed `seed·2³² + s·2²⁰` (plus the decoding batch's index), the
/// same for a record's clean and corrupted image: the visual-sensitivity probe compares answers
/// drawn with the same random numbers, so `answer_change` counts what the image changes, though
/// sampling can still amplify a small change of the distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnswerSampling {
    /// Answers per question (`--samples`), ≥ 1.
    pub samples: usize,
    /// Softmax temperature (`--temperature`); 0 = greedy.
    pub temperature: f64,
    /// Nucleus mass (`--top-p`), in (0, 1].
    pub top_p: f64,
    /// Seed of the sampler (`--seed`).
    pub seed: u64,
}

impl Default for AnswerSampling {
    fn default() -> Self {
        Self {
            samples: 1,
            temperature: 0.0,
            top_p: 1.0,
            seed: 0,
        }
    }
}

impl AnswerSampling {
    /// Refuses settings that do not define N answers per question, naming the flag and the fix.
    pub fn validate(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.samples >= 1,
            "--samples 0: every question needs at least one answer; fix: --samples 1 (the \
             default, greedy) or more with --temperature > 0"
        );
        anyhow::ensure!(
            self.temperature.is_finite() && self.temperature >= 0.0,
            "--temperature {}: must be a number >= 0 (0 = greedy); fix: e.g. --temperature 0.7",
            self.temperature
        );
        anyhow::ensure!(
            self.samples == 1 || self.temperature > 0.0,
            "--samples {} with --temperature {}: greedy decoding gives the same answer {} times; \
             fix: sample with --temperature > 0 (e.g. 0.7), or --samples 1",
            self.samples,
            self.temperature,
            self.samples
        );
        anyhow::ensure!(
            self.top_p > 0.0 && self.top_p <= 1.0,
            "--top-p {}: the nucleus mass must be in (0, 1]; fix: e.g. --top-p 0.95 (1 = no \
             nucleus cut)",
            self.top_p
        );
        Ok(())
    }

    /// Generation settings of sample `sample`.
    fn generation(&self, sample: usize, max_new_tokens: usize, eos: u32) -> GenerationConfig {
        let sampling = if self.temperature > 0.0 {
            Sampling::TopP {
                temperature: self.temperature,
                top_p: self.top_p,
            }
        } else {
            Sampling::Greedy
        };
        GenerationConfig {
            max_new_tokens,
            sampling,
            seed: (self.seed << 32) ^ ((sample as u64) << 20),
            stop_token_ids: vec![eos],
        }
    }
}

/// Scores of one model (percentages, except the log-prob drop in nats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalReport {
    /// Metric name → value.
    pub metrics: BTreeMap<String, f64>,
    /// Records evaluated per answer type.
    pub counts: BTreeMap<String, usize>,
    /// The metrics `avg` is the mean of (those measured among closed_acc, open_recall,
    /// finding_f1).
    #[serde(default)]
    pub avg_of: Vec<String>,
    /// Why a metric is missing (e.g. `finding_f1` without a declared vocabulary), and how the
    /// answers were drawn and scored.
    #[serde(default)]
    pub notes: Vec<String>,
    /// Metric name → the label tables show (what it measures: [`metric_label`]).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// With `--samples N > 1`: each sample's metrics (the report's are their mean).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub per_sample: Vec<BTreeMap<String, f64>>,
}

/// The label a table shows for `metric`, saying which metric it is: the paper's open accuracy
/// (`open_acc (judge)`) is not LLaVA-Med's token recall (`open_recall (LLaVA-Med)`), and closed
/// accuracy with a judge lets it decide the answers without a yes/no word. `judged`: the
/// evaluation had a judge.
pub fn metric_label(metric: &str, judged: bool) -> String {
    match (metric, judged) {
        ("closed_acc", true) => "closed_acc (yes/no word, else judge)",
        ("closed_acc", false) => "closed_acc (yes/no word)",
        ("open_recall", _) => "open_recall (LLaVA-Med)",
        ("open_acc", _) => "open_acc (judge)",
        ("green", _) => "green (judge)",
        (other, _) => other,
    }
    .to_string()
}

/// The value of `EvalStage::finding_vocabulary` that selects the synthetic benchmark's words.
pub const SYNTHETIC_VOCABULARY: &str = "synthetic";

/// The finding vocabulary of an evaluation: the one given, else the synthetic benchmark's when
/// the records declare they are synthetic (`firempo synth` writes `synth.json` beside them),
/// else none (no `finding_f1`: its parser only knows the template it was written for).
fn finding_vocabulary(
    given: Option<&Path>,
    records_root: &Path,
) -> anyhow::Result<Option<FindingVocabulary>> {
    let Some(path) = given else {
        return Ok(records_root
            .join("synth.json")
            .is_file()
            .then(FindingVocabulary::default));
    };
    if path == Path::new(SYNTHETIC_VOCABULARY) {
        return Ok(Some(FindingVocabulary::default()));
    }
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the finding vocabulary {}", path.display()))?;
    let vocabulary: FindingVocabulary = serde_json::from_str(&text).with_context(|| {
        format!(
            "{}: not a finding vocabulary; fix: write {{\"sides\": [...], \"zones\": [...], \
             \"lesion_words\": [...], \"negations\": [...]}}",
            path.display()
        )
    })?;
    anyhow::ensure!(
        !vocabulary.sides.is_empty() && !vocabulary.zones.is_empty(),
        "{}: `sides` and `zones` must not be empty (a finding is a side word next to a zone word)",
        path.display()
    );
    Ok(Some(vocabulary))
}

/// Metric names in report order (`open_acc` and `green` need a judge).
pub const EVAL_METRICS: [&str; 10] = [
    "closed_acc",
    "open_recall",
    "open_acc",
    "bleu4",
    "rouge_l",
    "finding_f1",
    "green",
    "answer_change",
    "logp_drop",
    "avg",
];

/// The metrics `avg` averages, when measured: one headline number per answer type.
pub const AVG_METRICS: [&str; 3] = ["closed_acc", "open_recall", "finding_f1"];

/// What `avg` averages with a judge: the paper's metric of each answer type.
pub const JUDGED_AVG_METRICS: [&str; 3] = ["closed_acc", "open_acc", "green"];

/// One prediction line of `predictions.jsonl` (one per record and sample).
#[derive(Debug, Clone, Serialize)]
struct Prediction<'a> {
    /// Which of the `--samples` answers (0 for the greedy one).
    sample: usize,
    record_id: &'a str,
    answer_type: AnswerType,
    question: &'a str,
    truth: &'a str,
    answer: &'a str,
    corrupted_answer: &'a str,
    logp_clean: f64,
    logp_corrupted: f64,
    /// With a judge: the grade (and what decided it) or the GREEN-style counts.
    #[serde(skip_serializing_if = "Option::is_none")]
    judgement: Option<Judgement>,
}

/// Refuses the evaluation when a record's image or mask file is missing, listing them: a
/// silently smaller test set would make models incomparable, and a record without its mask
/// would be probed with another record's corruption or none.
fn check_record_files(data: &RecordFile, records_path: &Path) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for (record, &line) in data.records.iter().zip(&data.lines) {
        let mut files = vec![("image", record.image_path(&data.root))];
        if let Some(MaskSource::Png { path }) = &record.mask {
            files.push(("mask.path", data.root.join(path)));
        }
        for (field, file) in files {
            if !file.is_file() {
                missing.push(DatasetError::MissingImage {
                    at: Location::at_line(records_path, line),
                    record: record.id.clone(),
                    field: field.into(),
                    file,
                });
            }
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let missing: Vec<String> = missing.iter().map(|e| e.to_string()).collect();
    anyhow::bail!(
        "{} file(s) that test records need are missing, so nothing was evaluated:{}",
        missing.len(),
        list_some(&missing)
    )
}

/// Writes one corrupted copy per record (its own mask: SLAKE masks belong to questions, not
/// images; noise seeded by the record id, so reruns and other models see the same corruption;
/// file names from the record ids, distinct for distinct ids) and `out/corruptions.jsonl`;
/// returns the corrupted path of each record.
fn corrupted_images(
    records: &[Record],
    root: &Path,
    config: &CorruptionConfig,
    out: &Path,
) -> anyhow::Result<Vec<PathBuf>> {
    let corrupted = corrupt_records(records, root, config, out, false, BadRecordPolicy::Stop)
        .context("corrupting the test images for the visual-sensitivity probe")?;
    Ok(corrupted
        .items
        .into_iter()
        .map(|c| c.corrupted_image)
        .collect())
}

/// Summed log-prob of each record's answer under each image: `[(logp | clean), (logp |
/// corrupted)]`, each after its own prompt (`prompts[side]`: a model that reads images at their
/// own resolution gives each image its own image-token count). A non-finite value (a model whose weights hold NaN or infinity) is an error
/// naming the record: averaged, it would read as a score.
#[allow(clippy::too_many_arguments)]
fn answer_logps<B: Backend>(
    model: &Model<B>,
    processor: &FileProcessor,
    records: &[Record],
    prompts: [&[Vec<i64>]; 2],
    answers: &[String],
    images: [&[&Path]; 2],
    batch: usize,
    device: &B::Device,
) -> anyhow::Result<Vec<[f64; 2]>> {
    let n_records = records.len();
    let mut out = Vec::with_capacity(n_records);
    for start in (0..n_records).step_by(batch.max(1)) {
        let end = (start + batch.max(1)).min(n_records);
        let mut replies = Vec::with_capacity(end - start);
        for i in start..end {
            let answer = processor.answer_ids(&answers[i])?;
            for side in prompts {
                processor
                    .check_fits(side[i].len(), answer.len())
                    .with_context(|| format!("scoring the answer to record `{}`", records[i].id))?;
            }
            replies.push(vec![answer]);
        }
        let side_prompts: Vec<Vec<i64>> = prompts
            .iter()
            .flat_map(|side| side[start..end].iter().cloned())
            .collect();
        let side_replies: Vec<Vec<Vec<i64>>> = images
            .iter()
            .flat_map(|_| replies.iter().cloned())
            .collect();
        let paths: Vec<&Path> = images
            .iter()
            .flat_map(|side| side[start..end].iter().copied())
            .collect();
        let pixels = processor.pixels::<B>(&paths, device)?;
        let batch = scoring_batch(&side_prompts, &side_replies, processor.special.pad, device);
        let logits = model.score_answers(&batch.packed, pixels)?; // [2n, 1, T, V]
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
            .map_err(|e| anyhow::anyhow!("reading log-probs back: {e:?}"))?;
        let n = end - start;
        for i in 0..n {
            let pair = [values[i], values[n + i]];
            anyhow::ensure!(
                pair.iter().all(|v| v.is_finite()),
                "record `{}`: the model gives its own answer a log-probability of {} on the clean \
                 image and {} on the corrupted one: its weights or activations are not finite \
                 (a diverged or damaged model); fix: evaluate an earlier checkpoint or retrain",
                records[start + i].id,
                pair[0],
                pair[1]
            );
            out.push(pair);
        }
    }
    Ok(out)
}

impl BackendTask for EvalStage {
    type Output = EvalReport;

    fn run<B: AutodiffBackend>(self, device: B::Device) -> anyhow::Result<EvalReport> {
        self.sampling.validate()?;
        let judge = self
            .judge
            .clone()
            .map(JudgeClient::new)
            .transpose()
            .context("the judge settings (--judge-*)")?;
        let data = read_records(&self.records, BadRecordPolicy::Skip, self.limit)?;
        let vocabulary = finding_vocabulary(self.finding_vocabulary.as_deref(), &data.root)?;
        check_record_files(&data, &self.records)?;
        let (model, processor) = load_model_in::<B::InnerBackend>(
            &self.model,
            self.prompt_format.as_deref(),
            self.dtype,
            &device,
        )?;
        let records = &data.records;
        let (batch, max_new) = (self.batch, self.max_new_tokens);
        let clean: Vec<PathBuf> = records.iter().map(|r| r.image_path(&data.root)).collect();
        let corrupted = corrupted_images(records, &data.root, &self.corruption, &self.out)?;
        let clean_refs: Vec<&Path> = clean.iter().map(PathBuf::as_path).collect();
        let corrupted_refs: Vec<&Path> = corrupted.iter().map(PathBuf::as_path).collect();
        let prompts = record_prompts(&processor, records, &clean_refs, max_new)?;
        let corrupted_prompts = record_prompts(&processor, records, &corrupted_refs, max_new)?;
        let decoders = Decoders::new(model, &device, &self.devices);
        let (model, device) = decoders.first();
        // Per sample: (clean answers, corrupted answers, log-probs of the clean answers).
        let mut drawn = Vec::with_capacity(self.sampling.samples);
        for sample in 0..self.sampling.samples {
            let config = self
                .sampling
                .generation(sample, max_new, processor.special.eos as u32);
            let answers =
                answer_prompts_with(&decoders, &processor, &prompts, &clean_refs, batch, &config)?;
            let corrupted_answers = answer_prompts_with(
                &decoders,
                &processor,
                &corrupted_prompts,
                &corrupted_refs,
                batch,
                &config,
            )?;
            let logps = answer_logps(
                model,
                &processor,
                records,
                [&prompts, &corrupted_prompts],
                &answers,
                [&clean_refs, &corrupted_refs],
                batch,
                device,
            )?;
            drawn.push((answers, corrupted_answers, logps));
        }

        let mut predictions: Vec<Prediction> = Vec::new();
        for (sample, (answers, corrupted_answers, logps)) in drawn.iter().enumerate() {
            predictions.extend(records.iter().enumerate().map(|(i, r)| Prediction {
                sample,
                record_id: &r.id,
                answer_type: r.answer_type,
                question: &r.question,
                truth: &r.answer,
                answer: &answers[i],
                corrupted_answer: &corrupted_answers[i],
                logp_clean: logps[i][0],
                logp_corrupted: logps[i][1],
                judgement: None,
            }));
        }
        if let Some(judge) = &judge {
            judge_predictions(judge, &mut predictions)?;
        }
        write_jsonl(&self.out.join("predictions.jsonl"), &predictions)?;
        let per_sample = predictions
            .chunk_by(|a, b| a.sample == b.sample)
            .map(|sample| score(sample, vocabulary.as_ref()))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let report = mean_over_samples(per_sample, &self.sampling, self.judge.as_ref());
        std::fs::write(
            self.out.join("eval.json"),
            serde_json::to_string_pretty(&report)?,
        )?;
        Ok(report)
    }
}

/// Asks the judge about every prediction (closed answers the rules decide send no request) and
/// stores its judgement; a failure is the error, naming the record, the stage and the reply.
fn judge_predictions(judge: &JudgeClient, predictions: &mut [Prediction]) -> anyhow::Result<()> {
    let items: Vec<JudgeItem> = predictions
        .iter()
        .map(|p| JudgeItem {
            record_id: p.record_id,
            answer_type: p.answer_type,
            question: p.question,
            truth: p.truth,
            answer: p.answer,
        })
        .collect();
    let judgements = judge_answers(judge, &items).context(
        "judging the answers (nothing was scored; replies that arrived are cached with \
         --judge-cache, so a rerun asks only the rest)",
    )?;
    for (prediction, judgement) in predictions.iter_mut().zip(judgements) {
        prediction.judgement = Some(judgement);
    }
    Ok(())
}

/// The report of several samples: each metric's mean over the samples that define it (all of
/// them, except `finding_f1` can be undefined in some: then a note says over how many), the
/// per-sample metrics, the labels, and notes on how the answers were drawn and judged.
fn mean_over_samples(
    mut per_sample: Vec<EvalReport>,
    sampling: &AnswerSampling,
    judge: Option<&JudgeConfig>,
) -> EvalReport {
    let n = per_sample.len();
    let mut report = per_sample[0].clone();
    let names: std::collections::BTreeSet<String> = per_sample
        .iter()
        .flat_map(|r| r.metrics.keys().cloned())
        .collect();
    report.metrics = names
        .iter()
        .map(|name| {
            let values: Vec<f64> = per_sample
                .iter()
                .filter_map(|r| r.metrics.get(name).copied())
                .collect();
            if values.len() < n {
                report.notes.push(format!(
                    "{name}: mean over the {} of {n} samples where it is defined",
                    values.len()
                ));
            }
            (
                name.clone(),
                values.iter().sum::<f64>() / values.len() as f64,
            )
        })
        .collect();
    for other in &mut per_sample[1..] {
        for note in other.notes.drain(..) {
            if !report.notes.contains(&note) {
                report.notes.push(note);
            }
        }
    }
    if n > 1 || sampling.temperature > 0.0 {
        report.notes.push(format!(
            "every metric is the mean over {n} sampled answer(s) per question (temperature {}, \
             top-p {}, seed {}); per_sample holds each sample's",
            sampling.temperature, sampling.top_p, sampling.seed
        ));
    }
    report.notes.push(match judge {
        Some(judge) => format!(
            "judge {} at {}: closed answers without a yes/no word (or exact match), open_acc and \
             green are its grades",
            judge.model, judge.base_url
        ),
        None => "no judge: closed_acc counts an answer without a yes/no word (or exact match) \
                 as wrong, and open answers get token recall (open_recall, LLaVA-Med's metric), \
                 not the paper's judged accuracy; pass --judge-url for those"
            .to_string(),
    });
    report.labels = report
        .metrics
        .keys()
        .map(|m| (m.clone(), metric_label(m, judge.is_some())))
        .collect();
    report.per_sample = if n > 1 {
        per_sample.into_iter().map(|r| r.metrics).collect()
    } else {
        Vec::new()
    };
    report
}

/// Aggregates predictions into the report's metrics. `finding_f1` needs a vocabulary, and is
/// left out (with a note) when there is none or when neither the ground truth nor the answers
/// state any finding (F1 is then undefined, not perfect).
fn score(
    predictions: &[Prediction],
    vocabulary: Option<&FindingVocabulary>,
) -> anyhow::Result<EvalReport> {
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
    let mut notes = Vec::new();
    let judged = predictions.iter().all(|p| p.judgement.is_some());
    // Mean judged score (%) of the predictions of one answer type, when judged and present.
    let judged_mean = |kind: AnswerType| -> Option<f64> {
        let scores: Vec<f64> = predictions
            .iter()
            .filter(|p| p.answer_type == kind)
            .filter_map(|p| p.judgement.map(|j| j.score()))
            .collect();
        (judged && !scores.is_empty())
            .then(|| 100.0 * scores.iter().sum::<f64>() / scores.len() as f64)
    };
    if !closed.is_empty() {
        let closed_acc = match judged_mean(AnswerType::Closed) {
            Some(judged) => judged,
            None => 100.0 * closed_accuracy(&closed)?,
        };
        metrics.insert("closed_acc".to_string(), closed_acc);
    }
    if !open.is_empty() {
        metrics.insert("open_recall".to_string(), 100.0 * mean_open_recall(&open)?);
    }
    if let Some(open_acc) = judged_mean(AnswerType::Open) {
        metrics.insert("open_acc".to_string(), open_acc);
    }
    if let Some(green) = judged_mean(AnswerType::Report) {
        metrics.insert("green".to_string(), green);
    }
    if !reports.is_empty() {
        metrics.insert(
            "bleu4".into(),
            100.0 * corpus_bleu(&reports, BleuSmoothing::None)?,
        );
        metrics.insert("rouge_l".into(), 100.0 * corpus_rouge_l(&reports)?);
        match vocabulary {
            None => notes.push(
                "finding_f1 not computed: no finding vocabulary is declared for these records \
                 (the synthetic benchmark declares its own; for other reports pass \
                 --finding-vocabulary FILE.json)"
                    .to_string(),
            ),
            Some(vocabulary) => match finding_scores(vocabulary, &reports)?.f1 {
                Some(f1) => {
                    metrics.insert("finding_f1".into(), 100.0 * f1);
                }
                None => notes.push(
                    "finding_f1 not computed: neither the ground-truth reports nor the answers \
                     state a finding the vocabulary knows (F1 is undefined)"
                        .to_string(),
                ),
            },
        }
    }
    let averaged = if judged {
        JUDGED_AVG_METRICS
    } else {
        AVG_METRICS
    };
    let avg_of: Vec<String> = averaged
        .iter()
        .filter(|m| metrics.contains_key(**m))
        .map(|m| m.to_string())
        .collect();
    if !avg_of.is_empty() {
        let sum: f64 = avg_of.iter().map(|m| metrics[m]).sum();
        metrics.insert("avg".into(), sum / avg_of.len() as f64);
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
    Ok(EvalReport {
        metrics,
        counts,
        avg_of,
        notes,
        labels: BTreeMap::new(),
        per_sample: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use firempo_datasets::{read_jsonl, CorruptedRecord, Split};

    fn record(id: &str, image: &str) -> Record {
        Record {
            id: id.into(),
            image: image.into(),
            question: "Is there a lesion?".into(),
            answer: "yes".into(),
            answer_type: AnswerType::Closed,
            mask: None,
            concept: None,
            split: Split::Test,
            meta: Default::default(),
        }
    }

    #[test]
    fn bad_sampling_flags_are_clear_errors() {
        let ok = AnswerSampling::default();
        ok.validate().unwrap();
        AnswerSampling {
            samples: 4,
            temperature: 0.7,
            top_p: 0.95,
            seed: 3,
        }
        .validate()
        .unwrap();
        let refused = [
            (AnswerSampling { samples: 0, ..ok }, "--samples 0"),
            (
                AnswerSampling {
                    samples: 3,
                    temperature: 0.0,
                    ..ok
                },
                "greedy decoding gives the same answer 3 times",
            ),
            (
                AnswerSampling {
                    temperature: -0.5,
                    ..ok
                },
                "--temperature -0.5",
            ),
            (AnswerSampling { top_p: 0.0, ..ok }, "--top-p 0"),
            (AnswerSampling { top_p: 1.5, ..ok }, "--top-p 1.5"),
        ];
        for (sampling, message) in refused {
            let err = sampling.validate().unwrap_err().to_string();
            assert!(err.contains(message) && err.contains("fix:"), "{err}");
        }
    }

    #[test]
    fn samples_are_averaged_metric_by_metric_with_labels_and_notes() {
        let report = |closed: f64, f1: Option<f64>| EvalReport {
            metrics: [("closed_acc".to_string(), closed)]
                .into_iter()
                .chain(f1.map(|f| ("finding_f1".to_string(), f)))
                .collect(),
            counts: BTreeMap::new(),
            avg_of: Vec::new(),
            notes: Vec::new(),
            labels: BTreeMap::new(),
            per_sample: Vec::new(),
        };
        let sampling = AnswerSampling {
            samples: 3,
            temperature: 0.7,
            top_p: 0.9,
            seed: 0,
        };
        let mean = mean_over_samples(
            vec![
                report(50.0, Some(10.0)),
                report(60.0, None),
                report(100.0, Some(30.0)),
            ],
            &sampling,
            None,
        );
        assert!((mean.metrics["closed_acc"] - 70.0).abs() < 1e-12);
        // finding_f1 undefined in one sample: the mean of the two others, with a note.
        assert!((mean.metrics["finding_f1"] - 20.0).abs() < 1e-12);
        assert!(mean
            .notes
            .iter()
            .any(|n| n.contains("finding_f1: mean over the 2 of 3")));
        assert!(mean.notes.iter().any(|n| n.contains("mean over 3 sampled")));
        assert!(mean.notes.iter().any(|n| n.contains("no judge")));
        assert_eq!(mean.labels["closed_acc"], "closed_acc (yes/no word)");
        assert_eq!(mean.per_sample.len(), 3);
    }

    fn mean_grey(path: &Path) -> f64 {
        let pixels = image::open(path).unwrap().to_luma8();
        pixels.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / pixels.len() as f64
    }

    /// Records `x/y` (image `x/y.png`, dark) and `x_y` (image `x_y.png`, bright): eval's old
    /// per-image naming (`/` → `_`) sent both to `corrupted/x_y.png.png`, the second overwriting
    /// the first. Through eval's own path each record gets its own file holding its own image's
    /// corruption, listed in `corruptions.jsonl`, byte-identical on a rerun (noise keyed by id).
    #[test]
    fn records_whose_old_corrupted_names_collide_get_their_own_files() {
        let dir = std::env::temp_dir().join(format!("firempo-eval-names-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let root = dir.join("data");
        std::fs::create_dir_all(root.join("x")).unwrap();
        for (file, grey) in [("x/y.png", 60u8), ("x_y.png", 200u8)] {
            image::GrayImage::from_pixel(16, 16, image::Luma([grey]))
                .save(root.join(file))
                .unwrap();
        }
        let records = [record("x/y", "x/y.png"), record("x_y", "x_y.png")];
        let config = CorruptionConfig::default();
        let out = dir.join("eval");
        let paths = corrupted_images(&records, &root, &config, &out).unwrap();

        assert_eq!(paths.len(), 2);
        assert_ne!(paths[0], paths[1], "one file per record");
        assert!(paths
            .iter()
            .all(|p| p.is_file() && p.starts_with(out.join("corrupted"))));
        assert!(
            !out.join("corrupted/x_y.png.png").exists(),
            "the old colliding name"
        );
        let (dark, bright) = (mean_grey(&paths[0]), mean_grey(&paths[1]));
        assert!(
            dark < 100.0 && bright > 160.0,
            "each file is its own record's image: {dark} {bright}"
        );
        let listed =
            read_jsonl::<CorruptedRecord>(&out.join("corruptions.jsonl"), BadRecordPolicy::Stop)
                .unwrap()
                .items;
        let listed: Vec<(&str, &Path)> = listed
            .iter()
            .map(|c| (c.record_id.as_str(), c.corrupted_image.as_path()))
            .collect();
        assert_eq!(
            listed,
            [("x/y", paths[0].as_path()), ("x_y", paths[1].as_path())]
        );

        let again = corrupted_images(&records, &root, &config, &dir.join("rerun")).unwrap();
        for (first, second) in paths.iter().zip(&again) {
            assert_eq!(
                std::fs::read(first).unwrap(),
                std::fs::read(second).unwrap()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
