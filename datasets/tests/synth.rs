//! The synthetic benchmark: deterministic under a seed, balanced so priors fail, answers consistent
//! with the drawn masks, lesions visible but subtle.

mod common;

use std::collections::BTreeMap;

use common::TempDir;
use firempo_datasets::synth::{self, SynthConfig};
use firempo_datasets::{load_image, read_jsonl, BadRecordPolicy, Mask, Record, Split};

fn small_config(seed: u64) -> SynthConfig {
    SynthConfig {
        seed,
        n_train: 120,
        n_val: 12,
        n_test: 24,
        ..Default::default()
    }
}

fn read_all(dir: &std::path::Path) -> Vec<(String, u64)> {
    let mut files = Vec::new();
    for sub in ["", "images", "masks"] {
        let mut names: Vec<_> = std::fs::read_dir(dir.join(sub))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect();
        names.sort();
        for path in names {
            let name = path.strip_prefix(dir).unwrap().display().to_string();
            // A hash keeps assertion failures readable.
            let bytes = std::fs::read(&path).unwrap();
            let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
                (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
            });
            files.push((name, hash));
        }
    }
    files
}

#[test]
fn same_seed_gives_identical_files_and_other_seeds_differ() {
    let (a, b, c) = (
        TempDir::new("synth-a"),
        TempDir::new("synth-b"),
        TempDir::new("synth-c"),
    );
    let config = SynthConfig {
        n_train: 10,
        n_val: 4,
        n_test: 4,
        ..small_config(5)
    };
    let summary = synth::generate(&config, a.path()).unwrap();
    synth::generate(&config, b.path()).unwrap();
    synth::generate(
        &SynthConfig {
            seed: 6,
            ..config.clone()
        },
        c.path(),
    )
    .unwrap();
    let (fa, fb, fc) = (read_all(a.path()), read_all(b.path()), read_all(c.path()));
    assert_eq!(
        fa.len(),
        4 + 2 * 18,
        "3 JSONL + synth.json + 18 images + 18 masks"
    );
    assert_eq!(fa, fb);
    assert_ne!(fa, fc);
    assert_eq!(summary.splits[0].images, 10);
    assert_eq!(summary.splits[1].split, Split::Val);
}

#[test]
fn splits_are_balanced_and_answers_match_masks() {
    let dir = TempDir::new("synth-balance");
    let summary = synth::generate(&small_config(11), dir.path()).unwrap();
    let train = &summary.splits[0];
    assert_eq!((train.images, train.with_lesions), (120, 60));
    assert_eq!((train.left, train.right), (30, 30));
    assert_eq!(train.zones, [20, 20, 20]);
    assert_eq!(train.counts[0], 60);
    assert_eq!(train.counts[1..].iter().sum::<usize>(), 60);
    // 60 lesion-free images × 3 records (presence, count, report) + 60 × 7.
    assert_eq!(train.records, 60 * 3 + 60 * 7);

    let records =
        read_jsonl::<Record>(&dir.path().join(&train.records_path), BadRecordPolicy::Stop)
            .unwrap()
            .items;
    let mut by_kind: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for r in &records {
        let kind = r.meta["question_kind"].as_str().unwrap().to_string();
        *by_kind
            .entry(kind)
            .or_default()
            .entry(r.answer.clone())
            .or_default() += 1;
    }
    assert_eq!(by_kind["presence"]["yes"], 60);
    assert_eq!(by_kind["presence"]["no"], 60);
    assert_eq!(by_kind["side"]["left"], 30);
    assert_eq!(by_kind["side"]["right"], 30);
    assert_eq!(by_kind["count"]["0"], 60);

    for r in records.iter().filter(|r| r.meta["question_kind"] == "side") {
        let image = load_image(&r.image_path(dir.path())).unwrap();
        assert_eq!((image.width(), image.height()), (64, 64));
        let mask = Mask::from_png(&r.mask_png_path(dir.path()).unwrap(), 64, 64).unwrap();
        assert!(!mask.is_empty(), "{}", r.id);
        let (mut sum, mut n) = (0.0, 0.0);
        for y in 0..64 {
            for x in 0..64 {
                if mask.contains(x, y) {
                    sum += x as f64;
                    n += 1.0;
                }
            }
        }
        // Radiological convention: the patient's left lung is on the image's right.
        let on_image_right = sum / n > 32.0;
        assert_eq!(on_image_right, r.answer == "left", "{}", r.id);
    }
    for r in records
        .iter()
        .filter(|r| r.meta["question_kind"] == "presence")
    {
        let mask = Mask::from_png(&r.mask_png_path(dir.path()).unwrap(), 64, 64).unwrap();
        assert_eq!(mask.is_empty(), r.answer == "no", "{}", r.id);
    }
    let report = records
        .iter()
        .find(|r| r.meta["question_kind"] == "report")
        .unwrap();
    assert_eq!(report.mask, None, "reports use whole-image noise");
}

#[test]
fn global_brightness_does_not_give_presence_away() {
    let dir = TempDir::new("synth-prior");
    let summary = synth::generate(&small_config(3), dir.path()).unwrap();
    let path = dir.path().join(&summary.splits[0].records_path);
    let records = read_jsonl::<Record>(&path, BadRecordPolicy::Stop)
        .unwrap()
        .items;
    let means: Vec<(f64, bool)> = records
        .iter()
        .filter(|r| r.meta["question_kind"] == "presence")
        .map(|r| {
            let image = load_image(&r.image_path(dir.path())).unwrap().to_luma8();
            let mean = image.pixels().map(|p| p[0] as f64).sum::<f64>() / 4096.0;
            (mean, r.answer == "yes")
        })
        .collect();
    assert_eq!(means.len(), 120);
    // The best threshold on the image mean classifies presence at most a little above chance:
    // anatomy varies more between images than a few-pixel lesion adds.
    let best = means
        .iter()
        .map(|&(t, _)| {
            let correct = means.iter().filter(|&&(m, yes)| (m > t) == yes).count();
            correct.max(means.len() - correct)
        })
        .max()
        .unwrap();
    assert!(best < 84, "mean brightness separates presence: {best}/120");
}

#[test]
fn bad_config_names_the_field() {
    let dir = TempDir::new("synth-bad");
    let config = SynthConfig {
        max_lesions: 4,
        ..Default::default()
    };
    let err = synth::generate(&config, dir.path()).unwrap_err();
    assert!(err.to_string().contains("max_lesions"), "{err}");
}
