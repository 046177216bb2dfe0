//! Adversarial inputs to the dataset crate (issue 9): each case names its input and the error (or
//! result) it expects. Reads that used to loop forever run under a time limit, so a regression
//! fails the case instead of hanging the suite.

mod common;

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::TempDir;
use firempo_datasets::{
    build_pairs, image_dimensions_within, load_image, load_image_within, read_jsonl,
    read_pairs_jsonl, save_png, write_jsonl, AnswerType, BadRecordPolicy, BoxRegion,
    CorruptionConfig, DatasetError, Edit, Editor, Loaded, Mask, MaskSource, PairBranch,
    PairFailure, PairOptions, PairReport, PhraseSpan, PreferencePair, Record, RuleEditor, Sample,
    Split, DEFAULT_MAX_IMAGE_PIXELS,
};
use image::{DynamicImage, GrayImage, Luma};

/// Runs `f` on a thread and fails the case if it takes longer than `seconds` (a hang).
fn within<T: Send + 'static>(seconds: u64, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (send, receive) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = send.send(f());
    });
    receive
        .recv_timeout(Duration::from_secs(seconds))
        .unwrap_or_else(|_| panic!("did not finish within {seconds} s (a hang)"))
}

fn read_samples(path: &Path) -> Result<Loaded<Sample>, DatasetError> {
    let path = path.to_path_buf();
    within(20, move || {
        read_jsonl::<Sample>(&path, BadRecordPolicy::Skip)
    })
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("running mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

const GOOD: &str = r#"{"record_id":"a","question":"q","answer":"yes"}"#;

// Item 1: a path that is not a regular JSONL file.

#[test]
fn a_directory_as_jsonl_is_refused_naming_the_path() {
    let dir = TempDir::new("adv-dir");
    let err = read_samples(dir.path()).unwrap_err();
    assert!(matches!(err, DatasetError::NotAFile { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains(&dir.path().display().to_string())
            && text.contains("is a directory")
            && text.contains("expected a JSONL file"),
        "{text}"
    );
}

#[test]
fn dev_zero_as_jsonl_is_refused() {
    let err = read_samples(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/dev/zero")
            && err.contains("a device")
            && err.contains("expected a JSONL file"),
        "{err}"
    );
}

#[test]
fn a_fifo_as_jsonl_is_refused_without_opening_it() {
    let dir = TempDir::new("adv-fifo");
    let fifo = dir.path().join("samples.jsonl");
    mkfifo(&fifo);
    let err = read_samples(&fifo).unwrap_err().to_string();
    assert!(
        err.contains("FIFO") && err.contains("expected a JSONL file"),
        "{err}"
    );
}

/// `/proc/self/mem` is a regular file whose every read fails (EIO at address 0): the first I/O
/// error must end the read, not be skipped as a bad record forever.
#[cfg(target_os = "linux")]
#[test]
fn an_io_error_mid_read_stops_the_read() {
    let err = read_samples(Path::new("/proc/self/mem")).unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }), "{err}");
    let path = PathBuf::from("/proc/self/mem");
    let items: Vec<_> = within(20, move || {
        firempo_datasets::iter_jsonl::<Sample>(&path)
            .unwrap()
            .take(10)
            .collect::<Vec<_>>()
    });
    assert_eq!(items.len(), 1, "one I/O error, then the end");
}

// Item 9: what a line holds besides one JSON object.

#[test]
fn trailing_data_after_the_object_is_an_error_naming_the_line() {
    let dir = TempDir::new("adv-trailing");
    let path = dir.path().join("samples.jsonl");
    std::fs::write(
        &path,
        format!("{GOOD}\n{GOOD} {GOOD} {GOOD} {GOOD}\n{GOOD}  \n"),
    )
    .unwrap();
    let loaded = read_samples(&path).unwrap();
    assert_eq!(loaded.items.len(), 2, "trailing whitespace is fine");
    assert_eq!(loaded.skipped, 1);
    let err = loaded.problems[0].to_string();
    assert!(
        err.contains("samples.jsonl:2") && err.contains("data after the JSON object"),
        "{err}"
    );
}

#[test]
fn a_bom_does_not_cost_the_first_record() {
    let dir = TempDir::new("adv-bom");
    let path = dir.path().join("samples.jsonl");
    std::fs::write(&path, format!("\u{feff}{GOOD}\n{GOOD}\n")).unwrap();
    let loaded = read_samples(&path).unwrap();
    assert_eq!(
        (loaded.items.len(), loaded.skipped),
        (2, 0),
        "{:?}",
        loaded.problems
    );
}

#[test]
fn invalid_utf8_names_its_line_and_the_rest_still_reads() {
    let dir = TempDir::new("adv-utf8");
    let path = dir.path().join("samples.jsonl");
    let mut bytes = format!("{GOOD}\n\n").into_bytes();
    bytes.extend_from_slice(b"{\"record_id\":\"\xff\xfe\",\"question\":\"q\",\"answer\":\"y\"}\n");
    bytes.extend_from_slice(format!("{GOOD}\n").as_bytes());
    std::fs::write(&path, bytes).unwrap();
    let loaded = read_samples(&path).unwrap();
    assert_eq!((loaded.items.len(), loaded.skipped), (2, 1));
    let err = loaded.problems[0].to_string();
    assert!(
        err.contains("samples.jsonl:3") && err.contains("invalid UTF-8"),
        "{err}"
    );
}

// Item 4: images and masks are decoded within a pixel budget, and only from regular files.

#[test]
fn an_image_above_the_pixel_budget_is_refused_before_decoding() {
    let dir = TempDir::new("adv-budget");
    let path = dir.path().join("a.png");
    save_png(&DynamicImage::new_luma8(64, 64), &path).unwrap();
    let err = load_image_within(&path, 1000).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::ImageSize {
                width: 64,
                height: 64,
                max_pixels: 1000,
                ..
            }
        ),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("a.png") && text.contains("above the budget of 1000 pixels"),
        "{text}"
    );
    assert!(image_dimensions_within(&path, 1000).is_err());
    assert_eq!(image_dimensions_within(&path, 4096).unwrap(), (64, 64));
    assert_eq!(load_image(&path).unwrap().width(), 64, "the default budget");
    assert_eq!(DEFAULT_MAX_IMAGE_PIXELS, 50_000_000);
}

