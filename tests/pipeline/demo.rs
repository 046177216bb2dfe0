//! End to end: `firempo demo --quick` on ndarray runs every stage, writes the table and plots,
//! and the same seed gives the same table.

use std::path::PathBuf;

use firempo::backend::{run_on, BackendKind};
use firempo::stages::demo::{demo_methods, Demo, DemoSizes, TABLE_METRICS};

fn run(name: &str) -> (firempo::eval::ResultsTable, Vec<PathBuf>, PathBuf) {
    let out = std::env::temp_dir().join(format!("firempo-demo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let demo = Demo {
        out: out.clone(),
        sizes: DemoSizes::quick(),
        seeds: vec![3],
    };
    let outcome = run_on(BackendKind::Ndarray, demo).expect("quick demo runs");
    (outcome.table, outcome.files, out)
}

#[test]
fn quick_demo_runs_every_stage_and_is_deterministic() {
    let _serial = crate::common::exclusive();
    let (table, files, out) = run("a");
    let methods: Vec<&str> = table.methods().collect();
    assert_eq!(
        methods.len(),
        1 + demo_methods().len(),
        "SFT plus every method: {methods:?}"
    );
    assert_eq!(methods[0], "SFT");
    for method in &methods {
        for metric in TABLE_METRICS {
            let cell = table
                .cell(method, metric)
                .unwrap_or_else(|| panic!("{method}/{metric} missing"));
            assert_eq!(cell.values.len(), 1, "{method}/{metric}: one seed");
            assert!(
                cell.values[0].is_finite(),
                "{method}/{metric} = {:?}",
                cell.values
            );
        }
    }
    for file in &files {
        assert!(
            std::fs::metadata(file)
                .map(|m| m.len() > 0)
                .unwrap_or(false),
            "{} written",
            file.display()
        );
    }
    // Every stage left its inspectable output.
    for path in [
        "seed-3/data/train.jsonl",
        "seed-3/sft/model.mpk",
        "seed-3/samples.jsonl",
        "seed-3/pairs/pairs.jsonl",
        "seed-3/align/fire-mpo/run/metrics.jsonl",
        "seed-3/eval/fire-mpo/predictions.jsonl",
    ] {
        assert!(out.join(path).exists(), "{path} exists");
    }

    let (again, _, _) = run("b");
    assert_eq!(again.to_json(), table.to_json(), "same seed, same table");
}
