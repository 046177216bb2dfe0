//! `firempo pairs` with the rule editor and with the judge editor: the rule editor corrects the
//! model's wrong closed answers; a judge that cannot be reached fails each sample with the
//! reason in `pair_failures.jsonl` instead of stopping the run.

use firempo::stages::pairs::PairsStage;
use firempo_datasets::{write_jsonl, AnswerType, JudgeConfig, Sample};

/// The opposite of every yes/no answer, as a model that is always wrong would give.
fn wrong_samples(setup: &crate::common::TinySetup) -> Vec<Sample> {
    setup
        .records
        .iter()
        .filter(|r| r.answer_type == AnswerType::Closed && (r.answer == "yes" || r.answer == "no"))
        .map(|r| Sample {
            record_id: r.id.clone(),
            question: r.question.clone(),
            answer: if r.answer == "yes" { "no" } else { "yes" }.into(),
            model: Some("test".into()),
            meta: Default::default(),
        })
        .collect()
}

fn stage(setup: &crate::common::TinySetup, out: &str, judge: Option<JudgeConfig>) -> PairsStage {
    PairsStage {
        records: setup.root.join("train.jsonl"),
        samples: setup.dir.join("samples.jsonl"),
        out: setup.dir.join(out),
        corruption: None,
        previews: false,
        judge,
    }
}

#[test]
fn rule_editor_corrects_and_an_unreachable_judge_is_reported_per_sample() {
    let setup = crate::common::tiny_setup("pairs");
    let samples = wrong_samples(&setup);
    assert!(samples.len() >= 4, "{} presence samples", samples.len());
    write_jsonl(&setup.dir.join("samples.jsonl"), &samples).unwrap();

    let rule = stage(&setup, "rule", None).run().unwrap();
    assert_eq!((rule.pairs, rule.skipped), (samples.len(), 0));
    assert_eq!(rule.branches, [("corrected".to_string(), samples.len())]);

    // Port 9 (discard) on localhost: nothing listens, connections are refused at once.
    let judge = JudgeConfig {
        base_url: "http://127.0.0.1:9/v1".into(),
        api_key_env: None,
        max_retries: 0,
        timeout_secs: 5.0,
        // Every sample's failure is listed (the circuit breaker has its own test).
        max_consecutive_failures: 0,
        ..JudgeConfig::default()
    };
    let judged = stage(&setup, "judge", Some(judge)).run().unwrap();
    assert_eq!((judged.pairs, judged.skipped), (0, samples.len()));
    let failures = std::fs::read_to_string(setup.dir.join("judge/pair_failures.jsonl")).unwrap();
    assert_eq!(failures.lines().count(), samples.len());
    assert!(failures.contains("127.0.0.1:9"), "{failures}");
    std::fs::remove_dir_all(&setup.dir).ok();
}