/// `eval` resized a mask to the 100000×100000 its image's header claimed: a 10 GB allocation.
#[test]
fn a_mask_resized_to_a_claimed_100000_square_is_refused() {
    let dir = TempDir::new("adv-mask-huge");
    let path = dir.path().join("mask.png");
    Mask::from_fn(8, 8, |x, _| x < 4).save_png(&path).unwrap();
    let err = Mask::from_png(&path, 100_000, 100_000)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mask.png") && err.contains("100000x100000") && err.contains("budget"),
        "{err}"
    );
    let source = MaskSource::Png {
        path: "mask.png".into(),
    };
    let err = Mask::load(&source, dir.path(), 100_000, 100_000).unwrap_err();
    assert!(matches!(err, DatasetError::ImageSize { .. }), "{err}");
    assert_eq!(Mask::load(&source, dir.path(), 8, 8).unwrap().area(), 32);
}

/// A boxes mask's `width * height` was a `u32` product: 70000² wrapped around.
#[test]
fn a_boxes_mask_past_32_bit_pixel_counts_is_refused() {
    let boxes = MaskSource::Boxes {
        boxes: vec![BoxRegion {
            x: 0.0,
            y: 0.0,
            width: 10.0,
            height: 10.0,
            label: None,
        }],
    };
    let err = Mask::load(&boxes, Path::new("."), 70_000, 70_000).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::ImageSize {
                width: 70_000,
                height: 70_000,
                ..
            }
        ),
        "{err}"
    );
    let err = Mask::load(&boxes, Path::new("."), 0, 10).unwrap_err();
    assert!(matches!(err, DatasetError::ImageSize { .. }), "{err}");
    assert_eq!(
        Mask::load(&boxes, Path::new("."), 20, 20).unwrap().area(),
        100
    );
}

#[test]
fn a_fifo_as_an_image_is_refused_without_opening_it() {
    let dir = TempDir::new("adv-image-fifo");
    let fifo = dir.path().join("image.png");
    mkfifo(&fifo);
    let err = within(20, move || load_image(&fifo).map(|_| ()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("image.png") && err.contains("FIFO") && err.contains("expected an image file"),
        "{err}"
    );
}

// Item 7: pair ids and corrupted-image file names that collided.

/// A closed record `id` whose image, `image` under `root`, is uniformly `level`.
fn closed_record(root: &Path, id: &str, image: &str, level: u8) -> Record {
    let path = root.join(image);
    save_png(
        &DynamicImage::ImageLuma8(GrayImage::from_pixel(16, 16, Luma([level]))),
        &path,
    )
    .unwrap();
    Record {
        id: id.into(),
        image: image.into(),
        question: "Is there a lesion in this image?".into(),
        answer: "yes".into(),
        answer_type: AnswerType::Closed,
        mask: None,
        concept: None,
        split: Split::Train,
        meta: Default::default(),
    }
}

fn answer(record: &Record, text: &str) -> Sample {
    Sample {
        record_id: record.id.clone(),
        question: record.question.clone(),
        answer: text.into(),
        model: None,
        meta: Default::default(),
    }
}

fn pairs_of(root: &Path, out: &Path, samples: &[Sample], records: &[Record]) -> PairReport {
    let options = PairOptions {
        dataset_root: root.to_path_buf(),
        out_dir: out.to_path_buf(),
        corruption: Some(CorruptionConfig::default()),
        previews: false,
        policy: BadRecordPolicy::Skip,
        unreadable_samples: Vec::new(),
    };
    build_pairs(samples, records, &RuleEditor::default(), &options).unwrap()
}

fn mean(image: &DynamicImage) -> f64 {
    let luma = image.to_luma8();
    luma.pixels().map(|p| f64::from(p[0])).sum::<f64>() / luma.len() as f64
}

/// Record `a` sampled twice gave pair `a-1`, as did record `a-1`; ids `x/y` and `x_y` both wrote
/// `corrupted/x_y.png`. Each pair must get its own id and its own record's corrupted image.
#[test]
fn colliding_ids_get_their_own_pairs_and_corrupted_images() {
    let (data, out) = (TempDir::new("adv-ids-data"), TempDir::new("adv-ids-out"));
    let levels = [("a", 30), ("a-1", 100), ("x/y", 170), ("x_y", 240)];
    let records: Vec<Record> = levels
        .iter()
        .enumerate()
        .map(|(i, (id, level))| closed_record(data.path(), id, &format!("{i}.png"), *level))
        .collect();
    let samples: Vec<Sample> = [0, 0, 1, 2, 3]
        .iter()
        .map(|&i| answer(&records[i], "No."))
        .collect();
    let report = pairs_of(data.path(), out.path(), &samples, &records);
    let ids: Vec<&str> = report.pairs.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, ["a", "a-2", "a-1", "x/y", "x_y"]);
    let files: std::collections::HashSet<_> = report
        .pairs
        .iter()
        .map(|p| p.corrupted_image.clone().unwrap())
        .collect();
    assert_eq!(files.len(), 5, "{files:?}");
    assert_eq!(
        std::fs::read_dir(out.path().join("corrupted"))
            .unwrap()
            .count(),
        5
    );
    for pair in &report.pairs {
        let own = levels
            .iter()
            .find(|(id, _)| *id == pair.record_id)
            .unwrap()
            .1;
        let got = mean(&load_image(pair.corrupted_image.as_ref().unwrap()).unwrap());
        let nearest = levels
            .iter()
            .min_by(|x, y| {
                (f64::from(x.1) - got)
                    .abs()
                    .total_cmp(&(f64::from(y.1) - got).abs())
            })
            .unwrap();
        assert_eq!(
            nearest.1, own,
            "pair {} has another image's corruption",
            pair.id
        );
    }
    let loaded = read_pairs_jsonl(&report.pairs_path, BadRecordPolicy::Stop).unwrap();
    assert_eq!(loaded.items, report.pairs);
}

#[test]
fn duplicate_pair_ids_at_load_name_both_lines() {
    let (data, out) = (TempDir::new("adv-dup-data"), TempDir::new("adv-dup-out"));
    let records = vec![
        closed_record(data.path(), "a", "a.png", 50),
        closed_record(data.path(), "b", "b.png", 150),
    ];
    let samples = [answer(&records[0], "No."), answer(&records[1], "No.")];
    let report = pairs_of(data.path(), out.path(), &samples, &records);
    let mut pairs = report.pairs.clone();
    let mut twin = pairs[0].clone();
    twin.record_id = "b".into();
    pairs.push(twin);
    let path = out.path().join("pairs.jsonl");
    write_jsonl(&path, &pairs).unwrap();
    for policy in [BadRecordPolicy::Skip, BadRecordPolicy::Stop] {
        let err = read_pairs_jsonl(&path, policy).unwrap_err();
        assert!(
            matches!(err, DatasetError::DuplicateId { first_line: 1, .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("pairs.jsonl:3") && text.contains("id `a`") && text.contains("line 1"),
            "{text}"
        );
    }
}

// Item 12: pairs that would train with a zero gradient or mark the wrong tokens.

/// A pair `id` choosing `chosen` over `rejected`, with one span each.
fn pair(id: &str, chosen: &str, rejected: &str, spans: [(usize, usize); 2]) -> PreferencePair {
    let span = |(start, end)| PhraseSpan { start, end, id: 1 };
    PreferencePair {
        id: id.into(),
        record_id: id.into(),
        question: "Is there a lesion in this image?".into(),
        answer_type: AnswerType::Closed,
        chosen: chosen.into(),
        rejected: rejected.into(),
        chosen_spans: vec![span(spans[0])],
        rejected_spans: vec![span(spans[1])],
        branch: PairBranch::Corrected,
        editor: "rule".into(),
        image: "img.png".into(),
        corrupted_image: None,
        corruption: None,
        meta: Default::default(),
    }
}

/// Every way a pair can be invalid, with the words its reason must hold.
fn invalid_pairs() -> Vec<(PreferencePair, &'static str)> {
    vec![
        (
            pair("same", "yes", "yes", [(0, 3), (0, 3)]),
            "`chosen` equals `rejected`",
        ),
        (
            pair("outside", "yes", "no", [(0, 9), (0, 2)]),
            "`chosen_spans[0]` 0..9 lies outside `chosen` (3 bytes)",
        ),
        (
            pair("boundary", "yes", "é no", [(0, 3), (0, 1)]),
            "`rejected_spans[0]` 0..1 does not start and end on character boundaries",
        ),
        (
            pair("empty-span", "yes", "no", [(1, 1), (0, 2)]),
            "`chosen_spans[0]` 1..1 is empty",
        ),
        (
            pair("empty-answer", " ", "no", [(0, 1), (0, 2)]),
            "`chosen` is empty",
        ),
    ]
}

#[test]
fn invalid_pairs_are_named_with_their_reason() {
    assert_eq!(pair("ok", "yes", "no", [(0, 3), (0, 2)]).validate(), Ok(()));
    for (bad, reason) in invalid_pairs() {
        let err = bad.validate().unwrap_err();
        assert!(err.contains(reason), "{}: {err}", bad.id);
    }
}

/// At load (what `align` reads), an invalid pair is a bad record naming file, line, id, reason.
#[test]
fn invalid_pairs_at_load_are_bad_records_naming_line_id_and_reason() {
    let dir = TempDir::new("adv-invalid-pairs");
    let path = dir.path().join("pairs.jsonl");
    let good = pair("ok", "yes", "no", [(0, 3), (0, 2)]);
    let cases = invalid_pairs();
    let mut pairs = vec![good.clone()];
    pairs.extend(cases.iter().map(|(p, _)| p.clone()));
    write_jsonl(&path, &pairs).unwrap();
    let loaded = read_pairs_jsonl(&path, BadRecordPolicy::Skip).unwrap();
    assert_eq!(loaded.items, [good]);
    assert_eq!(loaded.skipped, cases.len());
    for (i, ((bad, reason), err)) in cases.iter().zip(&loaded.problems).enumerate() {
        let text = err.to_string();
        let at = format!("pairs.jsonl:{}: pair `{}`", i + 2, bad.id);
        assert!(text.contains(&at) && text.contains(reason), "{text}");
    }
    let err = read_pairs_jsonl(&path, BadRecordPolicy::Stop).unwrap_err();
    assert!(
        matches!(err, DatasetError::Stopped { accepted: 1, .. }),
        "{err}"
    );
}

/// An editor that returns one fixed edit, whatever the sample.
struct Fixed(Edit);

impl Editor for Fixed {
    fn name(&self) -> String {
        "fixed".into()
    }

    fn edit(&self, _: &Sample, _: &Record) -> Result<Edit, DatasetError> {
        Ok(self.0.clone())
    }
}

/// `pairs` lists a sample whose edit is invalid in `pair_failures.jsonl` with the reason, and
/// writes no pair and no corrupted image for it.
#[test]
fn invalid_edits_go_to_the_failures_file_with_the_reason() {
    let (data, out) = (
        TempDir::new("adv-bad-edit-data"),
        TempDir::new("adv-bad-edit-out"),
    );
    let records = vec![closed_record(data.path(), "r", "r.png", 90)];
    let samples = [answer(&records[0], "No.")];
    let editor = Fixed(Edit {
        chosen: "Yes.".into(),
        rejected: "No.".into(),
        chosen_spans: vec![PhraseSpan {
            start: 0,
            end: 40,
            id: 1,
        }],
        rejected_spans: vec![PhraseSpan {
            start: 0,
            end: 2,
            id: 1,
        }],
        branch: PairBranch::Corrected,
    });
    let options = PairOptions {
        dataset_root: data.path().to_path_buf(),
        out_dir: out.path().to_path_buf(),
        corruption: Some(CorruptionConfig::default()),
        previews: false,
        policy: BadRecordPolicy::Skip,
        unreadable_samples: Vec::new(),
    };
    let report = build_pairs(&samples, &records, &editor, &options).unwrap();
    assert_eq!((report.pairs.len(), report.skipped), (0, 1));
    let failures = read_jsonl::<PairFailure>(
        &out.path().join("pair_failures.jsonl"),
        BadRecordPolicy::Stop,
    )
    .unwrap()
    .items;
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].record_id, "r");
    assert!(
        failures[0].error.contains("invalid pair")
            && failures[0]
                .error
                .contains("`chosen_spans[0]` 0..40 lies outside `chosen`"),
        "{}",
        failures[0].error
    );
    assert!(
        !out.path().join("corrupted").exists(),
        "no image for a failed pair"
    );
}
